# Where the GPU engines' CUDA headers and libraries come from: a CUDA toolkit
# where there is one, else the nvidia wheels of the Python environment we build
# against (JAX's own: jax[cuda13] or jax[cuda12]). The engines are plain C, so
# no nvcc is needed, only headers and libraries to link. Sets, for every GPU
# engine's cmake file (see /work/coord/NOTES.md and docs/install.md):
#   JAXMG_CUDA_SOURCE        toolkit | wheels | none (then JAXMG_CUDA_MISSING: the
#                            headers not found, JAXMG_CUDA_PACKAGES: pip packages with them)
#   JAXMG_CUDA_MAJOR         12 | 13
#   JAXMG_CUDA_INCLUDE_DIRS  CUDA runtime, cuBLAS and cuSOLVER headers
#   JAXMG_CUDA_LIBRARY_DIRS  where their libraries are
#   JAXMG_CUDA_WHEEL_INCLUDE_DIRS, JAXMG_CUDA_WHEEL_LIBRARY_DIRS
#                            every include/lib folder of that CUDA major's wheels
#                            (nccl.h, cusolverMp.h: no toolkit has them)
#   JAXMG_CUDA_RUNPATH       $ORIGIN/../nvidia/... for a library installed in
#                            site-packages/jaxmg: the wheels are found first
#   jaxmg_cuda_find_header(VAR header), jaxmg_cuda_find_library(VAR name...)
# Switches: -DJAXMG_CUDA_FROM=auto|toolkit|wheels, -DJAXMG_CUDA_MAJOR_WANTED=auto|12|13,
# -DJAXMG_NVIDIA_DIRS=<folders named nvidia> (default: asked from Python).

include_guard(GLOBAL)
set(JAXMG_CUDA_FROM "auto" CACHE STRING "Where CUDA comes from: auto (toolkit, else wheels), toolkit, wheels")
set_property(CACHE JAXMG_CUDA_FROM PROPERTY STRINGS auto toolkit wheels)
set(JAXMG_CUDA_MAJOR_WANTED "auto" CACHE STRING "CUDA major of the wheels: auto (that of JAX's CUDA plugin), 12, 13")
set(JAXMG_NVIDIA_DIRS "" CACHE STRING "Folders named nvidia holding CUDA wheels (default: the Python environment's)")

# The headers each CUDA major needs, and the pip package that ships each one
# (named in the message when one is missing).
# crt/ comes with nvcc's wheel, nv/target (included by cuda_fp16.h, which
# cuBLAS's headers include) with CCCL's.
set(_jaxmg_cuda_headers cuda_runtime_api.h cudaTypedefs.h crt/host_defines.h nv/target
    cublas_v2.h cusolverDn.h cusolverMg.h)
set(_jaxmg_pkg13_cuda_runtime_api.h nvidia-cuda-runtime)
set(_jaxmg_pkg13_cudaTypedefs.h nvidia-cuda-runtime)
set(_jaxmg_pkg13_crt/host_defines.h nvidia-cuda-crt)
set(_jaxmg_pkg13_nv/target nvidia-cuda-cccl)
set(_jaxmg_pkg13_cublas_v2.h nvidia-cublas)
set(_jaxmg_pkg13_cusolverDn.h nvidia-cusolver)
set(_jaxmg_pkg13_cusolverMg.h nvidia-cusolver)
set(_jaxmg_pkg12_cuda_runtime_api.h nvidia-cuda-runtime-cu12)
set(_jaxmg_pkg12_cudaTypedefs.h nvidia-cuda-runtime-cu12)
set(_jaxmg_pkg12_crt/host_defines.h nvidia-cuda-nvcc-cu12)
set(_jaxmg_pkg12_nv/target nvidia-cuda-cccl-cu12)
set(_jaxmg_pkg12_cublas_v2.h nvidia-cublas-cu12)
set(_jaxmg_pkg12_cusolverDn.h nvidia-cusolver-cu12)
set(_jaxmg_pkg12_cusolverMg.h nvidia-cusolver-cu12)
# Wheel folders under site-packages/nvidia, per CUDA major. cu13 wheels share
# nvidia/cu13; cu12 wheels have one folder per library.
set(_jaxmg_wheel_dirs13 cu13 nccl cublasmp/cu13 nvshmem)
set(_jaxmg_wheel_dirs12 cuda_runtime cuda_nvcc cuda_cccl cublas cusolver cusparse nvjitlink nccl cu12
    cublasmp/cu12 nvshmem)
# Where the libraries the engines link are, for the RUNPATH.
set(_jaxmg_runpath13 cu13 nccl cublasmp/cu13)
set(_jaxmg_runpath12 cusolver cublas cusparse nvjitlink cuda_runtime nccl cu12 cublasmp/cu12)

# The nvidia package folders of the Python environment, and the CUDA major of
# JAX's CUDA plugin there. Asked twice: as the build runs Python, and with -I,
# which drops pip's build isolation and sees the environment pip was run from.
function(_jaxmg_python_nvidia out_dirs out_plugin)
  if(NOT Python_EXECUTABLE)
    find_package(Python COMPONENTS Interpreter QUIET)
  endif()
  set(dirs "")
  set(plugin "")
  if(Python_EXECUTABLE)
    set(probe [=[
import importlib.util as u
try:
    import nvidia
    for p in nvidia.__path__: print("dir=" + p)
except ImportError:
    pass
for major, names in (("13", ("jax_plugins.xla_cuda13", "jax_cuda13_plugin")),
                     ("12", ("jax_plugins.xla_cuda12", "jax_cuda12_plugin"))):
    for n in names:
        try:
            if u.find_spec(n): print("plugin=" + major)
        except Exception:
            pass
]=])
    foreach(flag "" "-I")
      execute_process(COMMAND "${Python_EXECUTABLE}" ${flag} -c "${probe}"
        OUTPUT_VARIABLE out ERROR_QUIET RESULT_VARIABLE rc)
      if(rc EQUAL 0)
        string(REPLACE "\n" ";" lines "${out}")
        foreach(l IN LISTS lines)
          if(l MATCHES "^dir=(.+)$")
            list(APPEND dirs "${CMAKE_MATCH_1}")
          elseif(l MATCHES "^plugin=(.+)$" AND NOT plugin)
            set(plugin "${CMAKE_MATCH_1}")
          endif()
        endforeach()
      endif()
    endforeach()
    list(REMOVE_DUPLICATES dirs)
  endif()
  set(${out_dirs} "${dirs}" PARENT_SCOPE)
  set(${out_plugin} "${plugin}" PARENT_SCOPE)
endfunction()

# include/ and lib/ folders of one CUDA major's wheels under the nvidia folders.
function(_jaxmg_wheel_folders major roots out_inc out_lib)
  set(inc "")
  set(lib "")
  foreach(root IN LISTS roots)
    foreach(sub IN LISTS _jaxmg_wheel_dirs${major})
      if(IS_DIRECTORY "${root}/${sub}/include")
        list(APPEND inc "${root}/${sub}/include")
      endif()
      if(IS_DIRECTORY "${root}/${sub}/lib")
        list(APPEND lib "${root}/${sub}/lib")
      endif()
    endforeach()
  endforeach()
  set(${out_inc} "${inc}" PARENT_SCOPE)
  set(${out_lib} "${lib}" PARENT_SCOPE)
endfunction()

# The CUDA major of a folder of CUDA headers (CUDART_VERSION 13000 -> 13), or "".
function(_jaxmg_header_major dir out)
  set(major "")
  if(EXISTS "${dir}/cuda_runtime_api.h")
    file(STRINGS "${dir}/cuda_runtime_api.h" line REGEX "^#define CUDART_VERSION +[0-9]+")
    if(line MATCHES "([0-9]+)[0-9][0-9][0-9]$")
      set(major "${CMAKE_MATCH_1}")
    endif()
  endif()
  set(${out} "${major}" PARENT_SCOPE)
endfunction()

function(jaxmg_cuda_find_header var header)
  find_path(${var} "${header}" PATHS ${JAXMG_CUDA_INCLUDE_DIRS} ${JAXMG_CUDA_WHEEL_INCLUDE_DIRS}
    NO_DEFAULT_PATH NO_CACHE)
  set(${var} "${${var}}" PARENT_SCOPE)
endfunction()

# Names may be sonames (libnccl.so.2): the wheels ship no unversioned .so.
function(jaxmg_cuda_find_library var)
  find_library(${var} NAMES ${ARGN} PATHS ${JAXMG_CUDA_LIBRARY_DIRS} ${JAXMG_CUDA_WHEEL_LIBRARY_DIRS}
    NO_DEFAULT_PATH NO_CACHE)
  set(${var} "${${var}}" PARENT_SCOPE)
endfunction()

# ---- the toolkit ------------------------------------------------------------
set(JAXMG_CUDA_SOURCE none)
set(JAXMG_CUDA_INCLUDE_DIRS "")
set(JAXMG_CUDA_LIBRARY_DIRS "")
set(_jaxmg_toolkit_major "")
if(NOT JAXMG_CUDA_FROM STREQUAL "wheels")
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(_jaxmg_toolkit_major "${CUDAToolkit_VERSION_MAJOR}")
  elseif(JAXMG_CUDA_FROM STREQUAL "toolkit")
    message(FATAL_ERROR "jaxmg: -DJAXMG_CUDA_FROM=toolkit, but no CUDA toolkit found (set CUDAToolkit_ROOT)")
  endif()
endif()

# ---- the wheels ---------------------------------------------------------------
if(JAXMG_NVIDIA_DIRS)
  set(_jaxmg_roots "${JAXMG_NVIDIA_DIRS}")
  set(_jaxmg_plugin "")
else()
  _jaxmg_python_nvidia(_jaxmg_roots _jaxmg_plugin)
endif()
# The major wanted: asked for, else JAX's plugin's, else the toolkit's, else
# whichever wheels are there (13 first).
set(_jaxmg_major "${JAXMG_CUDA_MAJOR_WANTED}")
if(_jaxmg_major STREQUAL "auto")
  set(_jaxmg_major "${_jaxmg_plugin}")
endif()
if(NOT _jaxmg_major AND _jaxmg_toolkit_major AND NOT JAXMG_CUDA_FROM STREQUAL "wheels")
  set(_jaxmg_major "${_jaxmg_toolkit_major}")
endif()
if(NOT _jaxmg_major)
  foreach(m 13 12)
    _jaxmg_wheel_folders(${m} "${_jaxmg_roots}" _inc _lib)
    foreach(d IN LISTS _inc)
      _jaxmg_header_major("${d}" _hm)
      if(_hm STREQUAL m AND NOT _jaxmg_major)
        set(_jaxmg_major ${m})
      endif()
    endforeach()
  endforeach()
endif()
set(JAXMG_CUDA_WHEEL_INCLUDE_DIRS "")
set(JAXMG_CUDA_WHEEL_LIBRARY_DIRS "")
if(_jaxmg_major)
  _jaxmg_wheel_folders(${_jaxmg_major} "${_jaxmg_roots}"
    JAXMG_CUDA_WHEEL_INCLUDE_DIRS JAXMG_CUDA_WHEEL_LIBRARY_DIRS)
endif()

# ---- choose -------------------------------------------------------------------
# The toolkit, unless it is of another CUDA major than JAX's (its libraries would
# not be the ones JAX loads) and that major's wheels are complete.
set(_jaxmg_missing "")
foreach(h IN LISTS _jaxmg_cuda_headers)
  find_path(_found "${h}" PATHS ${JAXMG_CUDA_WHEEL_INCLUDE_DIRS} NO_DEFAULT_PATH NO_CACHE)
  if(_found)
    string(REGEX REPLACE "/$" "" _found "${_found}")
    list(APPEND JAXMG_CUDA_INCLUDE_DIRS "${_found}")
  else()
    list(APPEND _jaxmg_missing "${h}")
  endif()
  unset(_found)
endforeach()
set(_jaxmg_wheels_ok FALSE)
if(_jaxmg_major AND NOT _jaxmg_missing)
  set(_jaxmg_wheels_ok TRUE)
endif()
if(_jaxmg_toolkit_major AND (_jaxmg_toolkit_major STREQUAL _jaxmg_major OR NOT _jaxmg_wheels_ok
                              OR JAXMG_CUDA_FROM STREQUAL "toolkit"))
  set(JAXMG_CUDA_SOURCE toolkit)
  set(JAXMG_CUDA_MAJOR "${_jaxmg_toolkit_major}")
  set(JAXMG_CUDA_INCLUDE_DIRS "${CUDAToolkit_INCLUDE_DIRS}")
  set(JAXMG_CUDA_LIBRARY_DIRS "${CUDAToolkit_LIBRARY_DIR}")
  if(_jaxmg_major AND NOT _jaxmg_major STREQUAL _jaxmg_toolkit_major)
    message(WARNING "jaxmg: the CUDA toolkit is CUDA ${_jaxmg_toolkit_major} but JAX's CUDA plugin "
                    "is CUDA ${_jaxmg_major}: the GPU engines will look for CUDA ${_jaxmg_toolkit_major} libraries")
  endif()
  if(NOT _jaxmg_major STREQUAL JAXMG_CUDA_MAJOR)
    _jaxmg_wheel_folders(${JAXMG_CUDA_MAJOR} "${_jaxmg_roots}"
      JAXMG_CUDA_WHEEL_INCLUDE_DIRS JAXMG_CUDA_WHEEL_LIBRARY_DIRS)
  endif()
elseif(_jaxmg_wheels_ok AND NOT JAXMG_CUDA_FROM STREQUAL "toolkit")
  set(JAXMG_CUDA_SOURCE wheels)
  set(JAXMG_CUDA_MAJOR "${_jaxmg_major}")
  list(REMOVE_DUPLICATES JAXMG_CUDA_INCLUDE_DIRS)
  set(JAXMG_CUDA_LIBRARY_DIRS "${JAXMG_CUDA_WHEEL_LIBRARY_DIRS}")
endif()

if(JAXMG_CUDA_SOURCE STREQUAL "none")
  # Say what is missing and how to get it, loudly: the GPU engines will not be built.
  if(NOT _jaxmg_major)
    set(_jaxmg_major 13)
  endif()
  set(_pkgs "")
  foreach(h IN LISTS _jaxmg_missing)
    list(APPEND _pkgs "${_jaxmg_pkg${_jaxmg_major}_${h}}")
  endforeach()
  list(REMOVE_DUPLICATES _pkgs)
  string(REPLACE ";" " " _pkgs "${_pkgs}")
  string(REPLACE ";" " " _missing "${_jaxmg_missing}")
  string(REPLACE ";" " " _roots "${_jaxmg_roots}")
  if(NOT _roots)
    set(_roots "(none found)")
  endif()
  set(JAXMG_CUDA_MAJOR "${_jaxmg_major}")
  set(JAXMG_CUDA_MISSING "${_missing}")
  set(JAXMG_CUDA_PACKAGES "${_pkgs}")
  message(WARNING
    "jaxmg: NO CUDA FOUND, building the host (CPU) engine only; GPU calls will fail.\n"
    "  No CUDA toolkit (nvcc, CUDAToolkit_ROOT), and the nvidia wheels in ${_roots} lack: "
    "${_missing} (packages: ${_pkgs}).\n"
    "  Fix: pip install ${_pkgs} (or pip install \".[cuda${_jaxmg_major}]\" from jaxmg's source, "
    "which brings every GPU engine's wheels), then rebuild jaxmg.")
  return()
endif()

set(JAXMG_CUDA_RUNPATH "")
foreach(sub IN LISTS _jaxmg_runpath${JAXMG_CUDA_MAJOR})
  list(APPEND JAXMG_CUDA_RUNPATH "$ORIGIN/../nvidia/${sub}/lib")
endforeach()

# The CUDA runtime is linked statically (the toolkit's or the wheel's
# libcudart_static.a: both CUDA 12 and 13 runtime wheels ship it), so the engine
# needs no libcudart at run time and calls the runtime it was compiled against.
add_library(jaxmg_cuda_headers INTERFACE)
target_include_directories(jaxmg_cuda_headers SYSTEM INTERFACE ${JAXMG_CUDA_INCLUDE_DIRS})
add_library(jaxmg_cudart INTERFACE)
if(JAXMG_CUDA_SOURCE STREQUAL "toolkit")
  target_link_libraries(jaxmg_cudart INTERFACE jaxmg_cuda_headers CUDA::cudart_static)
else()
  jaxmg_cuda_find_library(_jaxmg_cudart_static libcudart_static.a)
  if(NOT _jaxmg_cudart_static)
    message(FATAL_ERROR "jaxmg: the CUDA runtime wheel has no libcudart_static.a in ${JAXMG_CUDA_LIBRARY_DIRS}")
  endif()
  find_package(Threads REQUIRED)
  target_link_libraries(jaxmg_cudart INTERFACE jaxmg_cuda_headers "${_jaxmg_cudart_static}"
    Threads::Threads ${CMAKE_DL_LIBS} rt)
endif()

string(REPLACE ";" " " _inc "${JAXMG_CUDA_INCLUDE_DIRS}")
message(STATUS "jaxmg: CUDA ${JAXMG_CUDA_MAJOR} from the ${JAXMG_CUDA_SOURCE} (headers: ${_inc})")
