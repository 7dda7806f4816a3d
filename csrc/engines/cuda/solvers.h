/* solvers.h - the GPU engine's two ways to run an op, both called by the
 * leader with the context locked, each a table with one row per op
 * (jmg_op; an op without a solver has run == NULL):
 *
 *   mg_solvers  cuSolverMg over every device of the group, the matrix
 *               moved in place into its block-cyclic layout (mg_solve.c,
 *               mg_getrs.c);
 *   dn_solvers  cuSOLVER on the group's first device: gather, solve,
 *               scatter (dn_solve.c, dn_general.c).
 *
 * workspace fills bytes[r], the workspace rank r must bring. */
#ifndef JAXMG_SOLVERS_H
#define JAXMG_SOLVERS_H

#include "engines/cuda/mg_context.h"

typedef struct gpu_solver {
  int (*workspace)(const jmg_job* job, mg_context* ctx, int64_t* bytes, char* err);
  int (*run)(jmg_job* job, mg_context* ctx, jmg_result* res, char* err);
} gpu_solver;

extern const gpu_solver mg_solvers[JMG_NOPS];
extern const gpu_solver dn_solvers[JMG_NOPS];

/* Moves A (slot 0 of every party) between the caller's layout and
 * cuSolverMg's block-cyclic one, in place, staging in the heads of the
 * workspaces (mg_solve.c). */
int mg_move_layout(const jmg_job* job, mg_context* ctx, int to_cyclic, char* err);

/* lu_solve on every GPU: cuSolverMg getrf/getrs (mg_getrs.c). */
int mg_getrs_workspace(const jmg_job* job, mg_context* ctx, int64_t* bytes, char* err);
int mg_getrs_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err);

/* The general ops on one GPU (dn_general.c), one workspace query for all. */
int dn_general_workspace(const jmg_job* job, mg_context* ctx, int64_t* bytes, char* err);
int dn_lu_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err);
int dn_lstsq_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err);
int dn_qr_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err);
int dn_gesvd_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err);
int dn_polar_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err);
/* The generalized eigenproblem on one GPU (dn_general.c): cuSolverMg has
 * no sygvd, so this is its only GPU solver; the first GPU holds A, B (two
 * n x n matrices), n eigenvalues and cuSOLVER's workspace (about n^2
 * more), and n and that workspace must fit cuSOLVER's int. */
int dn_sygvd_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err);

#endif
