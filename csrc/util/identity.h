/* identity.h - who this process is, in a way that cannot repeat on a node.
 *
 * PIDs repeat across PID namespaces (two containers of one pod sharing
 * /dev/shm are both PID 1), so jaxmg never tells processes apart by PID.
 * Each process draws a random 64-bit token once (the first call, and again
 * in a forked child); "is this party in my process" compares tokens. The
 * PID is kept beside it only for what needs a real PID of this namespace
 * (pidfd_getfd on the GPU path), and is checked before use.
 */
#ifndef JAXMG_IDENTITY_H
#define JAXMG_IDENTITY_H

#include <stdint.h>

/* This process's token: non-zero, random, stable for the process's life. */
uint64_t jmg_process_token(void);

#endif
