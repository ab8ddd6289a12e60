/* The C seam between the host side of a GPU backend (gpu_ops_impl.h, plain C)
 * and the shared kernels (*.cu, compiled by nvcc or hipcc). Every function is
 * extern "C", named through DT_GPU_FN (dt_cuda_* or dt_hip_*), and returns 0
 * or the runtime's error code (see DT_GPU_FN(error_string)). Streams are
 * passed as void * (cudaStream_t / hipStream_t). All pointers here are device
 * pointers unless named host_*. */
#ifndef DITATTN_GPU_API_H
#define DITATTN_GPU_API_H

#include "ditattn/ditattn.h"

#include <stddef.h>
#include <stdint.h>

#ifndef DT_GPU_FN
#error "define DT_GPU_FN (the backend's symbol prefix) before including gpu_api.h"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Returned by launchers for a configuration they do not implement (e.g. the
 * tensor-core path on a platform without it); never a runtime error code. */
#define DT_GPU_NOT_IMPLEMENTED (-1)

/* ------------------------------------------------------------ runtime */
const char *DT_GPU_FN(error_string)(int err);
/* Resets the thread's last runtime error, which a failed call (a bad copy
 * argument, an allocation) leaves behind and the next kernel launch's check
 * would report as its own; sticky errors (a faulted context) stay. */
void DT_GPU_FN(clear_error)(void);
int DT_GPU_FN(device_count)(int *count);
/* The calling thread's current device (a context bound to a device makes it
 * current for the duration of each call; see gpu_ops_impl.h). */
int DT_GPU_FN(get_device)(int *device);
int DT_GPU_FN(set_device)(int device);
int DT_GPU_FN(malloc)(void **ptr, size_t bytes);
int DT_GPU_FN(free)(void *ptr);
int DT_GPU_FN(copy_h2d)(void *dst, const void *host_src, size_t bytes, void *stream);
int DT_GPU_FN(copy_d2h)(void *host_dst, const void *src, size_t bytes, void *stream);
int DT_GPU_FN(stream_sync)(void *stream);
/* IPC: handle holds DT_GPU_IPC_HANDLE_BYTES; base is a malloc'd allocation. */
#define DT_GPU_IPC_HANDLE_BYTES 64
int DT_GPU_FN(ipc_export)(void *base, void *handle);
int DT_GPU_FN(ipc_open)(const void *handle, void **ptr);
int DT_GPU_FN(ipc_close)(void *ptr);
/* Strided device-to-device copy (cudaMemcpy2DAsync, any device). */
int DT_GPU_FN(copy_2d)(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                       size_t height, void *stream);
/* One strided copy of a batch: backend.h's dt_copy_2d_desc, field for field. */
typedef struct dt_gpu_copy_2d {
  void *dst;
  const void *src;
  size_t dpitch, spitch, width, height;
} dt_gpu_copy_2d;
/* Every entry's strided copy, any device's memory to any (peers' mapped
 * buffers included), on the SMs in one launch per 32 entries; entries may
 * run concurrently and must not overlap. Pitches are not checked here. */
int DT_GPU_FN(launch_copy_2d_batch)(const dt_gpu_copy_2d *copies, int count, void *stream);
/* Page-locked host memory. */
int DT_GPU_FN(host_alloc)(void **ptr, size_t bytes);
int DT_GPU_FN(host_free)(void *ptr);
/* A second stream (non-blocking) and an event for ordering it against
 * another stream; stream_wait makes `waiter` wait on the device for the
 * work queued on `signaller` so far (records event on it). */
int DT_GPU_FN(side_stream_create)(void **stream, void **event);
int DT_GPU_FN(side_stream_destroy)(void *stream, void *event);
int DT_GPU_FN(stream_wait)(void *waiter, void *signaller, void *event);
/* Events on their own (the side stream's marks): record on a stream, and
 * make a stream wait for the last record. */
int DT_GPU_FN(event_create)(void **event);
int DT_GPU_FN(event_destroy)(void *event);
int DT_GPU_FN(event_record)(void *event, void *stream);
int DT_GPU_FN(stream_wait_event)(void *stream, void *event);

/* ------------------------------------------------------------ small ops */
/* y[c] = mean of x over tokens [c·block, min((c+1)·block, N)); same dtype. */
int DT_GPU_FN(launch_pool)(const ditattn_tensor *x, const ditattn_tensor *y, int64_t block,
                           void *stream);
/* pos: device, N triples (t, y, x). */
int DT_GPU_FN(launch_rope)(const ditattn_tensor *x, const ditattn_tensor *y, const int32_t *pos,
                           const int64_t dims[3], double theta, int half_split, int inverse,
                           void *stream);
/* seq_to_raster: device, N entries. */
int DT_GPU_FN(launch_order)(const ditattn_tensor *x, const ditattn_tensor *y,
                            const int64_t *seq_to_raster, int inverse, void *stream);
int DT_GPU_FN(launch_lse_merge)(const ditattn_tensor *out_acc, float *lse_acc,
                                const ditattn_tensor *out_part, const float *lse_part,
                                void *stream);

/* ------------------------------------------------------------ dense */
/* Tensor-core path (bf16/f16, D in {64, 128}, 16-byte aligned rows); returns
 * DT_GPU_NOT_IMPLEMENTED when the problem or platform does not fit it. */
int DT_GPU_FN(launch_dense_mma)(const ditattn_tensor *q, const ditattn_tensor *k,
                                const ditattn_tensor *v, const ditattn_tensor *out, float *lse,
                                float scale, void *stream);
/* fp32-arithmetic path: any dtype, any D <= DT_GPU_MAX_D, any strides. */
#define DT_GPU_MAX_D 256
int DT_GPU_FN(launch_dense_f32)(const ditattn_tensor *q, const ditattn_tensor *k,
                                const ditattn_tensor *v, const ditattn_tensor *out, float *lse,
                                float scale, void *stream);

/* Backward: tensors = {q, k, v, out, dout, dq, dk, dv}; lse: the forward's
 * [B·H][Nq]; delta: scratch of B·H·Nq floats. fp32 arithmetic, D <= 256. */
int DT_GPU_FN(launch_dense_bwd)(const ditattn_tensor *const tensors[8], const float *lse,
                                float scale, float *delta, void *stream);

/* ------------------------------------------------------------ LLSA */
/* Device-side description of one LLSA forward (spec §1-3). Index l below is
 * the level (1..L); arrays are indexed [l - 1] for levels, [l] for n/span. */
typedef struct dt_gpu_llsa {
  int64_t B, H, N, D, b;
  int L;
  float scale;
  int64_t n[DITATTN_LLSA_MAX_LEVELS + 1];    /* n[l] = ceil(N / b^l), n[0] = N */
  int64_t span[DITATTN_LLSA_MAX_LEVELS + 1]; /* min(b^l, N): tokens of a full level-l block */
  int64_t keff[DITATTN_LLSA_MAX_LEVELS];     /* min(K_l, n_l): selection width kept on device */
  /* Pooled means: double for the selection (bit-identical to ref/), f32
   * for the attention, [B·H][n_l][D] except pk64, [B·H][D][n_l] (the
   * selection's lanes, one candidate block each, read consecutive
   * addresses). */
  double *pq64[DITATTN_LLSA_MAX_LEVELS];
  double *pk64[DITATTN_LLSA_MAX_LEVELS];
  float *pk[DITATTN_LLSA_MAX_LEVELS];
  float *pv[DITATTN_LLSA_MAX_LEVELS];
  int32_t *sel[DITATTN_LLSA_MAX_LEVELS]; /* [B·H][n_l][keff_l], -1 padded */
  /* Query rows [q_lo, q_hi) are computed (out row 0 is row q_lo); level l
   * selects its blocks [blk_lo[l], blk_lo[l] + blk_n[l]), those the rows
   * touch (all n_l blocks for a whole-sequence call). */
  int64_t q_lo, q_hi;
  int64_t blk_lo[DITATTN_LLSA_MAX_LEVELS + 1];
  int64_t blk_n[DITATTN_LLSA_MAX_LEVELS + 1];
  /* Which pooled k, v the pool launch computes: dist/ splits them between
   * the ranks as a key summary (backend.h dt_key_summary). Zero is the
   * whole forward's DT_GPU_KV_ALL, so that a zeroed struct filled field by
   * field (bench/gpu_check.c) keeps today's behaviour. */
  int kv_pool;
  int64_t kv_lo[DITATTN_LLSA_MAX_LEVELS + 1]; /* DT_GPU_KV_RANGE: level l's units */
  int64_t kv_n[DITATTN_LLSA_MAX_LEVELS + 1];  /* [kv_lo[l], kv_lo[l] + kv_n[l]) */
} dt_gpu_llsa;

enum {
  DT_GPU_KV_ALL = 0,   /* pk64, pk and pv of every unit */
  DT_GPU_KV_RANGE = 1, /* pk64 and pv of units [kv_lo, kv_lo + kv_n) only (summary fill) */
  DT_GPU_KV_READY = 2  /* none: pk64 and pv are given (summary read), pk is cast from pk64 */
};

/* Pooled means of every level in one launch (spec §1): q of each level's
 * query blocks [blk_lo, blk_lo + blk_n), k and v of the units kv_pool says;
 * for DT_GPU_KV_READY (pk64 from the key summary) also pk = (float)pk64 of
 * every unit, what pooling would have written. */
int DT_GPU_FN(launch_llsa_pool)(const dt_gpu_llsa *p, const ditattn_tensor *q,
                                const ditattn_tensor *k, const ditattn_tensor *v, void *stream);
/* Candidates per query block of `level`: n_L at the coarsest level,
 * keff_{l+1}·b below it. */
int64_t DT_GPU_FN(llsa_candidates)(const dt_gpu_llsa *p, int level);
/* Scores and top-K for query-block rows [row0, row0 + rows) of `level`
 * (row w is block blk_lo[level] + w % blk_n[level] of b·h = w / blk_n[level]):
 * two launches, the scores into scores/idx (scratch of rows × candidates),
 * then the picks into sel[level - 1]. */
int DT_GPU_FN(launch_llsa_select)(const dt_gpu_llsa *p, int level, int64_t row0, int64_t rows,
                                  double *scores, int32_t *idx, void *stream);
/* The fused sparse + enrichment attention (spec §3), query rows [q_lo, q_hi)
 * of the (b·H + h) slices [bh_lo, bh_hi). */
int DT_GPU_FN(launch_llsa_attend)(const dt_gpu_llsa *p, const ditattn_tensor *q,
                                  const ditattn_tensor *k, const ditattn_tensor *v,
                                  const ditattn_tensor *out, float *lse, int64_t bh_lo,
                                  int64_t bh_hi, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* DITATTN_GPU_API_H */
