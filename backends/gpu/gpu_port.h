/* Portability layer for the shared GPU kernels (ggml's vendors/hip.h idea):
 * the .cu files are written once against the names below and compiled by
 * nvcc (DT_GPU_CUDA) or by hipcc (DT_GPU_HIP). Nothing else in backends/gpu
 * may name a cuda* or hip* symbol directly, nor assume a warp of 32. */
#ifndef DITATTN_GPU_PORT_H
#define DITATTN_GPU_PORT_H

#if defined(__HIPCC__) || defined(DT_GPU_HIP)
#ifndef DT_GPU_HIP
#define DT_GPU_HIP 1
#endif
#include <hip/hip_runtime.h>
#include <hip/hip_fp16.h>

typedef hipError_t gpuError_t;
typedef hipStream_t gpuStream_t;
#define gpuSuccess                   hipSuccess
#define gpuGetErrorString            hipGetErrorString
#define gpuGetLastError              hipGetLastError
#define gpuGetDeviceCount            hipGetDeviceCount
#define gpuGetDevice                 hipGetDevice
#define gpuSetDevice                 hipSetDevice
#define gpuMalloc                    hipMalloc
#define gpuFree                      hipFree
#define gpuMemcpyAsync               hipMemcpyAsync
#define gpuMemsetAsync               hipMemsetAsync
#define gpuMemcpyHostToDevice        hipMemcpyHostToDevice
#define gpuMemcpyDeviceToHost        hipMemcpyDeviceToHost
#define gpuStreamSynchronize         hipStreamSynchronize
#define gpuIpcMemHandle_t            hipIpcMemHandle_t
#define gpuIpcGetMemHandle           hipIpcGetMemHandle
#define gpuIpcOpenMemHandle          hipIpcOpenMemHandle
#define gpuIpcCloseMemHandle         hipIpcCloseMemHandle
#define gpuIpcLazyPeerAccess         hipIpcMemLazyEnablePeerAccess
#define gpuMemcpy2DAsync             hipMemcpy2DAsync
#define gpuMemcpyDefault             hipMemcpyDefault
#define gpuMallocHost                hipHostMalloc
#define gpuFreeHost                  hipHostFree
#define gpuStreamCreateWithFlags     hipStreamCreateWithFlags
#define gpuStreamNonBlocking         hipStreamNonBlocking
#define gpuStreamDestroy             hipStreamDestroy
#define gpuEvent_t                   hipEvent_t
#define gpuEventCreateWithFlags      hipEventCreateWithFlags
#define gpuEventDisableTiming        hipEventDisableTiming
#define gpuEventDestroy              hipEventDestroy
#define gpuEventRecord               hipEventRecord
#define gpuStreamWaitEvent           hipStreamWaitEvent
#define gpuDeviceGetAttribute        hipDeviceGetAttribute
#define gpuDevAttrMaxSharedPerBlock  hipDeviceAttributeMaxSharedMemoryPerBlock
#define gpuDevAttrMultiProcessors    hipDeviceAttributeMultiprocessorCount
#define gpuFuncSetAttribute(f, a, v) hipFuncSetAttribute((const void *)(f), (a), (v))
#define gpuFuncAttrMaxDynamicShared  hipFuncAttributeMaxDynamicSharedMemorySize
/* Namespaces and C symbol prefixes keep both backends linkable into one library. */
#define DT_GPU_NS       dt_hip_kernels
#define DT_GPU_FN(n)    dt_hip_##n
#define DT_GPU_PLATFORM "hip"
/* CDNA (gfx90a, gfx94x) wavefronts are 64 wide; RDNA (wave32) is not targeted. */
#define DT_WARP 64
/* LDS per workgroup on CDNA. */
#define DT_SMEM_STATIC_MAX 65536

#else /* CUDA */
#ifndef DT_GPU_CUDA
#define DT_GPU_CUDA 1
#endif
#include <cuda_runtime.h>
#include <cuda_fp16.h>

typedef cudaError_t gpuError_t;
typedef cudaStream_t gpuStream_t;
#define gpuSuccess                   cudaSuccess
#define gpuGetErrorString            cudaGetErrorString
#define gpuGetLastError              cudaGetLastError
#define gpuGetDeviceCount            cudaGetDeviceCount
#define gpuGetDevice                 cudaGetDevice
#define gpuSetDevice                 cudaSetDevice
#define gpuMalloc                    cudaMalloc
#define gpuFree                      cudaFree
#define gpuMemcpyAsync               cudaMemcpyAsync
#define gpuMemsetAsync               cudaMemsetAsync
#define gpuMemcpyHostToDevice        cudaMemcpyHostToDevice
#define gpuMemcpyDeviceToHost        cudaMemcpyDeviceToHost
#define gpuStreamSynchronize         cudaStreamSynchronize
#define gpuIpcMemHandle_t            cudaIpcMemHandle_t
#define gpuIpcGetMemHandle           cudaIpcGetMemHandle
#define gpuIpcOpenMemHandle          cudaIpcOpenMemHandle
#define gpuIpcCloseMemHandle         cudaIpcCloseMemHandle
#define gpuIpcLazyPeerAccess         cudaIpcMemLazyEnablePeerAccess
#define gpuMemcpy2DAsync             cudaMemcpy2DAsync
#define gpuMemcpyDefault             cudaMemcpyDefault
#define gpuMallocHost                cudaMallocHost
#define gpuFreeHost                  cudaFreeHost
#define gpuStreamCreateWithFlags     cudaStreamCreateWithFlags
#define gpuStreamNonBlocking         cudaStreamNonBlocking
#define gpuStreamDestroy             cudaStreamDestroy
#define gpuEvent_t                   cudaEvent_t
#define gpuEventCreateWithFlags      cudaEventCreateWithFlags
#define gpuEventDisableTiming        cudaEventDisableTiming
#define gpuEventDestroy              cudaEventDestroy
#define gpuEventRecord               cudaEventRecord
#define gpuStreamWaitEvent           cudaStreamWaitEvent
#define gpuDeviceGetAttribute        cudaDeviceGetAttribute
#define gpuDevAttrMaxSharedPerBlock  cudaDevAttrMaxSharedMemoryPerBlock
#define gpuDevAttrMultiProcessors    cudaDevAttrMultiProcessorCount
#define gpuFuncSetAttribute(f, a, v) cudaFuncSetAttribute((f), (a), (v))
#define gpuFuncAttrMaxDynamicShared  cudaFuncAttributeMaxDynamicSharedMemorySize
#define DT_GPU_NS                    dt_cuda_kernels
#define DT_GPU_FN(n)                 dt_cuda_##n
#define DT_GPU_PLATFORM              "cuda"
#define DT_WARP                      32
/* Static shared memory a block may use without an opt-in. */
#define DT_SMEM_STATIC_MAX           49152
/* Warp-level tensor-core MMA (mma.sync m16n8k16) exists from sm_80. */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define DT_GPU_DEVICE_HAS_MMA 1
#endif
#define DT_GPU_HOST_HAS_MMA 1
#endif

#define DT_HD  __host__ __device__ __forceinline__
#define DT_DEV __device__ __forceinline__

namespace DT_GPU_NS {

/* Lane exchange within a warp of DT_WARP lanes (all lanes participate);
 * T is float, double or int. */
template <typename T> DT_DEV T shfl_xor(T v, int lane_mask) {
#if defined(DT_GPU_HIP)
  return __shfl_xor(v, lane_mask, DT_WARP);
#else
  return __shfl_xor_sync(0xffffffffu, v, lane_mask, DT_WARP);
#endif
}

/* Storage types: raw 16-bit words; arithmetic is always fp32. */
struct bf16_t {
  unsigned short bits;
  static const bool is_bf16 = true;
};
struct f16_t {
  unsigned short bits;
  static const bool is_bf16 = false;
};

DT_DEV float to_f32(float x) { return x; }
DT_DEV float to_f32(bf16_t x) { return __uint_as_float((unsigned)x.bits << 16); }
DT_DEV float to_f32(f16_t x) { return __half2float(__ushort_as_half(x.bits)); }

/* IEEE double ops that the compiler may not fuse into an fma (ref/ computes
 * selection scores with separate multiplies and adds). */
DT_DEV double mul_rn(double a, double b) { return __dmul_rn(a, b); }
DT_DEV double add_rn(double a, double b) { return __dadd_rn(a, b); }

template <typename T> DT_DEV T from_f32(float x);
template <> DT_DEV float from_f32<float>(float x) { return x; }
/* Round to nearest even; NaN stays a (quiet) NaN. */
template <> DT_DEV bf16_t from_f32<bf16_t>(float x) {
  unsigned u = __float_as_uint(x);
  bf16_t r;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    r.bits = (unsigned short)((u >> 16) | 0x40u);
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);
    r.bits = (unsigned short)(u >> 16);
  }
  return r;
}
template <> DT_DEV f16_t from_f32<f16_t>(float x) {
  f16_t r;
  r.bits = __half_as_ushort(__float2half_rn(x));
  return r;
}

} // namespace DT_GPU_NS

#endif /* DITATTN_GPU_PORT_H */
