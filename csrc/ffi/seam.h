/* seam.h - the one place that reads an XLA FFI call frame.
 *
 * Every jaxmg handler goes through these helpers: they answer XLA's
 * registration-time metadata query, fetch buffers and attributes with their
 * types checked, reach the platform context (stream, device ordinal, run id,
 * scratch memory) and build errors. Nothing here keeps state between calls:
 * handlers run concurrently, one thread per device, and the API table
 * differs between the CPU and the GPU runtime, so everything goes through
 * the call frame's own `api`.
 */
#ifndef JAXMG_SEAM_H
#define JAXMG_SEAM_H

#include <stddef.h>
#include <stdint.h>

#include "xla/ffi/api/c_api.h"

/* If this call is the registration-time metadata query, answers it (the API
 * version of the header we were built with, `traits`) and returns 1; the
 * handler must then return NULL at once: args and ctx are empty. */
int jmg_ffi_answer_metadata(XLA_FFI_CallFrame* cf, uint32_t traits);

/* An XLA error with a printf-style message (copied by XLA). */
XLA_FFI_Error* jmg_ffi_error(const XLA_FFI_CallFrame* cf, XLA_FFI_Error_Code code,
                             const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Argument / result i as a buffer, or NULL if it is missing or not a
 * buffer. */
XLA_FFI_Buffer* jmg_ffi_arg(const XLA_FFI_CallFrame* cf, int64_t i);
XLA_FFI_Buffer* jmg_ffi_ret(const XLA_FFI_CallFrame* cf, int64_t i);

/* Bytes per element of an XLA dtype, 0 for types jaxmg never handles. */
size_t jmg_ffi_dtype_size(XLA_FFI_DataType t);
const char* jmg_ffi_dtype_name(XLA_FFI_DataType t);

/* Elements of a buffer (product of dims); -1 on overflow. */
int64_t jmg_ffi_numel(const XLA_FFI_Buffer* b);

/* Attributes by name. An integer attribute of any integer dtype is widened
 * to int64. Return 0 on success, -1 if absent or of another kind. */
int jmg_ffi_attr_int(const XLA_FFI_CallFrame* cf, const char* name, int64_t* out);
int jmg_ffi_attr_str(const XLA_FFI_CallFrame* cf, const char* name, const char** ptr,
                     size_t* len);

/* Platform context. Each returns NULL on success or the XLA error (owned by
 * the caller, who returns it from the handler). */
XLA_FFI_Error* jmg_ffi_stream(const XLA_FFI_CallFrame* cf, void** stream);
XLA_FFI_Error* jmg_ffi_device_ordinal(const XLA_FFI_CallFrame* cf, int32_t* ordinal);
XLA_FFI_Error* jmg_ffi_run_id(const XLA_FFI_CallFrame* cf, int64_t* run_id);
XLA_FFI_Error* jmg_ffi_alloc(const XLA_FFI_CallFrame* cf, size_t size, void** data);
XLA_FFI_Error* jmg_ffi_free(const XLA_FFI_CallFrame* cf, size_t size, void* data);

/* Destroys an error received from an API call (when it is not returned). */
void jmg_ffi_drop(const XLA_FFI_CallFrame* cf, XLA_FFI_Error* e);

#endif
