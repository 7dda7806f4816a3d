/* meeting.h - one front for the two ways the parties of an op meet: threads
 * of one process (meet.h) or processes of one node (meet_shm.h).
 *
 * The ops layer picks the way once per call from its `meet` attribute and
 * then talks to a jmg_meeting only, so the op's protocol is written once.
 */
#ifndef JAXMG_MEETING_H
#define JAXMG_MEETING_H

#include <stddef.h>

#include "rendezvous/meet.h"
#include "rendezvous/meet_shm.h"

typedef struct jmg_meeting {
  jmg_meet* thr;     /* threads of this process, or */
  jmg_shm_meet* shm; /* processes of this node */
} jmg_meeting;

/* shm_name NULL or "": threads (the key's run id counts); else the segment
 * of the job on this node, `expected` processes attaching (0: unknown). A
 * name that does not fit JMG_SHM_NAME_MAX is an error (JMG_MEET_EINVAL),
 * never a quiet fall-back to threads. */
int jmg_meeting_join(const char* shm_name, int expected, const jmg_meet_key* key, int nparties,
                     int rank, double timeout_s, jmg_meeting* out, char* err, size_t errlen);

/* The same for a name of name_len bytes, not NUL-terminated (the FFI
 * attribute as it comes): name_len 0 means threads. */
int jmg_meeting_join_n(const char* shm_name, size_t name_len, int expected,
                       const jmg_meet_key* key, int nparties, int rank, double timeout_s,
                       jmg_meeting* out, char* err, size_t errlen);
int jmg_meeting_exchange(jmg_meeting* m, const void* mine, size_t size, void* all,
                         const char* failure, double timeout_s, char* err, size_t errlen);
void jmg_meeting_leave(jmg_meeting* m);

#endif
