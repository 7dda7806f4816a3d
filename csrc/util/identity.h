/* identity.h - who this process is, in a way that cannot repeat on a node,
 * and whether another process is still alive, across PID namespaces.
 *
 * PIDs repeat across PID namespaces (two containers of one pod sharing
 * /dev/shm are both PID 1), so jaxmg never tells processes apart by PID.
 * Each process draws a random 64-bit token once (the first call, and again
 * in a forked child); "is this party in my process" compares tokens.
 *
 * Liveness: before a process names anything in the shared folder it makes
 * its "life file" JMG_SHM_DIR/jaxmg-life.<token> (mode 0600) and holds an
 * open-file-description lock on it for as long as it lives. The kernel
 * drops the lock when the process dies, however it dies, so any process of
 * the node that can see the folder tells a dead owner by the lock being
 * free, whatever the PID namespaces. The file also records the owner's PID
 * and PID namespace, for the one thing that needs a real PID (pidfd_getfd
 * on the GPU path), which jmg_token_pid checks before anyone uses it.
 * Every other name jaxmg makes carries its owner's token (or, for the
 * node's rendezvous segment, the tokens of its processes), so the
 * survivors can remove what a dead process left.
 */
#ifndef JAXMG_IDENTITY_H
#define JAXMG_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

/* The folder POSIX shared memory lives in (glibc's shm_open). */
#define JMG_SHM_DIR "/dev/shm"

/* This process's token: non-zero, random, stable for the process's life. */
uint64_t jmg_process_token(void);

/* 64 random bits (the kernel's; never 0), for names nobody can predict. */
uint64_t jmg_random64(void);

/* Makes sure this process's life file exists and is locked. Must succeed
 * before the process creates any shared name. 0, or -1 with err set. */
int jmg_identity_live(char* err, size_t errlen);

/* Whether the process with `token` lives: 1 alive, 0 dead (its life file
 * missing or unlocked), -1 cannot tell (the file is not ours: another
 * user's, or not a plain file). Never blocks. */
int jmg_token_alive(uint64_t token);

/* Waits up to wait_s seconds for `token`'s process to be dead (a killed
 * process drops its lock a moment after its other resources); 1 if dead. */
int jmg_token_wait_dead(uint64_t token, double wait_s);

/* Checks that `pid` is, in this PID namespace, the live process with
 * `token`, running as this user: what the GPU path must know before it
 * grants ptrace to a PID or takes a descriptor from it. 0, or -1 with a
 * message in err. Call it again after pidfd_open(pid) to rule out a PID
 * reused in between (a live owner keeps its PID). */
int jmg_token_pid(uint64_t token, int32_t pid, char* err, size_t errlen);

/* "jaxmg-life.<16 hex digits>" and friends: the token as 16 hex digits. */
void jmg_token_hex(uint64_t token, char out[17]);

/* Parses 16 hex digits at s (no more, no fewer before a '.' or the end);
 * 0 on success. */
int jmg_token_parse(const char* s, uint64_t* token);

/* Test hook: JAXMG_TEST_KILL_AT=<point> makes the process SIGKILL itself
 * when it reaches that point: "attach" (a call of the shared-memory
 * rendezvous, before it joins: the rank never arrives), "join" (just
 * joined), "exchange<k>" (entering the k-th exchange of the meeting),
 * "shared" (host engine: shard segment made, not yet published), "opened"
 * (host leader: every shard mapped). Read at each point, so a test may set
 * it between calls. For the tests that crash a call at each phase. */
void jmg_test_point(const char* point);

/* The same for a numbered point: "<point><n>" (exchange0, exchange1...). */
void jmg_test_point_n(const char* point, long n);

#endif
