/* seam.c - reading XLA FFI call frames from plain C. See seam.h. */
#include "ffi/seam.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The common head of every extension struct. The header renamed the type
 * (XLA_FFI_Extension_Base, later XLA_FFI_InternalExtension) but never its
 * layout, so we walk the chain through our own copy of it. */
typedef struct ext_head {
  size_t struct_size;
  int type;
  struct ext_head* next;
} ext_head;

int jmg_ffi_answer_metadata(XLA_FFI_CallFrame* cf, uint32_t traits) {
  for (ext_head* e = (ext_head*)(void*)cf->extension_start; e; e = e->next) {
    if (e->type != XLA_FFI_Extension_Metadata) continue;
    XLA_FFI_Metadata* m = ((XLA_FFI_Metadata_Extension*)(void*)e)->metadata;
    m->api_version.struct_size = XLA_FFI_Api_Version_STRUCT_SIZE;
    m->api_version.extension_start = NULL;
    m->api_version.major_version = XLA_FFI_API_MAJOR;
    m->api_version.minor_version = XLA_FFI_API_MINOR;
    m->traits = traits;
    return 1;
  }
  return 0;
}

/* An API slot exists only if the runtime's table is long enough to hold it:
 * older runtimes have shorter tables. */
#define HAS_SLOT(api, field) \
  ((api) != NULL &&          \
   (api)->struct_size >= offsetof(XLA_FFI_Api, field) + sizeof((api)->field) && (api)->field)

XLA_FFI_Error* jmg_ffi_error(const XLA_FFI_CallFrame* cf, XLA_FFI_Error_Code code,
                             const char* fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* An OK code would be read as success with a leaked error object. */
  if (code == XLA_FFI_Error_Code_OK) code = XLA_FFI_Error_Code_INTERNAL;
  XLA_FFI_Error_Create_Args a;
  memset(&a, 0, sizeof a);
  a.struct_size = XLA_FFI_Error_Create_Args_STRUCT_SIZE;
  a.message = msg;
  a.errc = code;
  return cf->api->XLA_FFI_Error_Create(&a);
}

void jmg_ffi_drop(const XLA_FFI_CallFrame* cf, XLA_FFI_Error* e) {
  if (!e) return;
  XLA_FFI_Error_Destroy_Args a;
  memset(&a, 0, sizeof a);
  a.struct_size = XLA_FFI_Error_Destroy_Args_STRUCT_SIZE;
  a.error = e;
  cf->api->XLA_FFI_Error_Destroy(&a);
}

XLA_FFI_Buffer* jmg_ffi_arg(const XLA_FFI_CallFrame* cf, int64_t i) {
  if (i < 0 || i >= cf->args.size || cf->args.types[i] != XLA_FFI_ArgType_BUFFER) return NULL;
  return (XLA_FFI_Buffer*)cf->args.args[i];
}

XLA_FFI_Buffer* jmg_ffi_ret(const XLA_FFI_CallFrame* cf, int64_t i) {
  if (i < 0 || i >= cf->rets.size || cf->rets.types[i] != XLA_FFI_RetType_BUFFER) return NULL;
  return (XLA_FFI_Buffer*)cf->rets.rets[i];
}

size_t jmg_ffi_dtype_size(XLA_FFI_DataType t) {
  switch (t) {
    case XLA_FFI_DataType_S32: return 4;
    case XLA_FFI_DataType_S64: return 8;
    case XLA_FFI_DataType_F32: return 4;
    case XLA_FFI_DataType_F64: return 8;
    case XLA_FFI_DataType_C64: return 8;
    case XLA_FFI_DataType_C128: return 16;
    default: return 0;
  }
}

const char* jmg_ffi_dtype_name(XLA_FFI_DataType t) {
  switch (t) {
    case XLA_FFI_DataType_S32: return "int32";
    case XLA_FFI_DataType_S64: return "int64";
    case XLA_FFI_DataType_F32: return "float32";
    case XLA_FFI_DataType_F64: return "float64";
    case XLA_FFI_DataType_C64: return "complex64";
    case XLA_FFI_DataType_C128: return "complex128";
    default: return "unsupported";
  }
}

int64_t jmg_ffi_numel(const XLA_FFI_Buffer* b) {
  /* A zero extent anywhere makes the product 0, whatever the others are. */
  for (int64_t i = 0; i < b->rank; i++)
    if (b->dims[i] == 0) return 0;
  int64_t n = 1;
  for (int64_t i = 0; i < b->rank; i++) {
    int64_t d = b->dims[i];
    if (d < 0 || (d > 0 && n > INT64_MAX / d)) return -1;
    n *= d;
  }
  return n;
}

/* Attribute names arrive as (ptr, len) spans, not NUL-terminated. */
static void* attr_find(const XLA_FFI_CallFrame* cf, const char* name, XLA_FFI_AttrType type) {
  size_t n = strlen(name);
  const XLA_FFI_Attrs* a = &cf->attrs;
  for (int64_t i = 0; i < a->size; i++) {
    const XLA_FFI_ByteSpan* s = a->names[i];
    if (s->len == n && memcmp(s->ptr, name, n) == 0) return a->types[i] == type ? a->attrs[i] : NULL;
  }
  return NULL;
}

int jmg_ffi_attr_int(const XLA_FFI_CallFrame* cf, const char* name, int64_t* out) {
  const XLA_FFI_Scalar* s = attr_find(cf, name, XLA_FFI_AttrType_SCALAR);
  if (!s) return -1;
  switch (s->dtype) {
    case XLA_FFI_DataType_S8: *out = *(const int8_t*)s->value; return 0;
    case XLA_FFI_DataType_S16: *out = *(const int16_t*)s->value; return 0;
    case XLA_FFI_DataType_S32: *out = *(const int32_t*)s->value; return 0;
    case XLA_FFI_DataType_S64: *out = *(const int64_t*)s->value; return 0;
    case XLA_FFI_DataType_U8: *out = *(const uint8_t*)s->value; return 0;
    case XLA_FFI_DataType_U16: *out = *(const uint16_t*)s->value; return 0;
    case XLA_FFI_DataType_U32: *out = *(const uint32_t*)s->value; return 0;
    case XLA_FFI_DataType_U64:
      if (*(const uint64_t*)s->value > (uint64_t)INT64_MAX) return -1;
      *out = (int64_t) * (const uint64_t*)s->value;
      return 0;
    case XLA_FFI_DataType_PRED: *out = *(const uint8_t*)s->value != 0; return 0;
    default: return -1;
  }
}

int jmg_ffi_attr_str(const XLA_FFI_CallFrame* cf, const char* name, const char** ptr,
                     size_t* len) {
  const XLA_FFI_ByteSpan* s = attr_find(cf, name, XLA_FFI_AttrType_STRING);
  if (!s) return -1;
  *ptr = s->ptr;
  *len = s->len;
  return 0;
}

static XLA_FFI_Error* missing_slot(const XLA_FFI_CallFrame* cf, const char* what) {
  return jmg_ffi_error(cf, XLA_FFI_Error_Code_UNIMPLEMENTED,
                       "jaxmg: this jaxlib's FFI runtime has no %s (jaxlib >= 0.6 needed)", what);
}

XLA_FFI_Error* jmg_ffi_stream(const XLA_FFI_CallFrame* cf, void** stream) {
  XLA_FFI_Stream_Get_Args a;
  memset(&a, 0, sizeof a);
  a.struct_size = XLA_FFI_Stream_Get_Args_STRUCT_SIZE;
  a.ctx = cf->ctx;
  XLA_FFI_Error* e = cf->api->XLA_FFI_Stream_Get(&a);
  if (!e) *stream = a.stream;
  return e;
}

XLA_FFI_Error* jmg_ffi_device_ordinal(const XLA_FFI_CallFrame* cf, int32_t* ordinal) {
  if (!HAS_SLOT(cf->api, XLA_FFI_DeviceOrdinal_Get)) return missing_slot(cf, "DeviceOrdinal_Get");
  XLA_FFI_DeviceOrdinal_Get_Args a;
  memset(&a, 0, sizeof a);
  a.struct_size = XLA_FFI_DeviceOrdinal_Get_Args_STRUCT_SIZE;
  a.ctx = cf->ctx;
  XLA_FFI_Error* e = cf->api->XLA_FFI_DeviceOrdinal_Get(&a);
  if (!e) *ordinal = a.device_ordinal;
  return e;
}

XLA_FFI_Error* jmg_ffi_run_id(const XLA_FFI_CallFrame* cf, int64_t* run_id) {
  if (!HAS_SLOT(cf->api, XLA_FFI_RunId_Get)) return missing_slot(cf, "RunId_Get");
  XLA_FFI_RunId_Get_Args a;
  memset(&a, 0, sizeof a);
  a.struct_size = XLA_FFI_RunId_Get_Args_STRUCT_SIZE;
  a.ctx = cf->ctx;
  XLA_FFI_Error* e = cf->api->XLA_FFI_RunId_Get(&a);
  if (!e) *run_id = a.run_id;
  return e;
}

/* XLA's allocator accepts alignments up to 16 only. */
XLA_FFI_Error* jmg_ffi_alloc(const XLA_FFI_CallFrame* cf, size_t size, void** data) {
  XLA_FFI_DeviceMemory_Allocate_Args a;
  memset(&a, 0, sizeof a);
  a.struct_size = XLA_FFI_DeviceMemory_Allocate_Args_STRUCT_SIZE;
  a.ctx = cf->ctx;
  a.size = size;
  a.alignment = 16;
  XLA_FFI_Error* e = cf->api->XLA_FFI_DeviceMemory_Allocate(&a);
  if (!e) *data = a.data;
  return e;
}

XLA_FFI_Error* jmg_ffi_free(const XLA_FFI_CallFrame* cf, size_t size, void* data) {
  XLA_FFI_DeviceMemory_Free_Args a;
  memset(&a, 0, sizeof a);
  a.struct_size = XLA_FFI_DeviceMemory_Free_Args_STRUCT_SIZE;
  a.ctx = cf->ctx;
  a.size = size;
  a.data = data;
  return cf->api->XLA_FFI_DeviceMemory_Free(&a);
}
