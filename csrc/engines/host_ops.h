/* host_ops.h - the host engine's op functions (engine.h, jmg_engine_op)
 * and the helpers they share. Internal to the host engine. */
#ifndef JAXMG_HOST_OPS_H
#define JAXMG_HOST_OPS_H

#include "engines/engine.h"

/* The symmetric/Hermitian ops (host_sym.c), on the assembled matrix. */
int jmg_host_potrs(jmg_job* job, jmg_result* res, char* err);
int jmg_host_potri(jmg_job* job, jmg_result* res, char* err);
int jmg_host_syevd_workspace(const jmg_job* job, int64_t* bytes, char* err);
int jmg_host_syevd(jmg_job* job, jmg_result* res, char* err);
/* LAPACK's documented workspace sizes (elements) for syevd/heevd of order
 * job->n with job->jobz; sygvd/hegvd need the same. */
void jmg_host_evd_sizes(const jmg_job* job, int64_t* lwork, int64_t* lrwork, int64_t* liwork);
/* The generalized eigenproblem (host_sygvd.c), on the gathered A and B;
 * its workspace step is syevd's (the same LAPACK sizes). */
int jmg_host_sygvd(jmg_job* job, jmg_result* res, char* err);
/* Factor reuse (host_sym.c): the factor stays in A's shards. */
int jmg_host_chol_factor(jmg_job* job, jmg_result* res, char* err);
int jmg_host_chol_solve(jmg_job* job, jmg_result* res, char* err);
int jmg_host_chol_inverse(jmg_job* job, jmg_result* res, char* err);

/* The general ops (host_general.c), on the gathered matrix. */
int jmg_host_general_workspace(const jmg_job* job, int64_t* bytes, char* err);
int jmg_host_lu_solve(jmg_job* job, jmg_result* res, char* err);
int jmg_host_lstsq(jmg_job* job, jmg_result* res, char* err);
int jmg_host_qr(jmg_job* job, jmg_result* res, char* err);
int jmg_host_gesvd(jmg_job* job, jmg_result* res, char* err);
int jmg_host_polar(jmg_job* job, jmg_result* res, char* err);

/* ---- helpers (host_engine.c) ---- */

/* count elements of type t at p set to NaN (both parts if complex). */
void jmg_host_fill_nan(jmg_dtype t, void* p, int64_t count);

/* Copies src (bytes) into slot `slot` of every party but where it is src. */
void jmg_host_broadcast(const jmg_job* job, int slot, const void* src, size_t bytes);

/* E = A^T (n x mpad, column-major: the first m columns are A's rows, the
 * rest padding), the parties' shards side by side, in a fresh malloc'd
 * buffer; NULL (message in err) when out of memory. Right for shards that
 * hold nloc of A's rows each (the general ops; the square ones when
 * jmg_job_lrows(job) == nloc, as the Python layer sends them here). */
char* jmg_host_gather(const jmg_job* job, char* err);
/* The same for the shards in slot `slot` (shaped like A's). */
char* jmg_host_gather_slot(const jmg_job* job, int slot, char* err);

/* Writes the rows x m column-major matrix src (leading dimension ld) into
 * slot `slot` of the parties: party r gets columns [r nloc, (r+1) nloc),
 * zeros for the pad columns past m. */
void jmg_host_scatter(const jmg_job* job, int slot, const char* src, int64_t rows, int64_t ld);

/* A itself (m x n, column-major, leading dimension m) in a, from the
 * parties' row shards in slot 0: each shard, read column-major, is a block
 * of A^T, transposed straight into its rows of a (no gathered copy of A^T),
 * in cache blocks. */
void jmg_host_gather_a(const jmg_job* job, char* a);
/* The inverse: each party's slot 0 (n x nloc, column-major) from its rows
 * of a, zero in the padding after A's rows. */
void jmg_host_scatter_a(const jmg_job* job, const char* a);

/* 0 if v fits LAPACK's int, else -1 with a message naming `what`. */
int jmg_host_fits_int(int64_t v, const char* what, const jmg_job* job, char* err);

/* malloc of count elements of size es each, checked for overflow. */
void* jmg_host_alloc(int64_t count, size_t es);

#endif
