# The shared GPU kernel sources and headers, for backends/cuda and backends/hip.
set(DITATTN_GPU_DIR ${CMAKE_CURRENT_LIST_DIR})
set(DITATTN_GPU_KERNELS
  ${DITATTN_GPU_DIR}/runtime.cu
  ${DITATTN_GPU_DIR}/small_ops.cu
  ${DITATTN_GPU_DIR}/copy_batch.cu
  ${DITATTN_GPU_DIR}/dense.cu
  ${DITATTN_GPU_DIR}/dense_bwd.cu
  ${DITATTN_GPU_DIR}/llsa.cu
  ${DITATTN_GPU_DIR}/ropeslr.cu)
file(GLOB DITATTN_GPU_HEADERS CONFIGURE_DEPENDS ${DITATTN_GPU_DIR}/*.h ${DITATTN_GPU_DIR}/*.cuh
     ${PROJECT_SOURCE_DIR}/include/ditattn/ditattn.h)

# One standalone GPU-vs-ref checker (bench/gpu_check.c) for whichever GPU
# backends are compiled; runs on the GPU machine without CMocka.
macro(ditattn_add_gpu_check)
  if(NOT TARGET ditattn_gpu_check)
    add_executable(ditattn_gpu_check ${PROJECT_SOURCE_DIR}/bench/gpu_check.c)
    target_link_libraries(ditattn_gpu_check PRIVATE ditattn)
    target_compile_options(ditattn_gpu_check PRIVATE ${DITATTN_C_WARNINGS})
    set_target_properties(ditattn_gpu_check PROPERTIES LINKER_LANGUAGE C)
    # RoPeSLR cases (bench/gpu_check_ropeslr.c, built on gpu_check.c's harness).
    add_executable(ditattn_gpu_check_ropeslr ${PROJECT_SOURCE_DIR}/bench/gpu_check_ropeslr.c)
    target_link_libraries(ditattn_gpu_check_ropeslr PRIVATE ditattn)
    target_compile_options(ditattn_gpu_check_ropeslr PRIVATE ${DITATTN_C_WARNINGS})
    set_target_properties(ditattn_gpu_check_ropeslr PROPERTIES LINKER_LANGUAGE C)
  endif()
  # With the CUDA kernels in the library, --time also times each LLSA stage
  # through the internal launchers (dt_cuda_*, linked from the static library).
  if(TARGET ditattn_cuda_kernels)
    target_compile_definitions(ditattn_gpu_check PRIVATE GC_CUDA_STAGE_TIMES=1)
  endif()
endmacro()

# The kernels' host code is C++ (nvcc's and hipcc's stubs use the C++
# runtime); users of the C library link with the C linker, so name it.
macro(ditattn_link_cxx_runtime)
  if(UNIX AND NOT APPLE)
    target_link_libraries(ditattn PUBLIC stdc++)
  endif()
endmacro()
