# The cuSolverMg engine: plain C against the CUDA runtime, built wherever
# the CUDA toolkit is found (it only runs on GPUs). The CUDA runtime is
# linked statically; cuSolverMg and cuSOLVER are found at run time, from
# JAX's own nvidia wheels first (see _cuda_libs.py).
find_package(CUDAToolkit QUIET)
if(CUDAToolkit_FOUND)
  find_library(JAXMG_CUSOLVERMG cusolverMg HINTS ${CUDAToolkit_LIBRARY_DIR})
  find_library(JAXMG_CUSOLVER cusolver HINTS ${CUDAToolkit_LIBRARY_DIR})
endif()
if(NOT CUDAToolkit_FOUND OR NOT JAXMG_CUSOLVERMG OR NOT JAXMG_CUSOLVER)
  message(STATUS "CUDA toolkit or cusolverMg not found: building the host engine only")
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
  csrc/ops/exports_cuda.c)
# cuBLAS (transposes and products of the general ops) is a dependency of
# cuSOLVER anyway, loaded with it from the same wheels.
target_link_libraries(jaxmg_cuda PRIVATE jaxmg_core CUDA::cudart_static ${JAXMG_CUSOLVERMG} ${JAXMG_CUSOLVER}
  CUDA::cublas)
# Found next to the wheels' other CUDA libraries, whichever loads us.
set_target_properties(jaxmg_cuda PROPERTIES
  INSTALL_RPATH "$ORIGIN/../nvidia/cu13/lib;$ORIGIN/../nvidia/cusolver/lib")
install(TARGETS jaxmg_cuda LIBRARY DESTINATION jaxmg)
message(STATUS "building the cuSolverMg engine")
