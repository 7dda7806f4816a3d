/* dtype.c - facts about the four element types jaxmg handles. */
#include "engines/engine.h"

size_t jmg_dtype_size(jmg_dtype t) {
  static const size_t size[4] = {4, 8, 8, 16};
  return size[t];
}

size_t jmg_dtype_real_size(jmg_dtype t) { return (t == JMG_F32 || t == JMG_C64) ? 4 : 8; }

int jmg_dtype_is_complex(jmg_dtype t) { return t == JMG_C64 || t == JMG_C128; }

const char* jmg_dtype_name(jmg_dtype t) {
  static const char* name[4] = {"float32", "float64", "complex64", "complex128"};
  return (t >= JMG_F32 && t <= JMG_C128) ? name[t] : "?";
}
