/* Tables of backends that this build leaves out (NULL means "not
 * compiled"), and device selection over the tables. */
#include "backend.h"
#include "validate.h"

#ifndef DITATTN_HAVE_CPU
const dt_backend_ops *dt_cpu_ops(void) { return NULL; }
#endif
#ifndef DITATTN_HAVE_CUDA
const dt_backend_ops *dt_cuda_ops(void) { return NULL; }
#endif
#ifndef DITATTN_HAVE_HIP
const dt_backend_ops *dt_hip_ops(void) { return NULL; }
#endif

/* Device selection: host backends have the one device 0; GPU backends
 * answer through their table's device_count / bind_device. */
ditattn_status ditattn_device_count(ditattn_backend backend, int *count) {
  if (!count) return DITATTN_ERR_NULL_POINTER;
  *count = 0;
  if ((int)backend < 0 || backend >= DITATTN_BACKEND_COUNT) return DITATTN_ERR_INVALID_ARGUMENT;
  const dt_backend_ops *ops = dt_backend_table(backend);
  if (!ops) return DITATTN_ERR_BACKEND_UNAVAILABLE;
  if (!ops->device_count) {
    *count = 1;
    return DITATTN_OK;
  }
  ditattn_status st = ops->device_count(count);
  if (st == DITATTN_OK && *count < 1) st = DITATTN_ERR_BACKEND_UNAVAILABLE;
  if (st != DITATTN_OK) *count = 0;
  return st;
}

ditattn_status ditattn_context_create_on_device(ditattn_backend backend, int device,
                                                ditattn_context **ctx) {
  if (!ctx) return DITATTN_ERR_NULL_POINTER;
  *ctx = NULL;
  int count = 0;
  TRY(ditattn_device_count(backend, &count));
  if (device < 0 || device >= count) return DITATTN_ERR_INVALID_ARGUMENT;
  ditattn_context *c = NULL;
  TRY(ditattn_context_create(backend, &c));
  if (c->ops->bind_device) {
    ditattn_status st = c->ops->bind_device(c, device);
    if (st != DITATTN_OK) {
      ditattn_context_destroy(c);
      return st;
    }
  }
  *ctx = c;
  return DITATTN_OK;
}
