/* fake_xla.h - the part of an XLA runtime the op handler's tests need:
 * errors it can create and the tests read and free. */
#ifndef JAXMG_TEST_FAKE_XLA_H
#define JAXMG_TEST_FAKE_XLA_H

#include <stdlib.h>
#include <string.h>

#include "xla/ffi/api/c_api.h"

struct XLA_FFI_Error {
  char* msg;
};
struct XLA_FFI_ExecutionContext {
  int tag;
};

static XLA_FFI_Error* fake_error_create(XLA_FFI_Error_Create_Args* a) {
  XLA_FFI_Error* e = malloc(sizeof *e);
  e->msg = strdup(a->message);
  return e;
}

static void fake_error_destroy(XLA_FFI_Error_Destroy_Args* a) {
  free(a->error->msg);
  free(a->error);
}

#endif
