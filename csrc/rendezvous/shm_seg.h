/* shm_seg.h - making and opening jaxmg's POSIX shared memory segments so
 * that nothing in them is taken on trust and nothing runs out of room
 * halfway.
 *
 *  - A segment is made with O_EXCL, mode 0600, and its bytes are reserved
 *    (posix_fallocate) before anyone writes: a /dev/shm too small for it is
 *    an error naming the bytes and the folder, never a SIGBUS on first touch.
 *    A name that exists already is reported, never unlinked: it may be
 *    another job's live segment.
 *  - A segment is opened only if it is a plain file of this user with mode
 *    0600 and the size the caller expects; anything else is refused with a
 *    message saying whose it is.
 */
#ifndef JAXMG_SHM_SEG_H
#define JAXMG_SHM_SEG_H

#include <stddef.h>
#include <stdint.h>

enum { JMG_SEG_OK = 0, JMG_SEG_FAIL = -1, JMG_SEG_EXISTS = -2 };

/* Creates `name` ("/..." as for shm_open) with `bytes` reserved; *fd open
 * read-write. JMG_SEG_EXISTS (err untouched) if the name is taken. */
int jmg_seg_create(const char* name, uint64_t bytes, int* fd, char* err, size_t errlen);

/* Opens `name` read-write (read-only if rdonly) after the checks above;
 * size must be exactly `bytes` (0: any). JMG_SEG_FAIL with err set, with
 * errno ENOENT kept when the name does not exist. */
int jmg_seg_open(const char* name, uint64_t bytes, int rdonly, int* fd, char* err, size_t errlen);

/* Whether fd is a plain file of this user with mode 0600 (size unchecked). */
int jmg_seg_ours(int fd);

/* Removes `name` if it is a file of this user (never another's). */
void jmg_seg_unlink_ours(const char* name);

#endif
