/* solvers.h - the GPU engine's two ways to run an op, both called by the
 * leader with the context locked:
 *
 *   mg_solve_*  cuSolverMg over every device of the group, the matrix moved
 *               in place into its block-cyclic layout (mg_solve.c);
 *   dn_solve_*  cuSOLVER on the group's first device: gather, solve,
 *               scatter (dn_solve.c).
 *
 * *_workspace fills bytes[r], the workspace rank r must bring. */
#ifndef JAXMG_SOLVERS_H
#define JAXMG_SOLVERS_H

#include "engines/cuda/mg_context.h"

int mg_solve_workspace(const jmg_job* job, mg_context* ctx, int64_t* bytes, char* err);
int mg_solve_run(jmg_job* job, mg_context* ctx, int32_t* info, char* err);

int dn_solve_workspace(const jmg_job* job, mg_context* ctx, int64_t* bytes, char* err);
int dn_solve_run(jmg_job* job, mg_context* ctx, int32_t* info, char* err);

#endif
