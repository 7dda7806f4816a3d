/* test_seam.c - the FFI seam against a fake XLA runtime.
 *
 * The fake API table records what the seam hands it (argument struct sizes,
 * ctx, sizes, alignment) so that each check judges the seam's side of the
 * contract, not the fake's. Attribute names and string values live in
 * malloc'd buffers of exactly their length: under valgrind, a lookup that
 * treated them as C strings would read past the end and be reported.
 */
#include "ffi/seam.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* The header leaves these opaque to handlers; the fake runtime completes
 * them so it can recognise its own objects when they come back. */
struct XLA_FFI_Error {
  unsigned magic;
  XLA_FFI_Error_Code code;
  char* msg;
};
struct XLA_FFI_ExecutionContext {
  int tag;
};

#define ERR_MAGIC 0xE77011u

/* ------------------------------------------------------------------------ */
/* Fake runtime. */

static struct {
  int creates, destroys;
  size_t create_size, destroy_size;
  XLA_FFI_Error* destroyed;

  int stream_calls, ordinal_calls, runid_calls, alloc_calls, free_calls;
  size_t stream_size, ordinal_size, runid_size, alloc_size_field, free_size_field;
  XLA_FFI_ExecutionContext *stream_ctx, *ordinal_ctx, *runid_ctx, *alloc_ctx, *free_ctx;
  size_t alloc_bytes, alloc_align, free_bytes;
  void *alloc_ptr, *free_ptr;

  /* When nonzero, the next context call fails with this code. */
  XLA_FFI_Error_Code fail;
} fk;

static XLA_FFI_Error* make_error(XLA_FFI_Error_Code code, const char* msg) {
  XLA_FFI_Error* e = malloc(sizeof *e);
  size_t n = strlen(msg);
  e->magic = ERR_MAGIC;
  e->code = code;
  e->msg = malloc(n + 1);
  memcpy(e->msg, msg, n + 1);
  fk.creates++;
  return e;
}

static XLA_FFI_Error* fake_error_create(XLA_FFI_Error_Create_Args* a) {
  fk.create_size = a->struct_size;
  return make_error(a->errc, a->message);
}

static void fake_error_destroy(XLA_FFI_Error_Destroy_Args* a) {
  fk.destroy_size = a->struct_size;
  fk.destroyed = a->error;
  fk.destroys++;
  a->error->magic = 0;
  free(a->error->msg);
  free(a->error);
}

/* The seam's caller owns a returned error; the test is that caller. */
static void kill_error(XLA_FFI_Error* e) {
  if (!e) return;
  e->magic = 0;
  free(e->msg);
  free(e);
  fk.destroys++;
}

static XLA_FFI_Error* maybe_fail(void) {
  if (!fk.fail) return NULL;
  XLA_FFI_Error_Code c = fk.fail;
  fk.fail = XLA_FFI_Error_Code_OK;
  return make_error(c, "fake runtime failure");
}

static void* const STREAM = (void*)(uintptr_t)0x5EA5;
enum { ORDINAL = 5 };
static const int64_t RUN_ID = INT64_C(0x123456789ABCDEF);

static XLA_FFI_Error* fake_stream_get(XLA_FFI_Stream_Get_Args* a) {
  fk.stream_calls++;
  fk.stream_size = a->struct_size;
  fk.stream_ctx = a->ctx;
  XLA_FFI_Error* e = maybe_fail();
  if (!e) a->stream = STREAM;
  return e;
}

static XLA_FFI_Error* fake_ordinal_get(XLA_FFI_DeviceOrdinal_Get_Args* a) {
  fk.ordinal_calls++;
  fk.ordinal_size = a->struct_size;
  fk.ordinal_ctx = a->ctx;
  XLA_FFI_Error* e = maybe_fail();
  if (!e) a->device_ordinal = ORDINAL;
  return e;
}

static XLA_FFI_Error* fake_runid_get(XLA_FFI_RunId_Get_Args* a) {
  fk.runid_calls++;
  fk.runid_size = a->struct_size;
  fk.runid_ctx = a->ctx;
  XLA_FFI_Error* e = maybe_fail();
  if (!e) a->run_id = RUN_ID;
  return e;
}

static XLA_FFI_Error* fake_alloc(XLA_FFI_DeviceMemory_Allocate_Args* a) {
  fk.alloc_calls++;
  fk.alloc_size_field = a->struct_size;
  fk.alloc_ctx = a->ctx;
  fk.alloc_bytes = a->size;
  fk.alloc_align = a->alignment;
  XLA_FFI_Error* e = maybe_fail();
  if (!e) a->data = fk.alloc_ptr = malloc(a->size ? a->size : 1);
  return e;
}

static XLA_FFI_Error* fake_free(XLA_FFI_DeviceMemory_Free_Args* a) {
  fk.free_calls++;
  fk.free_size_field = a->struct_size;
  fk.free_ctx = a->ctx;
  fk.free_bytes = a->size;
  fk.free_ptr = a->data;
  XLA_FFI_Error* e = maybe_fail();
  if (!e) free(a->data);
  return e;
}

static XLA_FFI_Api full_api(void) {
  XLA_FFI_Api api;
  memset(&api, 0, sizeof api);
  api.struct_size = XLA_FFI_Api_STRUCT_SIZE;
  api.XLA_FFI_Error_Create = fake_error_create;
  api.XLA_FFI_Error_Destroy = fake_error_destroy;
  api.XLA_FFI_Stream_Get = fake_stream_get;
  api.XLA_FFI_DeviceMemory_Allocate = fake_alloc;
  api.XLA_FFI_DeviceMemory_Free = fake_free;
  api.XLA_FFI_RunId_Get = fake_runid_get;
  api.XLA_FFI_DeviceOrdinal_Get = fake_ordinal_get;
  return api;
}

static XLA_FFI_ExecutionContext CTX = {42};

static XLA_FFI_CallFrame frame(const XLA_FFI_Api* api) {
  XLA_FFI_CallFrame cf;
  memset(&cf, 0, sizeof cf);
  cf.struct_size = XLA_FFI_CallFrame_STRUCT_SIZE;
  cf.api = api;
  cf.ctx = &CTX;
  cf.stage = XLA_FFI_ExecutionStage_EXECUTE;
  cf.args.struct_size = XLA_FFI_Args_STRUCT_SIZE;
  cf.rets.struct_size = XLA_FFI_Rets_STRUCT_SIZE;
  cf.attrs.struct_size = XLA_FFI_Attrs_STRUCT_SIZE;
  return cf;
}

static int is_error(const XLA_FFI_Error* e, XLA_FFI_Error_Code code) {
  return e && e->magic == ERR_MAGIC && e->code == code;
}

/* ------------------------------------------------------------------------ */
/* Metadata query. */

static void test_metadata(void) {
  XLA_FFI_Api api = full_api();
  XLA_FFI_CallFrame cf = frame(&api);

  XLA_FFI_Metadata md;
  /* Garbage first, so a field the seam forgets to write shows. */
  memset(&md, 0xAB, sizeof md);
  md.struct_size = XLA_FFI_Metadata_STRUCT_SIZE;
  md.state_type_id.type_id = 77;

  XLA_FFI_Metadata_Extension mext;
  memset(&mext, 0, sizeof mext);
  mext.extension_base.struct_size = XLA_FFI_Metadata_Extension_STRUCT_SIZE;
  mext.extension_base.type = XLA_FFI_Extension_Metadata;
  mext.extension_base.next = NULL;
  mext.metadata = &md;

  /* Some other extension; its type is one the header does not know yet. */
  struct {
    XLA_FFI_Extension_Base base;
    void* payload;
  } other;
  memset(&other, 0, sizeof other);
  other.base.struct_size = sizeof other;
  other.base.type = (XLA_FFI_Extension_Type)7;
  other.payload = &md;

  /* An ordinary execute call: no extensions at all. */
  cf.extension_start = NULL;
  CHECK(jmg_ffi_answer_metadata(&cf, 1u) == 0, "no extension must not be a query");

  /* A chain holding only a foreign extension is not a query either. */
  other.base.next = NULL;
  cf.extension_start = &other.base;
  CHECK(jmg_ffi_answer_metadata(&cf, 1u) == 0, "foreign extension taken for metadata");
  CHECK(md.api_version.major_version != XLA_FFI_API_MAJOR ||
            md.api_version.minor_version != XLA_FFI_API_MINOR,
        "metadata written without a metadata extension");

  /* The metadata extension second in the chain: the seam must walk `next`. */
  other.base.next = &mext.extension_base;
  uint32_t traits = XLA_FFI_HANDLER_TRAITS_COMMAND_BUFFER_COMPATIBLE | 0x40u;
  CHECK(jmg_ffi_answer_metadata(&cf, traits) == 1, "metadata extension behind another not found");
  CHECK(md.api_version.struct_size == XLA_FFI_Api_Version_STRUCT_SIZE,
        "api_version.struct_size %zu, want %zu", md.api_version.struct_size,
        (size_t)XLA_FFI_Api_Version_STRUCT_SIZE);
  CHECK(md.api_version.extension_start == NULL, "api_version.extension_start not cleared");
  CHECK(md.api_version.major_version == XLA_FFI_API_MAJOR, "major %d, want %d",
        md.api_version.major_version, XLA_FFI_API_MAJOR);
  CHECK(md.api_version.minor_version == XLA_FFI_API_MINOR, "minor %d, want %d",
        md.api_version.minor_version, XLA_FFI_API_MINOR);
  CHECK(md.traits == traits, "traits %u, want %u", (unsigned)md.traits, (unsigned)traits);
  /* XLA owns these; the seam has no business changing them. */
  CHECK(md.struct_size == XLA_FFI_Metadata_STRUCT_SIZE, "metadata struct_size overwritten");
  CHECK(md.state_type_id.type_id == 77, "state_type_id overwritten");
  CHECK(other.payload == &md && other.base.type == (XLA_FFI_Extension_Type)7,
        "foreign extension modified");

  /* The metadata extension first, with a traits value of 0. */
  memset(&md.api_version, 0xAB, sizeof md.api_version);
  md.traits = 0xFFFFFFFFu;
  mext.extension_base.next = &other.base;
  other.base.next = NULL;
  cf.extension_start = &mext.extension_base;
  CHECK(jmg_ffi_answer_metadata(&cf, 0u) == 1, "metadata extension first not found");
  CHECK(md.traits == 0u, "traits %u, want 0", (unsigned)md.traits);
  CHECK(md.api_version.major_version == XLA_FFI_API_MAJOR &&
            md.api_version.minor_version == XLA_FFI_API_MINOR,
        "version not written");

  CHECK(fk.creates == fk.destroys, "metadata query made an error");
}

/* ------------------------------------------------------------------------ */
/* Errors. */

static void test_error(void) {
  XLA_FFI_Api api = full_api();
  XLA_FFI_CallFrame cf = frame(&api);

  XLA_FFI_Error* e =
      jmg_ffi_error(&cf, XLA_FFI_Error_Code_INVALID_ARGUMENT, "bad %s at %d: %lld%%", "tile", 3,
                    (long long)-7);
  CHECK(is_error(e, XLA_FFI_Error_Code_INVALID_ARGUMENT), "code not passed");
  CHECK(e && strcmp(e->msg, "bad tile at 3: -7%") == 0, "message \"%s\"", e ? e->msg : "(null)");
  CHECK(fk.create_size == XLA_FFI_Error_Create_Args_STRUCT_SIZE, "create args struct_size %zu",
        fk.create_size);

  /* jmg_ffi_drop is how a handler discards an error it will not return. */
  int before = fk.destroys;
  jmg_ffi_drop(&cf, e);
  CHECK(fk.destroys == before + 1 && fk.destroyed == e, "drop did not destroy the error");
  CHECK(fk.destroy_size == XLA_FFI_Error_Destroy_Args_STRUCT_SIZE,
        "destroy args struct_size %zu", fk.destroy_size);
  jmg_ffi_drop(&cf, NULL);
  CHECK(fk.destroys == before + 1, "drop(NULL) reached the runtime");

  /* OK would read as success and leak the error object. */
  e = jmg_ffi_error(&cf, XLA_FFI_Error_Code_OK, "oops %d", 1);
  CHECK(is_error(e, XLA_FFI_Error_Code_INTERNAL), "OK code not turned into INTERNAL (got %d)",
        e ? (int)e->code : -1);
  CHECK(e && strcmp(e->msg, "oops 1") == 0, "message \"%s\"", e ? e->msg : "(null)");
  jmg_ffi_drop(&cf, e);

  /* Every other code goes through unchanged. */
  for (int c = XLA_FFI_Error_Code_CANCELLED; c <= XLA_FFI_Error_Code_UNAUTHENTICATED; c++) {
    e = jmg_ffi_error(&cf, (XLA_FFI_Error_Code)c, "code %d", c);
    CHECK(is_error(e, (XLA_FFI_Error_Code)c), "code %d became %d", c, e ? (int)e->code : -1);
    jmg_ffi_drop(&cf, e);
  }

  /* A message longer than any internal buffer: cut, never overrun. */
  enum { LONG = 5000 };
  char* big = malloc(LONG + 1);
  memset(big, 'q', LONG);
  big[LONG] = '\0';
  e = jmg_ffi_error(&cf, XLA_FFI_Error_Code_UNKNOWN, "<%s>", big);
  size_t n = e ? strlen(e->msg) : 0;
  CHECK(e && n >= 256 && n <= LONG + 2 && e->msg[0] == '<' && strspn(e->msg + 1, "q") >= n - 2,
        "long message mangled (len %zu)", n);
  jmg_ffi_drop(&cf, e);
  free(big);
}

/* ------------------------------------------------------------------------ */
/* Arguments and results. */

static void test_args_rets(void) {
  XLA_FFI_Api api = full_api();
  XLA_FFI_CallFrame cf = frame(&api);

  int64_t dims[2] = {3, 4};
  XLA_FFI_Buffer b0 = {XLA_FFI_Buffer_STRUCT_SIZE, NULL, XLA_FFI_DataType_F64, NULL, 2, dims};
  XLA_FFI_Buffer b2 = {XLA_FFI_Buffer_STRUCT_SIZE, NULL, XLA_FFI_DataType_S32, NULL, 0, NULL};
  int not_a_buffer = 0;

  XLA_FFI_ArgType at[3] = {XLA_FFI_ArgType_BUFFER, (XLA_FFI_ArgType)9, XLA_FFI_ArgType_BUFFER};
  void* av[3] = {&b0, &not_a_buffer, &b2};
  cf.args.size = 3;
  cf.args.types = at;
  cf.args.args = av;

  XLA_FFI_RetType rt[2] = {(XLA_FFI_RetType)2, XLA_FFI_RetType_BUFFER};
  void* rv[2] = {&not_a_buffer, &b0};
  cf.rets.size = 2;
  cf.rets.types = rt;
  cf.rets.rets = rv;

  CHECK(jmg_ffi_arg(&cf, 0) == &b0, "arg 0");
  CHECK(jmg_ffi_arg(&cf, 1) == NULL, "arg 1 is not a buffer");
  CHECK(jmg_ffi_arg(&cf, 2) == &b2, "arg 2");
  CHECK(jmg_ffi_arg(&cf, 3) == NULL, "arg 3 past the end");
  CHECK(jmg_ffi_arg(&cf, -1) == NULL, "arg -1");
  CHECK(jmg_ffi_arg(&cf, INT64_MAX) == NULL, "arg INT64_MAX");
  CHECK(jmg_ffi_arg(&cf, INT64_MIN) == NULL, "arg INT64_MIN");

  CHECK(jmg_ffi_ret(&cf, 0) == NULL, "ret 0 is not a buffer");
  CHECK(jmg_ffi_ret(&cf, 1) == &b0, "ret 1");
  CHECK(jmg_ffi_ret(&cf, 2) == NULL, "ret 2 past the end");
  CHECK(jmg_ffi_ret(&cf, -1) == NULL, "ret -1");

  /* Empty lists with NULL arrays: nothing may be dereferenced. */
  XLA_FFI_CallFrame empty = frame(&api);
  CHECK(jmg_ffi_arg(&empty, 0) == NULL, "arg 0 of none");
  CHECK(jmg_ffi_ret(&empty, 0) == NULL, "ret 0 of none");
}

/* ------------------------------------------------------------------------ */
/* Dtypes and element counts. */

static void test_dtypes(void) {
  static const struct {
    XLA_FFI_DataType t;
    size_t size;
    const char* name;
  } known[] = {
      {XLA_FFI_DataType_S32, 4, "int32"},     {XLA_FFI_DataType_S64, 8, "int64"},
      {XLA_FFI_DataType_F32, 4, "float32"},   {XLA_FFI_DataType_F64, 8, "float64"},
      {XLA_FFI_DataType_C64, 8, "complex64"}, {XLA_FFI_DataType_C128, 16, "complex128"},
  };
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    CHECK(jmg_ffi_dtype_size(known[i].t) == known[i].size, "size of %s: %zu", known[i].name,
          jmg_ffi_dtype_size(known[i].t));
    CHECK(strcmp(jmg_ffi_dtype_name(known[i].t), known[i].name) == 0, "name %s, want %s",
          jmg_ffi_dtype_name(known[i].t), known[i].name);
  }
  static const XLA_FFI_DataType other[] = {
      XLA_FFI_DataType_INVALID, XLA_FFI_DataType_PRED, XLA_FFI_DataType_S8,
      XLA_FFI_DataType_U8,      XLA_FFI_DataType_U64,  XLA_FFI_DataType_F16,
      XLA_FFI_DataType_BF16,    XLA_FFI_DataType_TOKEN, XLA_FFI_DataType_F8E5M2,
      (XLA_FFI_DataType)999,
  };
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
    CHECK(jmg_ffi_dtype_size(other[i]) == 0, "dtype %d size %zu, want 0", (int)other[i],
          jmg_ffi_dtype_size(other[i]));
    CHECK(strcmp(jmg_ffi_dtype_name(other[i]), "unsupported") == 0, "dtype %d named %s",
          (int)other[i], jmg_ffi_dtype_name(other[i]));
  }
}

static int64_t numel_of(int64_t rank, const int64_t* dims) {
  int64_t d[8];
  if (rank) memcpy(d, dims, (size_t)rank * sizeof *d);
  XLA_FFI_Buffer b = {XLA_FFI_Buffer_STRUCT_SIZE, NULL, XLA_FFI_DataType_F32, NULL, rank,
                      rank ? d : NULL};
  return jmg_ffi_numel(&b);
}

static void test_numel(void) {
  const int64_t M = INT64_MAX;
  const int64_t P31 = INT64_C(1) << 31, P32 = INT64_C(1) << 32;

  CHECK(numel_of(0, NULL) == 1, "scalar has one element");
  CHECK(numel_of(3, (const int64_t[]){2, 3, 4}) == 24, "2x3x4");
  CHECK(numel_of(1, (const int64_t[]){0}) == 0, "empty vector");
  CHECK(numel_of(3, (const int64_t[]){5, 0, 7}) == 0, "5x0x7");
  CHECK(numel_of(2, (const int64_t[]){M, 1}) == M, "INT64_MAX x 1");
  CHECK(numel_of(2, (const int64_t[]){P32, P31 - 1}) == P32 * (P31 - 1), "just below 2^63");
  CHECK(numel_of(2, (const int64_t[]){P32, P31}) == -1, "2^63 overflows");
  CHECK(numel_of(2, (const int64_t[]){M, 2}) == -1, "INT64_MAX x 2 overflows");
  CHECK(numel_of(3, (const int64_t[]){P32, P32, 1}) == -1, "2^64 overflows");
  CHECK(numel_of(3, (const int64_t[]){0, M, M}) == 0, "zero first, huge after");
  CHECK(numel_of(2, (const int64_t[]){M, 0}) == 0, "huge then zero");
  /* A zero anywhere makes the product 0, which never overflows; the answer
   * must not depend on where the zero sits. */
  int64_t z = numel_of(3, (const int64_t[]){M, 2, 0});
  CHECK(z == 0, "BUG: dims {INT64_MAX, 2, 0} give %lld, want 0 (product is 0; {0, INT64_MAX, 2} "
        "gives %lld)", (long long)z, (long long)numel_of(3, (const int64_t[]){0, M, 2}));
}

/* ------------------------------------------------------------------------ */
/* Attributes. */

typedef struct attr_fixture {
  int64_t n;
  XLA_FFI_AttrType types[32];
  XLA_FFI_ByteSpan spans[32];
  XLA_FFI_ByteSpan* names[32];
  void* attrs[32];
  XLA_FFI_Scalar scalars[32];
  char* owned[64];
  int nowned;
} attr_fixture;

/* Exactly len bytes, no terminator, so a strlen or strcmp on it is caught. */
static const char* exact(attr_fixture* f, const char* s) {
  size_t n = strlen(s);
  char* p = malloc(n);
  memcpy(p, s, n);
  f->owned[f->nowned++] = p;
  return p;
}

static void* add(attr_fixture* f, const char* name, XLA_FFI_AttrType type) {
  int64_t i = f->n++;
  f->types[i] = type;
  f->spans[i].ptr = exact(f, name);
  f->spans[i].len = strlen(name);
  f->names[i] = &f->spans[i];
  return &f->attrs[i];
}

static void add_scalar(attr_fixture* f, const char* name, XLA_FFI_DataType dt, void* value) {
  int64_t i = f->n;
  void** slot = add(f, name, XLA_FFI_AttrType_SCALAR);
  f->scalars[i].dtype = dt;
  f->scalars[i].value = value;
  *slot = &f->scalars[i];
}

static int sorted_bytewise(const attr_fixture* f) {
  for (int64_t i = 1; i < f->n; i++) {
    const XLA_FFI_ByteSpan *a = f->names[i - 1], *b = f->names[i];
    size_t m = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->ptr, b->ptr, m);
    if (c > 0 || (c == 0 && a->len >= b->len)) return 0;
  }
  return 1;
}

static void test_attrs(void) {
  XLA_FFI_Api api = full_api();
  XLA_FFI_CallFrame cf = frame(&api);
  attr_fixture f;
  memset(&f, 0, sizeof f);

  static int64_t arr_data[3] = {1, 2, 3};
  XLA_FFI_Array arr = {XLA_FFI_DataType_S64, 3, arr_data};
  double f64 = 4.0;
  float f32 = 2.0f;
  int16_t i16 = -300;
  int32_t i32 = -70000;
  int64_t i64 = INT64_MIN + 5;
  int8_t i8 = -5;
  XLA_FFI_ByteSpan str;
  uint8_t p0 = 0, p1 = 1;
  int64_t tile = 256;
  int32_t tiles = 9;
  uint16_t u16 = 65000;
  uint32_t u32 = 4000000000u;
  uint64_t u64 = 7;
  uint8_t u8 = 250;

  *(void**)add(&f, "arr", XLA_FFI_AttrType_ARRAY) = &arr;
  add_scalar(&f, "f32", XLA_FFI_DataType_F32, &f32);
  add_scalar(&f, "f64", XLA_FFI_DataType_F64, &f64);
  add_scalar(&f, "i16", XLA_FFI_DataType_S16, &i16);
  add_scalar(&f, "i32", XLA_FFI_DataType_S32, &i32);
  add_scalar(&f, "i64", XLA_FFI_DataType_S64, &i64);
  add_scalar(&f, "i8", XLA_FFI_DataType_S8, &i8);
  str.ptr = exact(&f, "potrs");
  str.len = 5;
  *(void**)add(&f, "name", XLA_FFI_AttrType_STRING) = &str;
  add_scalar(&f, "nparties_max", XLA_FFI_DataType_S64, &tile);
  add_scalar(&f, "p0", XLA_FFI_DataType_PRED, &p0);
  add_scalar(&f, "p1", XLA_FFI_DataType_PRED, &p1);
  add_scalar(&f, "tile", XLA_FFI_DataType_S64, &tile);
  add_scalar(&f, "tiles", XLA_FFI_DataType_S32, &tiles);
  add_scalar(&f, "u16", XLA_FFI_DataType_U16, &u16);
  add_scalar(&f, "u32", XLA_FFI_DataType_U32, &u32);
  add_scalar(&f, "u64", XLA_FFI_DataType_U64, &u64);
  add_scalar(&f, "u8", XLA_FFI_DataType_U8, &u8);
  CHECK(sorted_bytewise(&f), "fixture attributes are not sorted as XLA sorts them");

  cf.attrs.size = f.n;
  cf.attrs.types = f.types;
  cf.attrs.names = f.names;
  cf.attrs.attrs = f.attrs;

  /* Every integer width, signed ones sign-extended, unsigned ones not. */
  static const struct {
    const char* name;
    int64_t want;
  } ints[] = {
      {"i8", -5},
      {"i16", -300},
      {"i32", -70000},
      {"i64", INT64_MIN + 5},
      {"u8", 250},
      {"u16", 65000},
      {"u32", INT64_C(4000000000)},
      {"p0", 0},
      {"p1", 1},
      {"tile", 256},
      {"tiles", 9},
  };
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    int64_t v = 12345;
    int rc = jmg_ffi_attr_int(&cf, ints[i].name, &v);
    CHECK(rc == 0 && v == ints[i].want, "attr %s: rc %d value %lld, want %lld", ints[i].name, rc,
          (long long)v, (long long)ints[i].want);
  }

  /* seam.h: "An integer attribute of any integer dtype is widened to int64";
   * a U64 holding 7 fits. */
  int64_t v = 12345;
  int rc = jmg_ffi_attr_int(&cf, "u64", &v);
  CHECK(rc == 0 && v == 7, "BUG: U64 attribute (value 7) not widened: rc %d value %lld", rc,
        (long long)v);

  /* Absent, prefixes of present names, present names as prefixes, wrong
   * kinds. */
  static const char* const not_ints[] = {"absent", "til", "tilesx", "nparties", "i",
                                         "",       "f64", "f32",    "name",     "arr"};
  for (size_t i = 0; i < sizeof not_ints / sizeof not_ints[0]; i++) {
    v = 12345;
    CHECK(jmg_ffi_attr_int(&cf, not_ints[i], &v) == -1, "attr_int(\"%s\") should fail",
          not_ints[i]);
  }

  const char* p = NULL;
  size_t len = 0;
  CHECK(jmg_ffi_attr_str(&cf, "name", &p, &len) == 0 && p == str.ptr && len == 5,
        "attr_str(name): ptr %p len %zu", (const void*)p, len);
  static const char* const not_strs[] = {"nam", "names", "tile", "arr", "f64", "absent"};
  for (size_t i = 0; i < sizeof not_strs / sizeof not_strs[0]; i++)
    CHECK(jmg_ffi_attr_str(&cf, not_strs[i], &p, &len) == -1, "attr_str(\"%s\") should fail",
          not_strs[i]);

  /* No attributes at all. */
  XLA_FFI_CallFrame bare = frame(&api);
  CHECK(jmg_ffi_attr_int(&bare, "tile", &v) == -1, "attr_int on no attributes");
  CHECK(jmg_ffi_attr_str(&bare, "name", &p, &len) == -1, "attr_str on no attributes");

  for (int i = 0; i < f.nowned; i++) free(f.owned[i]);
}

/* ------------------------------------------------------------------------ */
/* Platform context. */

static void test_context(void) {
  XLA_FFI_Api api = full_api();
  XLA_FFI_CallFrame cf = frame(&api);
  XLA_FFI_Error* e;

  void* stream = NULL;
  e = jmg_ffi_stream(&cf, &stream);
  CHECK(e == NULL && stream == STREAM, "stream %p", stream);
  CHECK(fk.stream_ctx == &CTX, "stream: ctx not passed");
  CHECK(fk.stream_size == XLA_FFI_Stream_Get_Args_STRUCT_SIZE, "stream args struct_size %zu",
        fk.stream_size);
  fk.fail = XLA_FFI_Error_Code_UNAVAILABLE;
  e = jmg_ffi_stream(&cf, &stream);
  CHECK(is_error(e, XLA_FFI_Error_Code_UNAVAILABLE), "stream error not propagated");
  kill_error(e);

  int32_t ord = -1;
  e = jmg_ffi_device_ordinal(&cf, &ord);
  CHECK(e == NULL && ord == ORDINAL, "ordinal %d", (int)ord);
  CHECK(fk.ordinal_ctx == &CTX, "ordinal: ctx not passed");
  CHECK(fk.ordinal_size == XLA_FFI_DeviceOrdinal_Get_Args_STRUCT_SIZE,
        "ordinal args struct_size %zu", fk.ordinal_size);
  fk.fail = XLA_FFI_Error_Code_FAILED_PRECONDITION;
  e = jmg_ffi_device_ordinal(&cf, &ord);
  CHECK(is_error(e, XLA_FFI_Error_Code_FAILED_PRECONDITION), "ordinal error not propagated");
  kill_error(e);

  int64_t run = 0;
  e = jmg_ffi_run_id(&cf, &run);
  CHECK(e == NULL && run == RUN_ID, "run id %lld", (long long)run);
  CHECK(fk.runid_ctx == &CTX, "run id: ctx not passed");
  CHECK(fk.runid_size == XLA_FFI_RunId_Get_Args_STRUCT_SIZE, "run id args struct_size %zu",
        fk.runid_size);
  fk.fail = XLA_FFI_Error_Code_ABORTED;
  e = jmg_ffi_run_id(&cf, &run);
  CHECK(is_error(e, XLA_FFI_Error_Code_ABORTED), "run id error not propagated");
  kill_error(e);

  void* mem = NULL;
  e = jmg_ffi_alloc(&cf, 1000, &mem);
  CHECK(e == NULL && mem != NULL && mem == fk.alloc_ptr, "alloc result %p", mem);
  CHECK(fk.alloc_bytes == 1000, "alloc size %zu", fk.alloc_bytes);
  CHECK(fk.alloc_align == 16, "alloc alignment %zu, XLA accepts at most 16", fk.alloc_align);
  CHECK(fk.alloc_ctx == &CTX, "alloc: ctx not passed");
  CHECK(fk.alloc_size_field == XLA_FFI_DeviceMemory_Allocate_Args_STRUCT_SIZE,
        "alloc args struct_size %zu", fk.alloc_size_field);
  if (mem) memset(mem, 0, 1000);

  e = jmg_ffi_free(&cf, 1000, mem);
  CHECK(e == NULL, "free failed");
  CHECK(fk.free_ptr == mem && fk.free_bytes == 1000, "free got %p/%zu", fk.free_ptr,
        fk.free_bytes);
  CHECK(fk.free_ctx == &CTX, "free: ctx not passed");
  CHECK(fk.free_size_field == XLA_FFI_DeviceMemory_Free_Args_STRUCT_SIZE,
        "free args struct_size %zu", fk.free_size_field);

  fk.fail = XLA_FFI_Error_Code_RESOURCE_EXHAUSTED;
  e = jmg_ffi_alloc(&cf, (size_t)1 << 40, &mem);
  CHECK(is_error(e, XLA_FFI_Error_Code_RESOURCE_EXHAUSTED), "alloc error not propagated");
  CHECK(fk.alloc_bytes == (size_t)1 << 40, "alloc size %zu", fk.alloc_bytes);
  kill_error(e);

  /* A failed free leaves the block with its owner, so release it here. */
  void* blk = NULL;
  e = jmg_ffi_alloc(&cf, 64, &blk);
  CHECK(e == NULL && blk, "alloc 64");
  fk.fail = XLA_FFI_Error_Code_INTERNAL;
  e = jmg_ffi_free(&cf, 64, blk);
  CHECK(is_error(e, XLA_FFI_Error_Code_INTERNAL), "free error not propagated");
  CHECK(fk.free_ptr == blk && fk.free_bytes == 64, "free got %p/%zu", fk.free_ptr, fk.free_bytes);
  kill_error(e);
  free(blk);
}

/* Older runtimes hand a shorter table: slots past struct_size must be left
 * alone even though (here) the memory behind them holds valid pointers. */
static void test_missing_slots(void) {
  XLA_FFI_Api api = full_api();
  XLA_FFI_CallFrame cf = frame(&api);
  XLA_FFI_Error* e;
  int32_t ord = -1;
  int64_t run = -1;

  const size_t runid_off = offsetof(XLA_FFI_Api, XLA_FFI_RunId_Get);
  const size_t ord_off = offsetof(XLA_FFI_Api, XLA_FFI_DeviceOrdinal_Get);
  const size_t ptr = sizeof api.XLA_FFI_RunId_Get;

  /* Table ends before RunId_Get: neither slot exists. */
  const size_t short_sizes[] = {runid_off, runid_off + ptr - 1};
  for (size_t k = 0; k < 2; k++) {
    api.struct_size = short_sizes[k];
    int rc0 = fk.runid_calls, oc0 = fk.ordinal_calls;
    e = jmg_ffi_run_id(&cf, &run);
    CHECK(is_error(e, XLA_FFI_Error_Code_UNIMPLEMENTED), "size %zu: run id not UNIMPLEMENTED",
          short_sizes[k]);
    CHECK(e && strstr(e->msg, "RunId_Get"), "run id message \"%s\"", e ? e->msg : "(null)");
    kill_error(e);
    e = jmg_ffi_device_ordinal(&cf, &ord);
    CHECK(is_error(e, XLA_FFI_Error_Code_UNIMPLEMENTED), "size %zu: ordinal not UNIMPLEMENTED",
          short_sizes[k]);
    CHECK(e && strstr(e->msg, "DeviceOrdinal_Get"), "ordinal message \"%s\"",
          e ? e->msg : "(null)");
    kill_error(e);
    CHECK(fk.runid_calls == rc0 && fk.ordinal_calls == oc0,
          "size %zu: a slot beyond struct_size was called", short_sizes[k]);
  }

  /* Table ends right after RunId_Get: run id works, ordinal does not. */
  api.struct_size = ord_off;
  CHECK(ord_off == runid_off + ptr, "slot layout assumption");
  int oc0 = fk.ordinal_calls;
  run = -1;
  e = jmg_ffi_run_id(&cf, &run);
  CHECK(e == NULL && run == RUN_ID, "run id with table ending after it");
  kill_error(e);
  e = jmg_ffi_device_ordinal(&cf, &ord);
  CHECK(is_error(e, XLA_FFI_Error_Code_UNIMPLEMENTED), "ordinal past a short table");
  kill_error(e);
  CHECK(fk.ordinal_calls == oc0, "ordinal slot beyond struct_size was called");

  /* Full-size table with the slots left NULL. */
  api.struct_size = XLA_FFI_Api_STRUCT_SIZE;
  api.XLA_FFI_RunId_Get = NULL;
  api.XLA_FFI_DeviceOrdinal_Get = NULL;
  e = jmg_ffi_run_id(&cf, &run);
  CHECK(is_error(e, XLA_FFI_Error_Code_UNIMPLEMENTED), "NULL run id slot");
  kill_error(e);
  e = jmg_ffi_device_ordinal(&cf, &ord);
  CHECK(is_error(e, XLA_FFI_Error_Code_UNIMPLEMENTED), "NULL ordinal slot");
  kill_error(e);
}

int main(void) {
  test_metadata();
  test_error();
  test_args_rets();
  test_dtypes();
  test_numel();
  test_attrs();
  test_context();
  test_missing_slots();
  CHECK(fk.creates == fk.destroys, "%d errors created, %d destroyed", fk.creates, fk.destroys);
  return CHECK_DONE("test_seam");
}
