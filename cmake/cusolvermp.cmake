# The cuSOLVERMp engine: its own shared library, libjaxmg_mp.so, loaded by
# the Python layer only when a solve uses it. Built when the headers and
# libraries of cuSOLVERMp 0.9.1, NCCL >= 2.29 and the CUDA 13 runtime and
# cuBLAS are found:
#   JAXMG_CUSOLVERMP_ROOT  a folder holding the nvidia wheels' tree
#                          (nvidia/cu13, nvidia/nccl), e.g. a site-packages
#                          with nvidia-cusolvermp-cu13 installed, or a folder
#                          the wheels were unpacked into; default: the
#                          site-packages of the Python that builds us.
#   JAXMG_CUDA_INCLUDE_DIRS / CUDAToolkit: the CUDA runtime and cuBLAS headers.
# The wheel's nccl.h comes before the toolkit's (which may be older).
set(JAXMG_CUSOLVERMP_ROOT "" CACHE PATH "folder holding nvidia/cu13 and nvidia/nccl (cuSOLVERMp, NCCL)")
if(NOT JAXMG_CUSOLVERMP_ROOT)
  find_package(Python COMPONENTS Interpreter QUIET)
  if(Python_EXECUTABLE)
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"
      OUTPUT_VARIABLE _jmg_site OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    set(JAXMG_CUSOLVERMP_ROOT "${_jmg_site}")
  endif()
endif()

set(_jmg_nv "${JAXMG_CUSOLVERMP_ROOT}/nvidia")
find_path(JAXMG_CUSOLVERMP_INCLUDE cusolverMp.h PATHS "${_jmg_nv}/cu13/include" NO_DEFAULT_PATH)
find_path(JAXMG_NCCL_INCLUDE nccl.h PATHS "${_jmg_nv}/nccl/include" NO_DEFAULT_PATH)
find_library(JAXMG_CUSOLVERMP_LIB NAMES cusolverMp libcusolverMp.so.0
             PATHS "${_jmg_nv}/cu13/lib" NO_DEFAULT_PATH)
find_library(JAXMG_NCCL_LIB NAMES nccl libnccl.so.2 PATHS "${_jmg_nv}/nccl/lib" NO_DEFAULT_PATH)
# Issue 21's cmake/cuda_paths.cmake, where merged, finds the wheels and CUDA
# for every engine: take what it found for anything not found above.
if(COMMAND jaxmg_cuda_find_header)
  if(NOT JAXMG_NCCL_INCLUDE AND JAXMG_CUDA_WHEEL_INCLUDE_DIRS)  # the wheel's nccl.h, not a toolkit's older one
    find_path(JAXMG_NCCL_INCLUDE nccl.h PATHS ${JAXMG_CUDA_WHEEL_INCLUDE_DIRS} NO_DEFAULT_PATH)
  endif()
  if(NOT JAXMG_CUSOLVERMP_INCLUDE)
    jaxmg_cuda_find_header(JAXMG_CUSOLVERMP_INCLUDE cusolverMp.h)
  endif()
  if(NOT JAXMG_NCCL_INCLUDE)
    jaxmg_cuda_find_header(JAXMG_NCCL_INCLUDE nccl.h)
  endif()
  if(NOT JAXMG_CUSOLVERMP_LIB)
    jaxmg_cuda_find_library(JAXMG_CUSOLVERMP_LIB libcusolverMp.so.0 cusolverMp)
  endif()
  if(NOT JAXMG_NCCL_LIB)
    jaxmg_cuda_find_library(JAXMG_NCCL_LIB libnccl.so.2 nccl)
  endif()
endif()
if(DEFINED JAXMG_CUDA_SOURCE AND COMMAND jaxmg_cuda_find_library)
  if(JAXMG_CUDA_SOURCE STREQUAL "none")
    return()
  endif()
  jaxmg_cuda_find_library(_jmg_cublas libcublas.so.${JAXMG_CUDA_MAJOR} cublas)
  jaxmg_cuda_find_library(_jmg_cudart libcudart.so.${JAXMG_CUDA_MAJOR} cudart)
  set(_jmg_cuda_ok TRUE)
  if(NOT _jmg_cublas OR NOT _jmg_cudart)
    set(_jmg_cuda_ok FALSE)
  endif()
  set(_jmg_cuda_incs ${JAXMG_CUDA_INCLUDE_DIRS})
else()
  find_package(CUDAToolkit QUIET)
  set(_jmg_cuda_ok ${CUDAToolkit_FOUND})
  if(_jmg_cuda_ok AND TARGET CUDA::cublas)
    set(_jmg_cublas CUDA::cublas)
    set(_jmg_cudart CUDA::cudart)
  else()
    set(_jmg_cuda_ok FALSE)
  endif()
  set(_jmg_cuda_incs ${JAXMG_CUDA_INCLUDE_DIRS})
endif()
if(NOT JAXMG_CUSOLVERMP_INCLUDE OR NOT JAXMG_NCCL_INCLUDE OR NOT JAXMG_CUSOLVERMP_LIB
   OR NOT JAXMG_NCCL_LIB OR NOT _jmg_cuda_ok)
  message(STATUS "cuSOLVERMp, NCCL or CUDA headers not found under ${JAXMG_CUSOLVERMP_ROOT}: "
                 "not building the cuSOLVERMp engine (set JAXMG_CUSOLVERMP_ROOT)")
  return()
endif()

add_library(jaxmg_mp SHARED
  csrc/engines/mp/mp_comm.c
  csrc/engines/mp/mp_watch.c
  csrc/engines/mp/mp_nccl.c
  csrc/engines/mp/mp_set.c
  csrc/engines/mp/mp_move.c
  csrc/engines/mp/mp_exchange.c
  csrc/engines/mp/mp_ops.c
  csrc/engines/mp/mp_util.c
  csrc/engines/mp/mp_exports.c
  csrc/engines/cuda/gpu_party.c)
target_include_directories(jaxmg_mp BEFORE PRIVATE ${JAXMG_NCCL_INCLUDE} ${JAXMG_CUSOLVERMP_INCLUDE})
target_include_directories(jaxmg_mp PRIVATE ${_jmg_cuda_incs})
# Everything dynamic: cuSOLVERMp itself needs libcudart.so.13, libcublas.so.13
# and libnccl.so.2, which JAX's wheels have loaded by then (one copy each).
target_link_libraries(jaxmg_mp PRIVATE jaxmg_core ${JAXMG_CUSOLVERMP_LIB} ${JAXMG_NCCL_LIB}
                      ${_jmg_cublas} ${_jmg_cudart})
# cuda_paths.cmake's RUNPATH is that of the CUDA major built for (12 or 13).
if(DEFINED JAXMG_CUDA_RUNPATH)
  set(_jmg_runpath "${JAXMG_CUDA_RUNPATH}")
else()
  set(_jmg_runpath "$ORIGIN/../nvidia/cu13/lib;$ORIGIN/../nvidia/nccl/lib;$ORIGIN/../nvidia/cublasmp/cu13/lib")
endif()
set_target_properties(jaxmg_mp PROPERTIES INSTALL_RPATH "${_jmg_runpath}")
install(TARGETS jaxmg_mp LIBRARY DESTINATION jaxmg)
message(STATUS "building the cuSOLVERMp engine against ${JAXMG_CUSOLVERMP_INCLUDE}")
