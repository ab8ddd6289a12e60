/* The CUDA backend's dispatch table: the shared GPU host code of
 * backends/gpu bound to the kernels nvcc compiled (dt_cuda_* symbols). */
#define DT_GPU_FN(name) dt_cuda_##name
#define DT_GPU_NAME     "cuda"
#define DT_GPU_TABLE    dt_cuda_ops
#include "../gpu/gpu_ops_impl.h"
