/* The backend seam: one table of function pointers per backend, filled once.
 * The public API (backends/api_*.c) validates every argument, resolves
 * defaults (scale), then calls an entry with a problem struct. A NULL entry
 * makes the API answer DITATTN_ERR_UNSUPPORTED. Entries may assume valid
 * arguments; they report only allocation, device and internal failures. */
#ifndef DITATTN_BACKEND_H
#define DITATTN_BACKEND_H

#include "ditattn/ditattn.h"

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Validated problems. Scales are resolved (> 0). */
typedef struct dt_dense_fwd {
  const ditattn_tensor *q, *k, *v;
  ditattn_tensor *out;
  float *lse; /* may be NULL */
  float scale;
} dt_dense_fwd;

typedef struct dt_dense_bwd {
  const ditattn_tensor *q, *k, *v, *out, *dout;
  const float *lse;
  ditattn_tensor *dq, *dk, *dv;
  float scale;
} dt_dense_bwd;

typedef struct dt_lse_merge {
  ditattn_tensor *out_acc;
  float *lse_acc;
  const ditattn_tensor *out_part;
  const float *lse_part;
} dt_lse_merge;

typedef struct dt_pool {
  const ditattn_tensor *x;
  ditattn_tensor *y;
  int64_t block;
} dt_pool;

/* dist/ splits the key-side work of a sparse forward between the ranks of
 * one host: the per-block summaries of the keys (LLSA: pooled k and v of
 * every level; RoPeSLR: the block factors S_C | z_C) are each computed once,
 * by the rank owning the block, then exchanged, and every rank's forward
 * reads them instead of computing all of them itself. A summary is a set
 * of arrays [rows][units][unit_bytes] in one device buffer; unit c of
 * array a covers tokens [c·span[a], (c+1)·span[a]) and belongs to the rank
 * whose slice holds its first token. Values do not depend on who computes a
 * unit: the same kernel, the same summation order. */
#define DT_KEY_SUMMARY_MAX 16 /* LLSA: 2 per level, up to DITATTN_LLSA_MAX_LEVELS */
typedef struct dt_key_summary {
  int arrays;
  int64_t rows[DT_KEY_SUMMARY_MAX]; /* B·H, or B·H·D for a [B·H][D][units] array */
  int64_t units[DT_KEY_SUMMARY_MAX], span[DT_KEY_SUMMARY_MAX];
  size_t unit_bytes[DT_KEY_SUMMARY_MAX], offset[DT_KEY_SUMMARY_MAX];
  size_t bytes; /* of the whole buffer */
} dt_key_summary;

/* Units [*lo, *hi) of an array of `units` units of `span` tokens whose
 * first token lies in [key_lo, key_hi): a FILL share, or a rank's units. */
static inline void dt_summary_units(int64_t key_lo, int64_t key_hi, int64_t span, int64_t units,
                                    int64_t *lo, int64_t *hi) {
  int64_t l = (key_lo + span - 1) / span, h = (key_hi + span - 1) / span;
  if (h > units) h = units;
  if (l > h) l = h;
  *lo = l, *hi = h;
}

typedef enum dt_summary_use {
  DT_SUMMARY_NONE = 0, /* the forward computes every summary itself (buf unused) */
  DT_SUMMARY_FILL = 1, /* compute only the units whose first token lies in
                          [key_lo, key_hi) into buf; nothing else */
  DT_SUMMARY_READ = 2  /* buf holds every unit: skip the key-side work */
} dt_summary_use;

typedef struct dt_summary_arg {
  dt_summary_use use;
  void *buf; /* device, laid out as the backend's *_summary_layout says */
  int64_t key_lo, key_hi;
  /* READ: rows of k and v may still be arriving on the context's side
   * stream (dist/'s gather), in side_chunks chunks of (b, h) slices
   * (dt_side_chunk_bh): chunk c's copies are complete at side mark c
   * (ops->side_mark), or, where dist/ set no marks, only at the end. The
   * forward waits for chunk c (or joins everything) before it first reads
   * k or v rows of chunk c's slices (its attention; pooled k and v come
   * from buf), so the copies overlap its pooling, its selection and its
   * attention of the chunks already there. 0: nothing pending. */
  int side_chunks;
  int side_marked; /* the chunks end at marks 0 .. side_chunks - 1 */
} dt_summary_arg;

/* One strided copy of a batch (dt_backend_ops.copy_2d's arguments). */
typedef struct dt_copy_2d_desc {
  void *dst;
  const void *src;
  size_t dpitch, spitch, width, height;
} dt_copy_2d_desc;

/* At most this many side marks between a side_fork and the next. */
#define DT_SIDE_MARKS_MAX 8

/* (b, h) slices [*lo, *hi) of chunk c of `chunks` over BH slices. */
static inline void dt_side_chunk_bh(int64_t BH, int chunks, int c, int64_t *lo, int64_t *hi) {
  *lo = BH * c / chunks;
  *hi = BH * (c + 1) / chunks;
}

typedef struct dt_llsa_fwd {
  ditattn_llsa_params params; /* scale resolved */
  const ditattn_tensor *q, *k, *v;
  ditattn_tensor *out;
  float *lse;                              /* may be NULL */
  const ditattn_llsa_selection *selection; /* may be NULL; entries may be NULL */
  /* Query rows: out and lse hold rows [q_row0, q_row0 + out->shape[2]) of
   * the N tokens of q, k, v (dist/ on device contexts). The public API
   * passes 0 and an out of N rows; with q_row0 > 0 or fewer rows, selection
   * is NULL and only backends with query_rows set may be called. */
  int64_t q_row0;
  dt_summary_arg summary; /* zero: DT_SUMMARY_NONE */
} dt_llsa_fwd;

typedef struct dt_llsa_bwd {
  ditattn_llsa_params params; /* scale resolved */
  const ditattn_tensor *q, *k, *v, *out, *dout;
  const float *lse;
  ditattn_tensor *dq, *dk, *dv;
} dt_llsa_bwd;

typedef struct dt_rope {
  ditattn_rope_params params;
  const int32_t *pos; /* N triples, host, never NULL here (API builds raster positions) */
  ditattn_direction direction;
  const ditattn_tensor *x;
  ditattn_tensor *y;
} dt_rope;

typedef struct dt_order {
  const int64_t *seq_to_raster; /* host, N entries */
  ditattn_direction direction;
  const ditattn_tensor *x;
  ditattn_tensor *y;
} dt_order;

typedef struct dt_ropeslr_fwd {
  ditattn_ropeslr_params params; /* scale resolved */
  int64_t topk;                  /* K resolved from the policy */
  const ditattn_ropeslr_weights *weights;
  const int32_t *pos; /* N triples, host, never NULL here */
  const ditattn_tensor *q, *k, *v;
  ditattn_tensor *out;
  float *lse_sparse;      /* may be NULL */
  int32_t *sel;           /* may be NULL */
  int64_t q_row0;         /* as dt_llsa_fwd.q_row0; lse_sparse then holds out's rows, sel is NULL */
  dt_summary_arg summary; /* as dt_llsa_fwd.summary */
} dt_ropeslr_fwd;

typedef struct dt_ropeslr_bwd {
  ditattn_ropeslr_params params;
  int64_t topk;
  const ditattn_ropeslr_weights *weights;
  const int32_t *pos;
  const ditattn_tensor *q, *k, *v, *dout;
  ditattn_tensor *dq, *dk, *dv;
  ditattn_ropeslr_weights *dweights;
} dt_ropeslr_bwd;

typedef struct dt_backend_ops {
  const char *name;
  /* Bit (1u << dtype) set for each dtype the attention entries accept
   * (all tensors of one call share it; lse is always f32). */
  unsigned dtypes;
  /* 1 when llsa_forward and ropeslr_forward honour q_row0 (an out of
   * fewer rows than q, see dt_llsa_fwd). */
  int query_rows;
  /* Lifetime: init may fail with BACKEND_UNAVAILABLE (no device). */
  ditattn_status (*init)(ditattn_context *ctx);
  void (*fini)(ditattn_context *ctx);
  ditattn_status (*set_num_threads)(ditattn_context *ctx, int num_threads);
  ditattn_status (*set_stream)(ditattn_context *ctx, void *stream);
  ditattn_status (*synchronize)(ditattn_context *ctx);
  /* Memory where tensors live. */
  ditattn_status (*mem_alloc)(ditattn_context *ctx, size_t bytes, void **ptr);
  ditattn_status (*mem_free)(ditattn_context *ctx, void *ptr);
  ditattn_status (*copy_to_backend)(ditattn_context *ctx, void *dst, const void *src, size_t n);
  ditattn_status (*copy_to_host)(ditattn_context *ctx, void *dst, const void *src, size_t n);
  /* Operations, indexed like ditattn_op. */
  ditattn_status (*dense_forward)(ditattn_context *ctx, const dt_dense_fwd *p);
  ditattn_status (*dense_backward)(ditattn_context *ctx, const dt_dense_bwd *p);
  ditattn_status (*llsa_forward)(ditattn_context *ctx, const dt_llsa_fwd *p);
  ditattn_status (*llsa_backward)(ditattn_context *ctx, const dt_llsa_bwd *p);
  ditattn_status (*rope)(ditattn_context *ctx, const dt_rope *p);
  ditattn_status (*order)(ditattn_context *ctx, const dt_order *p);
  ditattn_status (*pool)(ditattn_context *ctx, const dt_pool *p);
  ditattn_status (*lse_merge)(ditattn_context *ctx, const dt_lse_merge *p);
  ditattn_status (*ropeslr_forward)(ditattn_context *ctx, const dt_ropeslr_fwd *p);
  ditattn_status (*ropeslr_backward)(ditattn_context *ctx, const dt_ropeslr_bwd *p);
  /* Devices (NULL on host backends, which have the one device 0). */
  ditattn_status (*device_count)(int *count);
  /* Binds an initialised context to a device in [0, count). */
  ditattn_status (*bind_device)(ditattn_context *ctx, int device);
  /* Device memory shared with other processes of the same host (CUDA/HIP
   * IPC), so that dist/ can copy a peer GPU's slice over NVLink/xGMI with
   * no MPI or host copy; NULL on host backends. ipc_export writes a handle
   * of DT_IPC_HANDLE_BYTES for a whole allocation made by mem_alloc;
   * ipc_open maps a peer's handle (*ptr: the base of its allocation);
   * ipc_close unmaps what ipc_open mapped. */
  ditattn_status (*ipc_export)(ditattn_context *ctx, void *base, void *handle);
  ditattn_status (*ipc_open)(ditattn_context *ctx, const void *handle, void **ptr);
  ditattn_status (*ipc_close)(ditattn_context *ctx, void *ptr);
  /* Strided device-to-device copy queued on the context's stream: height
   * rows of width bytes, row r from src + r*spitch to dst + r*dpitch; src
   * may be a peer's buffer mapped by ipc_open (the copy engines move it
   * over NVLink/xGMI). NULL on host backends. */
  ditattn_status (*copy_2d)(ditattn_context *ctx, void *dst, size_t dpitch, const void *src,
                            size_t spitch, size_t width, size_t height);
  /* copy_2d of each of `count` entries, queued on the stream as one launch
   * (dist's key summary exchange and gather: a dozen small strided copies,
   * each of which costs copy_2d a few microseconds of its own, more across
   * NVLink). Entries may run in any order and concurrently: no destination
   * may overlap another entry's source or destination. NULL: dist falls
   * back to copy_2d (dt_dist_copy_2d_each, dt_dist_copy_tensors). */
  ditattn_status (*copy_2d_batch)(ditattn_context *ctx, const dt_copy_2d_desc *descs, int count);
  /* Page-locked host memory for staging device transfers (NULL: use
   * dt_malloc); host_free takes what host_alloc gave. */
  ditattn_status (*host_alloc)(ditattn_context *ctx, size_t bytes, void **ptr);
  ditattn_status (*host_free)(ditattn_context *ctx, void *ptr);
  /* The key summary of a forward (dt_key_summary); NULL where the backend
   * cannot split its key-side work (its forward then ignores p->summary). */
  ditattn_status (*llsa_summary_layout)(ditattn_context *ctx, const dt_llsa_fwd *p,
                                        dt_key_summary *layout);
  ditattn_status (*ropeslr_summary_layout)(ditattn_context *ctx, const dt_ropeslr_fwd *p,
                                           dt_key_summary *layout);
  /* A second stream for copies that overlap the context's stream (NULL:
   * none). side_fork: the side stream waits for the work queued so far on
   * the stream; side_copy_2d: copy_2d queued on the side stream; side_join:
   * the stream waits, on the device, for the side stream's work so far.
   * side_mark (may be NULL): marks the side stream's work so far, mark m
   * being the m-th since side_fork (< DT_SIDE_MARKS_MAX), so that a forward
   * can wait for part of it (dt_summary_arg.side_chunks). */
  ditattn_status (*side_fork)(ditattn_context *ctx);
  ditattn_status (*side_copy_2d)(ditattn_context *ctx, void *dst, size_t dpitch, const void *src,
                                 size_t spitch, size_t width, size_t height);
  ditattn_status (*side_join)(ditattn_context *ctx);
  ditattn_status (*side_mark)(ditattn_context *ctx);
} dt_backend_ops;

/* Bytes of an IPC handle (CUDA_IPC_HANDLE_SIZE, HIP_IPC_HANDLE_SIZE). */
#define DT_IPC_HANDLE_BYTES 64

/* The context: opaque to users. */
struct ditattn_context {
  ditattn_backend backend;
  const dt_backend_ops *ops;
  int num_threads;
  void *stream;
  void *backend_state; /* owned by the backend (init/fini) */
  /* State a layer above keeps with the context across calls (dist/'s
   * gather buffers and IPC mappings); ext_free releases it when the
   * context is destroyed, before the backend's fini. */
  void *ext;
  void (*ext_free)(ditattn_context *ctx, void *ext);
  char last_error[512];
};

/* Tables, one per compiled backend (NULL when not compiled). */
const dt_backend_ops *dt_ref_ops(void);
const dt_backend_ops *dt_cpu_ops(void);
const dt_backend_ops *dt_cuda_ops(void);
const dt_backend_ops *dt_hip_ops(void);
const dt_backend_ops *dt_backend_table(ditattn_backend backend);

/* Records a formatted message in ctx (if any) and returns status. Never prints. */
ditattn_status dt_fail(ditattn_context *ctx, ditattn_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void dt_clear_error(ditattn_context *ctx);

/* Library allocations go through these so faults can be injected (verify/). */
void *dt_malloc(size_t bytes);
void *dt_calloc(size_t count, size_t size);
void dt_free(void *ptr);
/* Fault injection for tests: the k-th next dt_malloc/dt_calloc (1-based)
 * fails; 0 disables. Returns how many allocations happened since the last call. */
int64_t dt_debug_fail_alloc_at(int64_t k);

/* Host memory entries shared by the REF and CPU tables. */
ditattn_status dt_host_mem_alloc(ditattn_context *ctx, size_t bytes, void **ptr);
ditattn_status dt_host_mem_free(ditattn_context *ctx, void *ptr);
ditattn_status dt_host_copy(ditattn_context *ctx, void *dst, const void *src, size_t bytes);

/* Size helpers: return 0 on overflow, else store a*b (or a*b*c...) in *out. */
int dt_mul_size(size_t a, size_t b, size_t *out);

#ifdef __cplusplus
}
#endif
#endif /* DITATTN_BACKEND_H */
