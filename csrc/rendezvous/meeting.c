/* meeting.c - routes a meeting to the thread or the shared-memory rendezvous. */
#include "rendezvous/meeting.h"

#include <string.h>

int jmg_meeting_join(const char* shm_name, int expected, const jmg_meet_key* key, int nparties,
                     int rank, double timeout_s, jmg_meeting* out, char* err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (shm_name && shm_name[0])
    return jmg_shm_join(shm_name, expected, key, nparties, rank, timeout_s, &out->shm, err,
                        errlen);
  return jmg_meet_join(key, nparties, rank, &out->thr, err, errlen);
}

int jmg_meeting_exchange(jmg_meeting* m, const void* mine, size_t size, void* all,
                         const char* failure, double timeout_s, char* err, size_t errlen) {
  if (m->shm) return jmg_shm_exchange(m->shm, mine, size, all, failure, timeout_s, err, errlen);
  return jmg_meet_exchange(m->thr, mine, size, all, failure, timeout_s, err, errlen);
}

void jmg_meeting_leave(jmg_meeting* m) {
  if (m->shm) jmg_shm_leave(m->shm);
  else jmg_meet_leave(m->thr);
  m->shm = NULL;
  m->thr = NULL;
}
