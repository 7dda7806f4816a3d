/* shm_seg.c - see shm_seg.h. */
#define _POSIX_C_SOURCE 200809L

#include "rendezvous/shm_seg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "util/identity.h"

static const double MiB = 1024.0 * 1024.0;

static void room_error(const char* name, uint64_t bytes, int code, char* err, size_t errlen) {
  struct statvfs vs;
  char have[128] = "";
  if (statvfs(JMG_SHM_DIR, &vs) == 0)
    snprintf(have, sizeof have, "; %.1f MiB free of %.1f MiB",
             (double)vs.f_bavail * (double)vs.f_frsize / MiB,
             (double)vs.f_blocks * (double)vs.f_frsize / MiB);
  snprintf(err, errlen,
           "not enough room in %s for shared memory %s: it needs %llu bytes (%.1f MiB)%s (%s). "
           "Give the job a larger %s (docker run --shm-size=..., a Kubernetes emptyDir with "
           "medium: Memory), or use fewer processes per node",
           JMG_SHM_DIR, name, (unsigned long long)bytes, (double)bytes / MiB, have,
           strerror(code), JMG_SHM_DIR);
}

int jmg_seg_create(const char* name, uint64_t bytes, int* fd, char* err, size_t errlen) {
  *fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (*fd < 0 && errno == EEXIST) return JMG_SEG_EXISTS;
  if (*fd < 0) {
    snprintf(err, errlen, "cannot create shared memory %s in %s: %s", name, JMG_SHM_DIR,
             strerror(errno));
    return JMG_SEG_FAIL;
  }
  /* The umask may have narrowed the mode; openers insist on 0600. */
  int rc = fchmod(*fd, 0600) ? errno : 0;
  if (!rc && bytes > (uint64_t)INT64_MAX) rc = EFBIG;
  /* Reserves every page now: writing into a sparse tmpfs file that has run
   * out of room raises SIGBUS, which nobody could report. */
  if (!rc) rc = posix_fallocate(*fd, 0, (off_t)bytes);
  if (rc) {
    if (rc == ENOSPC || rc == EFBIG || rc == ENOMEM)
      room_error(name, bytes, rc, err, errlen);
    else
      snprintf(err, errlen, "cannot reserve %llu bytes of shared memory %s in %s: %s",
               (unsigned long long)bytes, name, JMG_SHM_DIR, strerror(rc));
    close(*fd);
    *fd = -1;
    shm_unlink(name); /* ours: we just made it with O_EXCL */
    return JMG_SEG_FAIL;
  }
  return JMG_SEG_OK;
}

int jmg_seg_ours(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
         (st.st_mode & 07777) == 0600;
}

int jmg_seg_open(const char* name, uint64_t bytes, int rdonly, int* fd, char* err,
                 size_t errlen) {
  *fd = shm_open(name, rdonly ? O_RDONLY : O_RDWR, 0);
  if (*fd < 0) {
    int e = errno;
    snprintf(err, errlen, "cannot open shared memory %s in %s: %s", name, JMG_SHM_DIR,
             strerror(e));
    errno = e;
    return JMG_SEG_FAIL;
  }
  struct stat st;
  const char* why = NULL;
  if (fstat(*fd, &st) || !S_ISREG(st.st_mode)) why = "is not a plain file";
  else if (st.st_uid != geteuid() || (st.st_mode & 07777) != 0600) why = "";
  else if (bytes && (uint64_t)st.st_size != bytes) why = "has the wrong size";
  if (!why) return JMG_SEG_OK;
  if (*why)
    snprintf(err, errlen, "refusing shared memory %s%s: it %s (%lld bytes, %llu expected)",
             JMG_SHM_DIR, name, why, (long long)st.st_size, (unsigned long long)bytes);
  else
    snprintf(err, errlen,
             "refusing shared memory %s%s: it belongs to uid %d with mode %03o, and jaxmg only "
             "uses segments of its own user (uid %d) with mode 600: another user's or a "
             "tampered segment",
             JMG_SHM_DIR, name, (int)st.st_uid, (unsigned)(st.st_mode & 07777), (int)geteuid());
  close(*fd);
  *fd = -1;
  errno = EACCES;
  return JMG_SEG_FAIL;
}

void jmg_seg_unlink_ours(const char* name) {
  char path[256];
  struct stat st;
  snprintf(path, sizeof path, "%s%s", JMG_SHM_DIR, name);
  if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid()) shm_unlink(name);
}
