/* The HIP backend's dispatch table (AMD GPUs): the same host code as CUDA's,
 * bound to the kernels hipcc compiled from backends/gpu (dt_hip_* symbols). */
#define DT_GPU_FN(name) dt_hip_##name
#define DT_GPU_NAME     "hip"
#define DT_GPU_TABLE    dt_hip_ops
#include "../gpu/gpu_ops_impl.h"
