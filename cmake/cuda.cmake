# The cuSolverMg engine: plain C against the CUDA runtime, built wherever CUDA
# headers and libraries are found (cuda_paths.cmake: a toolkit, else JAX's
# nvidia wheels); it only runs on GPUs. The CUDA runtime is linked statically;
# cuSolverMg and cuSOLVER are found at run time in the nvidia wheels first
# (RUNPATH below, and _cuda_libs.py, which reads jaxmg_cuda.txt).
include(${CMAKE_CURRENT_LIST_DIR}/cuda_paths.cmake)
# What the GPU library was built for, or why there is none (read by _cuda_libs.py:
# which sonames to load, or what a GPU call's error names as missing).
function(_jaxmg_cuda_info)
  set(text "")
  foreach(kv IN LISTS ARGN)
    string(APPEND text "${kv}\n")
  endforeach()
  file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/jaxmg_cuda.txt CONTENT "${text}")
  install(FILES ${CMAKE_BINARY_DIR}/jaxmg_cuda.txt DESTINATION jaxmg)
endfunction()
if(JAXMG_CUDA_SOURCE STREQUAL "none")
  _jaxmg_cuda_info(cuda_major=${JAXMG_CUDA_MAJOR} source=none
    "missing=${JAXMG_CUDA_MISSING}" "packages=${JAXMG_CUDA_PACKAGES}")
  return()
endif()
# cuSOLVER's soname major: 12 in CUDA 13, 11 in CUDA 12.
math(EXPR _jaxmg_cusolver_so "${JAXMG_CUDA_MAJOR} - 1")
jaxmg_cuda_find_library(JAXMG_CUSOLVERMG cusolverMg libcusolverMg.so.${_jaxmg_cusolver_so})
jaxmg_cuda_find_library(JAXMG_CUSOLVER cusolver libcusolver.so.${_jaxmg_cusolver_so})
if(NOT JAXMG_CUSOLVERMG OR NOT JAXMG_CUSOLVER)
  string(REPLACE ";" " " _dirs "${JAXMG_CUDA_LIBRARY_DIRS}")
  message(WARNING "jaxmg: libcusolverMg.so.${_jaxmg_cusolver_so} or libcusolver.so.${_jaxmg_cusolver_so} "
                  "not found in ${_dirs}: the cuSolverMg engine is NOT built (host engine only)")
  set(_pkg nvidia-cusolver)
  if(JAXMG_CUDA_MAJOR STREQUAL "12")
    set(_pkg nvidia-cusolver-cu12)
  endif()
  _jaxmg_cuda_info(cuda_major=${JAXMG_CUDA_MAJOR} source=none
    "missing=libcusolverMg.so.${_jaxmg_cusolver_so} libcusolver.so.${_jaxmg_cusolver_so}" "packages=${_pkg}")
  return()
endif()
add_library(jaxmg_cuda SHARED
  csrc/engines/cuda/mg_context.c
  csrc/engines/cuda/mg_engine.c
  csrc/engines/cuda/mg_solve.c
  csrc/engines/cuda/dn_solve.c
  csrc/engines/cuda/dn_general.c
  csrc/engines/cuda/gpu_typed.c
  csrc/engines/cuda/mg_getrs.c
  csrc/engines/cuda/gpu_share.c
  csrc/engines/cuda/gpu_vmm.c
  csrc/engines/cuda/gpu_vmm_map.c
  csrc/engines/cuda/gpu_util.c
  csrc/engines/cuda/gpu_party.c
  csrc/ops/exports_cuda.c)
# cuBLAS (transposes and products of the general ops) is a dependency of
# cuSOLVER anyway, found and loaded with it from the same place.
jaxmg_cuda_find_library(JAXMG_CUBLAS cublas libcublas.so.${JAXMG_CUDA_MAJOR})
if(NOT JAXMG_CUBLAS)
  # Not seen at configure time (a wheel tree without it): link by soname,
  # from the same folders as cuSOLVER, which cannot run without it.
  set(JAXMG_CUBLAS "-l:libcublas.so.${JAXMG_CUDA_MAJOR}")
  get_filename_component(_jaxmg_cusolver_dir "${JAXMG_CUSOLVER}" DIRECTORY)
  target_link_directories(jaxmg_cuda PRIVATE ${_jaxmg_cusolver_dir} ${JAXMG_CUDA_LIBRARY_DIRS})
endif()
target_link_libraries(jaxmg_cuda PRIVATE jaxmg_core jaxmg_cudart ${JAXMG_CUSOLVERMG} ${JAXMG_CUSOLVER}
  ${JAXMG_CUBLAS})
# Installed in site-packages/jaxmg: the wheels' libraries are found first.
set_target_properties(jaxmg_cuda PROPERTIES INSTALL_RPATH "${JAXMG_CUDA_RUNPATH}")
_jaxmg_cuda_info(cuda_major=${JAXMG_CUDA_MAJOR} source=${JAXMG_CUDA_SOURCE})
install(TARGETS jaxmg_cuda LIBRARY DESTINATION jaxmg)
message(STATUS "jaxmg: building the cuSolverMg engine (CUDA ${JAXMG_CUDA_MAJOR}, ${JAXMG_CUDA_SOURCE})")
