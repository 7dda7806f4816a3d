/* check.h - the smallest test harness: CHECK records a failure and goes on;
 * CHECK_DONE prints a summary line and gives main's exit status. */
#ifndef JAXMG_CHECK_H
#define JAXMG_CHECK_H

#include <stdio.h>

static long check_passed_, check_failed_;

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (cond) {                                                            \
      check_passed_++;                                                     \
    } else {                                                               \
      check_failed_++;                                                     \
      if (check_failed_ <= 20) {                                           \
        fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__,   \
                #cond);                                                    \
        fprintf(stderr, __VA_ARGS__);                                      \
        fputc('\n', stderr);                                               \
      }                                                                    \
    }                                                                      \
  } while (0)

#define CHECK_DONE(name)                                                   \
  (printf("%s: %ld checks passed, %ld failed\n", (name), check_passed_,    \
          check_failed_),                                                  \
   check_failed_ ? 1 : 0)

#endif
