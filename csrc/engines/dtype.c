/* dtype.c - facts about the four element types jaxmg handles. */
#include "engines/engine.h"

size_t jmg_dtype_size(jmg_dtype t) {
  static const size_t size[4] = {4, 8, 8, 16};
  return size[t];
}

int jmg_dtype_is_complex(jmg_dtype t) { return t == JMG_C64 || t == JMG_C128; }
