/* Tables of backends that this build leaves out: NULL means "not compiled". */
#include "backend.h"

#ifndef DITATTN_HAVE_CPU
const dt_backend_ops *dt_cpu_ops(void) { return NULL; }
#endif
#ifndef DITATTN_HAVE_CUDA
const dt_backend_ops *dt_cuda_ops(void) { return NULL; }
#endif
#ifndef DITATTN_HAVE_HIP
const dt_backend_ops *dt_hip_ops(void) { return NULL; }
#endif
