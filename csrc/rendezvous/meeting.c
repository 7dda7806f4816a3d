/* meeting.c - routes a meeting to the thread or the shared-memory rendezvous. */
#include "rendezvous/meeting.h"

#include <string.h>

#include "rendezvous/exchange.h"

int jmg_meeting_join_n(const char* shm_name, size_t name_len, int expected,
                       const jmg_meet_key* key, int nparties, int rank, double timeout_s,
                       jmg_meeting* out, char* err, size_t errlen) {
  char name[JMG_SHM_NAME_MAX];
  memset(out, 0, sizeof *out);
  if (!shm_name || !name_len) return jmg_meet_join(key, nparties, rank, &out->thr, err, errlen);
  if (name_len >= sizeof name || memchr(shm_name, '\0', name_len)) {
    jmg_put(err, errlen,
            "jaxmg rendezvous: the meet name is %zu bytes long; it must be 1 to %d bytes "
            "without NUL",
            name_len, JMG_SHM_NAME_MAX - 1);
    return JMG_MEET_EINVAL;
  }
  memcpy(name, shm_name, name_len);
  name[name_len] = '\0';
  return jmg_shm_join(name, expected, key, nparties, rank, timeout_s, &out->shm, err, errlen);
}

int jmg_meeting_join(const char* shm_name, int expected, const jmg_meet_key* key, int nparties,
                     int rank, double timeout_s, jmg_meeting* out, char* err, size_t errlen) {
  size_t len = shm_name ? strlen(shm_name) : 0;
  return jmg_meeting_join_n(shm_name, len, expected, key, nparties, rank, timeout_s, out, err,
                            errlen);
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
