/* meet_shm.h - the rendezvous of meet.h across the processes of one node.
 *
 * Same contract as meet.h (join, exchange = barrier + all-gather, leave;
 * timeout; the first failure fails every party), but the meetings live in a
 * POSIX shared memory segment, so the parties may sit in different
 * processes (one per device, after jax.distributed.initialize) as well as
 * on different threads of one process.
 *
 * The segment is named by the caller. The name must be unique to the job
 * and agreed by all its processes on the node (the Python layer derives it
 * from a random nonce that process 0 publishes through jax.distributed's
 * key-value store), so two jobs on one host never share a segment, and a
 * segment left behind by a dead job can never be mistaken for a live one.
 * Processes are told apart by their token (util/identity.h), never by PID,
 * so processes in different PID namespaces sharing /dev/shm meet safely.
 *
 * Differences from meet.h:
 *  - a party that dies (its process killed) while in a meeting is noticed by
 *    the others within JMG_SHM_PROBE_S, even in an exchange without a time
 *    limit: each party holds a robust process-shared mutex from join to
 *    leave, and the kernel hands it over as "owner died" when the holder
 *    dies. The meeting then fails with JMG_MEET_EPEER.
 *  - the run id of the key is ignored: launches of one program are not
 *    known to carry the same run id in every process. The k-th call of a
 *    rank at a site (and group) meets the k-th call of every other rank,
 *    counted over the life of the process.
 */
#ifndef JAXMG_MEET_SHM_H
#define JAXMG_MEET_SHM_H

#include <stddef.h>

#include "rendezvous/meet.h"

#define JMG_SHM_NAME_MAX 96 /* bytes of a segment name, NUL included */
#define JMG_SHM_SLOTS 32    /* meetings that may be open at once on a node */
#define JMG_SHM_PROBE_S 0.05

typedef struct jmg_shm_meet jmg_shm_meet;

/* Joins the meeting for `key` in the segment `name` ("/jaxmg....", under
 * JMG_SHM_NAME_MAX bytes), as `rank` of `nparties`. The first join of a
 * process attaches it to the segment, creating it if it is the first
 * process; an existing segment must be this user's with mode 0600, else
 * the join fails saying whose it is. `expected` is how many processes will
 * attach (0: unknown): once all have, the name is unlinked at once, so even
 * a job that is killed leaves nothing behind. Otherwise the last process
 * to exit normally unlinks it, or the sweep once all its processes are
 * dead. timeout_s is unused (a segment appears complete or not at all). */
int jmg_shm_join(const char* name, int expected, const jmg_meet_key* key, int nparties, int rank,
                 double timeout_s, jmg_shm_meet** out, char* err, size_t errlen);

/* As jmg_meet_exchange. */
int jmg_shm_exchange(jmg_shm_meet* m, const void* mine, size_t size, void* all,
                     const char* failure, double timeout_s, char* err, size_t errlen);

/* As jmg_meet_leave. */
void jmg_shm_leave(jmg_shm_meet* m);

/* Removes what dead processes of this user left in /dev/shm (their life
 * files, shard segments and rendezvous segments), whatever its age. Runs
 * by itself at a process's first join and after a meeting that failed
 * because a party died or never came. */
void jmg_shm_sweep(void);

/* Detaches this process from every segment it attached (the mappings stay
 * until exit); the last live process out unlinks the name. Runs at normal
 * exit by itself (atexit); tests call it to simulate an exit. */
void jmg_shm_detach_all(void);

#endif
