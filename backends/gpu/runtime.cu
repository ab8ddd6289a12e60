/* Runtime wrappers behind gpu_api.h: the only place the host C code reaches
 * the CUDA/HIP runtime. */
#include "gpu_common.cuh"

#include <string.h>

extern "C" {

const char *DT_GPU_FN(error_string)(int err) {
  if (err == DT_GPU_NOT_IMPLEMENTED) return "configuration not implemented by this kernel";
  return gpuGetErrorString((gpuError_t)err);
}

void DT_GPU_FN(clear_error)(void) { (void)gpuGetLastError(); }

int DT_GPU_FN(device_count)(int *count) {
  int n = 0;
  gpuError_t e = gpuGetDeviceCount(&n);
  *count = e == gpuSuccess ? n : 0;
  return (int)e;
}

int DT_GPU_FN(get_device)(int *device) {
  *device = -1;
  return (int)gpuGetDevice(device);
}

int DT_GPU_FN(set_device)(int device) { return (int)gpuSetDevice(device); }

int DT_GPU_FN(malloc)(void **ptr, size_t bytes) {
  *ptr = NULL;
  return (int)gpuMalloc(ptr, bytes ? bytes : 1);
}

int DT_GPU_FN(free)(void *ptr) { return ptr ? (int)gpuFree(ptr) : 0; }

int DT_GPU_FN(copy_h2d)(void *dst, const void *host_src, size_t bytes, void *stream) {
  gpuError_t e = gpuMemcpyAsync(dst, host_src, bytes, gpuMemcpyHostToDevice, (gpuStream_t)stream);
  /* The host buffer may be freed right after we return. */
  if (e == gpuSuccess) e = gpuStreamSynchronize((gpuStream_t)stream);
  return (int)e;
}

int DT_GPU_FN(copy_d2h)(void *host_dst, const void *src, size_t bytes, void *stream) {
  gpuError_t e = gpuMemcpyAsync(host_dst, src, bytes, gpuMemcpyDeviceToHost, (gpuStream_t)stream);
  if (e == gpuSuccess) e = gpuStreamSynchronize((gpuStream_t)stream);
  return (int)e;
}

int DT_GPU_FN(stream_sync)(void *stream) { return (int)gpuStreamSynchronize((gpuStream_t)stream); }

static_assert(sizeof(gpuIpcMemHandle_t) == DT_GPU_IPC_HANDLE_BYTES, "IPC handle size");

int DT_GPU_FN(ipc_export)(void *base, void *handle) {
  gpuIpcMemHandle_t h;
  gpuError_t e = gpuIpcGetMemHandle(&h, base);
  if (e == gpuSuccess) memcpy(handle, &h, sizeof h);
  return (int)e;
}

int DT_GPU_FN(ipc_open)(const void *handle, void **ptr) {
  gpuIpcMemHandle_t h;
  memcpy(&h, handle, sizeof h);
  *ptr = NULL;
  /* Lazy peer access: kernels on this device may read the peer's memory
   * directly (NVLink/xGMI) without a separate enable call. */
  return (int)gpuIpcOpenMemHandle(ptr, h, gpuIpcLazyPeerAccess);
}

int DT_GPU_FN(ipc_close)(void *ptr) { return ptr ? (int)gpuIpcCloseMemHandle(ptr) : 0; }

int DT_GPU_FN(copy_2d)(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                       size_t height, void *stream) {
  return (int)gpuMemcpy2DAsync(dst, dpitch, src, spitch, width, height, gpuMemcpyDefault,
                               (gpuStream_t)stream);
}

int DT_GPU_FN(host_alloc)(void **ptr, size_t bytes) {
  *ptr = NULL;
  return (int)gpuMallocHost(ptr, bytes ? bytes : 1);
}

int DT_GPU_FN(host_free)(void *ptr) { return ptr ? (int)gpuFreeHost(ptr) : 0; }

int DT_GPU_FN(side_stream_create)(void **stream, void **event) {
  gpuStream_t s = nullptr;
  gpuEvent_t e = nullptr;
  *stream = *event = nullptr;
  /* Non-blocking: no implicit ordering with the legacy default stream a
   * caller's context may use. */
  int err = (int)gpuStreamCreateWithFlags(&s, gpuStreamNonBlocking);
  if (!err) err = (int)gpuEventCreateWithFlags(&e, gpuEventDisableTiming);
  if (err) {
    if (s) (void)gpuStreamDestroy(s);
    return err;
  }
  *stream = (void *)s;
  *event = (void *)e;
  return 0;
}

int DT_GPU_FN(side_stream_destroy)(void *stream, void *event) {
  int err = event ? (int)gpuEventDestroy((gpuEvent_t)event) : 0;
  int err2 = stream ? (int)gpuStreamDestroy((gpuStream_t)stream) : 0;
  return err ? err : err2;
}

int DT_GPU_FN(stream_wait)(void *waiter, void *signaller, void *event) {
  int err = (int)gpuEventRecord((gpuEvent_t)event, (gpuStream_t)signaller);
  return err ? err : (int)gpuStreamWaitEvent((gpuStream_t)waiter, (gpuEvent_t)event, 0);
}

int DT_GPU_FN(event_create)(void **event) {
  gpuEvent_t e = nullptr;
  *event = nullptr;
  int err = (int)gpuEventCreateWithFlags(&e, gpuEventDisableTiming);
  if (!err) *event = (void *)e;
  return err;
}

int DT_GPU_FN(event_destroy)(void *event) {
  return event ? (int)gpuEventDestroy((gpuEvent_t)event) : 0;
}

int DT_GPU_FN(event_record)(void *event, void *stream) {
  return (int)gpuEventRecord((gpuEvent_t)event, (gpuStream_t)stream);
}

int DT_GPU_FN(stream_wait_event)(void *stream, void *event) {
  return (int)gpuStreamWaitEvent((gpuStream_t)stream, (gpuEvent_t)event, 0);
}

} // extern "C"
