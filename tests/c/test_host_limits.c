/* test_host_limits.c - the host engine refuses, before allocating
 * anything, problems whose LAPACK workspace sizes overflow LAPACK's int
 * (issue 14: syevd at padded N >= 32767 overflowed lwork), and accepts
 * those just below. */
#include <string.h>

#include "check.h"
#include "engines/host_ops.h"

static int ws(jmg_op op, jmg_dtype t, int64_t m, int64_t n, int jobz, int64_t a0, int64_t a1,
              char* err) {
  jmg_party parties[1];
  memset(parties, 0, sizeof parties);
  jmg_job job;
  memset(&job, 0, sizeof job);
  job.op = op;
  job.dtype = t;
  job.nparties = 1;
  job.m = m;
  job.mpad = m;
  job.n = n;
  job.nloc = m;
  job.tile = m;
  job.jobz = jobz;
  job.attr[0] = a0;
  job.attr[1] = a1;
  job.attr[2] = m;
  job.parties = parties;
  int64_t bytes[1] = {-1};
  err[0] = '\0';
  int rc = op == JMG_SYEVD ? jmg_host_syevd_workspace(&job, bytes, err)
                           : jmg_host_general_workspace(&job, bytes, err);
  CHECK(bytes[0] == 0, "the host engine asks for no device workspace");
  return rc;
}

int main(void) {
  char err[JMG_ERRLEN];
  /* syevd with vectors: lwork = 1 + 6N + 2N^2 passes INT_MAX at 32767. */
  CHECK(ws(JMG_SYEVD, JMG_F64, 32766, 32766, 1, 0, 0, err) == 0, "%s", err);
  CHECK(ws(JMG_SYEVD, JMG_F64, 32767, 32767, 1, 0, 0, err) != 0, "N = 32767 must be refused");
  CHECK(strstr(err, "32-bit") && strstr(err, "lwork"), "a clear message: %s", err);
  /* heevd: lrwork = 1 + 5N + 2N^2, the same bound. */
  CHECK(ws(JMG_SYEVD, JMG_C128, 32767, 32767, 1, 0, 0, err) != 0, "complex N = 32767");
  /* eigenvalues only need O(N) workspace, but N^2 elements still overflow
   * LAPACK's int at 46341. */
  CHECK(ws(JMG_SYEVD, JMG_F32, 40000, 40000, 0, 0, 0, err) == 0, "%s", err);
  CHECK(ws(JMG_SYEVD, JMG_F32, 46341, 46341, 0, 0, 0, err) != 0, "n * n overflows");
  /* gesdd with vectors (real): 4 k^2 + 7 k + 3 k > INT_MAX from k = 23170. */
  CHECK(ws(JMG_GESVD, JMG_F64, 30000, 23000, 0, 23000, 23000, err) == 0, "%s", err);
  CHECK(ws(JMG_GESVD, JMG_F64, 30000, 23200, 0, 23200, 23200, err) != 0, "gesdd lwork");
  CHECK(strstr(err, "gesdd"), "%s", err);
  CHECK(ws(JMG_GESVD, JMG_F64, 30000, 23200, 0, 0, 0, err) == 0, "values only: %s", err);
  CHECK(ws(JMG_POLAR, JMG_C64, 30000, 30000, 0, 30000, 0, err) != 0, "polar's SVD");
  /* U and Vh sizes that do not fit the matrix. */
  CHECK(ws(JMG_GESVD, JMG_F64, 10, 4, 0, 5, 4, err) != 0, "U with 5 columns");
  CHECK(ws(JMG_GESVD, JMG_F64, 10, 4, 0, 10, 4, err) == 0, "full U: %s", err);
  CHECK(ws(JMG_GESVD, JMG_F64, 10, 4, 0, 4, 0, err) == 0, "reduced U alone: %s", err);
  /* rows beyond LAPACK's int */
  CHECK(ws(JMG_QR, JMG_F64, INT64_C(3000000000), 10, 0, 0, 0, err) != 0, "m > INT_MAX");
  return CHECK_DONE("host_limits");
}
