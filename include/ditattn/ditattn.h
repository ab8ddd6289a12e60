/* ditattn — fast attention for video diffusion transformers.
 *
 * Public C11 API. Every call returns a ditattn_status; a context keeps the
 * last error message with detail (which argument, which dimension).
 * Semantics are defined by ref/ and by docs/semantics.md (spec-facing). */
#ifndef DITATTN_DITATTN_H
#define DITATTN_DITATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DITATTN_VERSION_MAJOR 0
#define DITATTN_VERSION_MINOR 1
#define DITATTN_VERSION_PATCH 0
const char *ditattn_version(void);

/* ---------------------------------------------------------------- status */
typedef enum ditattn_status {
  DITATTN_OK = 0,
  DITATTN_ERR_NULL_POINTER,        /* a required pointer argument is NULL */
  DITATTN_ERR_INVALID_ARGUMENT,    /* a parameter is out of range (b < 2, K < 1, ...) */
  DITATTN_ERR_SHAPE_MISMATCH,      /* tensors' shapes disagree or are not positive */
  DITATTN_ERR_BAD_STRIDE,          /* strides overlap or are negative */
  DITATTN_ERR_DTYPE,               /* dtype not supported by this operation/backend */
  DITATTN_ERR_OVERFLOW,            /* a size or byte count overflows */
  DITATTN_ERR_OUT_OF_MEMORY,       /* an allocation failed */
  DITATTN_ERR_UNSUPPORTED,         /* the backend does not implement this operation */
  DITATTN_ERR_BACKEND_UNAVAILABLE, /* backend not compiled in, or no device */
  DITATTN_ERR_IO,                  /* a file could not be opened/read/written */
  DITATTN_ERR_FORMAT,              /* a file is malformed (.npy/.npz) */
  DITATTN_ERR_DEVICE,              /* a CUDA/HIP runtime call failed */
  DITATTN_ERR_MPI,                 /* an MPI call failed or ranks disagree */
  DITATTN_ERR_NONFINITE,           /* NaN/Inf input rejected (check flag set) */
  DITATTN_ERR_INTERNAL,            /* a bug: please report */
  DITATTN_STATUS_COUNT
} ditattn_status;

/* Static, human-readable name of a status ("invalid argument"). Never NULL. */
const char *ditattn_strerror(ditattn_status status);

/* ---------------------------------------------------------------- tensors */
typedef enum ditattn_dtype {
  DITATTN_F32 = 0,
  DITATTN_BF16 = 1, /* GPU backends */
  DITATTN_F16 = 2   /* GPU backends */
} ditattn_dtype;

/* A 4-D tensor view (B, H, N, D). D is contiguous; stride[0..2] are element
 * strides of B, H and N. [B,H,N,D] and the DiT layout [B,N,H,D] are both
 * views of this kind, so no copy is needed. `data` is host memory for the
 * REF/CPU backends and device memory for CUDA/HIP. */
typedef struct ditattn_tensor {
  void *data;
  ditattn_dtype dtype;
  int64_t shape[4];  /* B, H, N, D */
  int64_t stride[3]; /* elements between consecutive b, h, n */
} ditattn_tensor;

/* Contiguous [B,H,N,D] view. */
ditattn_tensor ditattn_tensor_bhnd(void *data, ditattn_dtype dtype, int64_t B, int64_t H, int64_t N,
                                   int64_t D);
/* Contiguous [B,N,H,D] (DiT) layout seen as (B,H,N,D). */
ditattn_tensor ditattn_tensor_bnhd(void *data, ditattn_dtype dtype, int64_t B, int64_t H, int64_t N,
                                   int64_t D);
/* Bytes of one element of dtype (0 for an unknown dtype). */
size_t ditattn_dtype_size(ditattn_dtype dtype);

/* ---------------------------------------------------------------- context */
typedef enum ditattn_backend {
  DITATTN_BACKEND_REF = 0, /* scalar C, double accumulation: the oracle */
  DITATTN_BACKEND_CPU = 1, /* OpenMP + OpenBLAS + SIMD */
  DITATTN_BACKEND_CUDA = 2,
  DITATTN_BACKEND_HIP = 3,
  DITATTN_BACKEND_COUNT
} ditattn_backend;

typedef struct ditattn_context ditattn_context;

/* Creates a context bound to a backend. Fails with BACKEND_UNAVAILABLE when
 * the backend was not compiled in or finds no device; `*ctx` is NULL then. */
ditattn_status ditattn_context_create(ditattn_backend backend, ditattn_context **ctx);
/* Creates a context bound to device `device` of the backend: every later
 * call on it (memory, copies, operations, synchronize, destroy) runs on that
 * device, whatever device the calling thread has current; the thread's
 * current device is restored when each call returns. REF/CPU: only device 0
 * exists. An index outside [0, ditattn_device_count) gives
 * INVALID_ARGUMENT; a backend not compiled in or without devices gives
 * BACKEND_UNAVAILABLE (`*ctx` is NULL then). ditattn_context_create uses the
 * thread's current device at each call instead. */
ditattn_status ditattn_context_create_on_device(ditattn_backend backend, int device,
                                                ditattn_context **ctx);
/* Number of devices of a backend: 1 for REF/CPU; the runtime's device count
 * for CUDA/HIP. BACKEND_UNAVAILABLE (count 0) when not compiled in or the
 * runtime reports no device. */
ditattn_status ditattn_device_count(ditattn_backend backend, int *count);
void ditattn_context_destroy(ditattn_context *ctx);
ditattn_backend ditattn_context_backend(const ditattn_context *ctx);
/* Message of the last failed call on ctx ("" after success). Never NULL. */
const char *ditattn_last_error(const ditattn_context *ctx);
/* CPU backend: number of threads (0 = OpenMP default). Others ignore it. */
ditattn_status ditattn_context_set_num_threads(ditattn_context *ctx, int num_threads);
/* GPU backends: the stream (cudaStream_t / hipStream_t) work is queued on. */
ditattn_status ditattn_context_set_stream(ditattn_context *ctx, void *stream);
/* Waits for queued work (no-op on host backends). */
ditattn_status ditattn_synchronize(ditattn_context *ctx);

/* Memory where the backend's tensors live (host for REF/CPU). */
ditattn_status ditattn_malloc(ditattn_context *ctx, size_t bytes, void **ptr);
ditattn_status ditattn_free(ditattn_context *ctx, void *ptr);
ditattn_status ditattn_copy_to_backend(ditattn_context *ctx, void *dst, const void *host_src,
                                       size_t bytes);
ditattn_status ditattn_copy_to_host(ditattn_context *ctx, void *host_dst, const void *src,
                                    size_t bytes);

const char *ditattn_backend_name(ditattn_backend backend); /* "ref", "cpu", ... */
/* Parses "ref", "cpu", "cuda", "hip". */
ditattn_status ditattn_backend_parse(const char *name, ditattn_backend *backend);
/* 1 if compiled into this build, else 0. */
int ditattn_backend_compiled(ditattn_backend backend);

/* Operations, for capability queries (`ditattn info`). */
typedef enum ditattn_op {
  DITATTN_OP_DENSE_FORWARD = 0,
  DITATTN_OP_DENSE_BACKWARD,
  DITATTN_OP_LLSA_FORWARD,
  DITATTN_OP_LLSA_BACKWARD,
  DITATTN_OP_ROPE,
  DITATTN_OP_ORDER,
  DITATTN_OP_POOL,
  DITATTN_OP_LSE_MERGE,
  DITATTN_OP_ROPESLR_FORWARD,
  DITATTN_OP_ROPESLR_BACKWARD,
  DITATTN_OP_COUNT
} ditattn_op;
const char *ditattn_op_name(ditattn_op op);
/* 1 if the backend implements op (its dispatch entry is non-NULL). */
int ditattn_backend_supports(ditattn_backend backend, ditattn_op op);

/* ---------------------------------------------------------------- dense */
/* out = softmax(scale · q kᵀ) v per (batch, head). q: (B,H,Nq,D); k, v:
 * (B,H,Nk,D); out: (B,H,Nq,D). scale <= 0 means 1/sqrt(D). lse (optional,
 * NULL to skip): Nq floats per (b,h), contiguous [B][H][Nq], natural log. */
ditattn_status ditattn_dense_forward(ditattn_context *ctx, const ditattn_tensor *q,
                                     const ditattn_tensor *k, const ditattn_tensor *v, float scale,
                                     ditattn_tensor *out, float *lse);
/* Gradients of dense attention given dout and the forward's out and lse. */
ditattn_status ditattn_dense_backward(ditattn_context *ctx, const ditattn_tensor *q,
                                      const ditattn_tensor *k, const ditattn_tensor *v,
                                      const ditattn_tensor *out, const float *lse,
                                      const ditattn_tensor *dout, float scale, ditattn_tensor *dq,
                                      ditattn_tensor *dk, ditattn_tensor *dv);

/* Merges a partial attention result into an accumulator by log-sum-exp:
 * (out_acc, lse_acc) ← combine((out_acc, lse_acc), (out_part, lse_part)).
 * lse_acc = -inf marks an empty accumulator. Same shapes, [B][H][N] lse. */
ditattn_status ditattn_lse_merge(ditattn_context *ctx, ditattn_tensor *out_acc, float *lse_acc,
                                 const ditattn_tensor *out_part, const float *lse_part);

/* ---------------------------------------------------------------- pooling */
/* y[c] = mean of x over tokens [c·block, min((c+1)·block, N)). y: (B,H,ceil(N/block),D). */
ditattn_status ditattn_pool_mean(ditattn_context *ctx, const ditattn_tensor *x, int64_t block,
                                 ditattn_tensor *y);

/* ---------------------------------------------------------------- LLSA */
#define DITATTN_LLSA_MAX_LEVELS 8

typedef struct ditattn_llsa_params {
  int64_t block;                         /* b >= 2 */
  int levels;                            /* L in [1, DITATTN_LLSA_MAX_LEVELS] */
  int64_t topk[DITATTN_LLSA_MAX_LEVELS]; /* K_1 .. K_L, finest level first, each >= 1 */
  float scale;                           /* <= 0 means 1/sqrt(D) */
} ditattn_llsa_params;

/* b = 16, L = 2, K = (8, 8), scale = 1/sqrt(D). */
ditattn_llsa_params ditattn_llsa_params_default(void);

/* Optional output of the selection (spec §2). sel[l] (level l+1) holds, per
 * (b, h, level-(l+1) query block g), topk[l] block indices in rank order,
 * padded with -1 when fewer candidates exist: B*H*ceil(N/b^(l+1))*topk[l]
 * int32 values, contiguous. Any sel[l] may be NULL. Host memory on every backend. */
typedef struct ditattn_llsa_selection {
  int32_t *sel[DITATTN_LLSA_MAX_LEVELS];
} ditattn_llsa_selection;

/* Number of int32 entries of sel[level-1] (0 on bad arguments). */
int64_t ditattn_llsa_selection_count(const ditattn_llsa_params *params, int64_t B, int64_t H,
                                     int64_t N, int level);

/* LLSA forward (spec §1-3). q, k, v, out: (B,H,N,D). lse: optional [B][H][N].
 * selection: optional (NULL to skip). */
ditattn_status ditattn_llsa_forward(ditattn_context *ctx, const ditattn_llsa_params *params,
                                    const ditattn_tensor *q, const ditattn_tensor *k,
                                    const ditattn_tensor *v, ditattn_tensor *out, float *lse,
                                    ditattn_llsa_selection *selection);

/* LLSA backward (spec §4): selection recomputed (deterministic), p recomputed
 * from the forward's lse. out, lse: the forward's results. */
ditattn_status ditattn_llsa_backward(ditattn_context *ctx, const ditattn_llsa_params *params,
                                     const ditattn_tensor *q, const ditattn_tensor *k,
                                     const ditattn_tensor *v, const ditattn_tensor *out,
                                     const float *lse, const ditattn_tensor *dout,
                                     ditattn_tensor *dq, ditattn_tensor *dk, ditattn_tensor *dv);

/* ---------------------------------------------------------------- 3D RoPE */
typedef enum ditattn_rope_pairing {
  DITATTN_ROPE_INTERLEAVED = 0, /* pairs (2j, 2j+1) inside each axis part (LLSA, Wan2.1) */
  DITATTN_ROPE_HALF_SPLIT = 1   /* pairs (j, j + d_a/2) inside each axis part (NeoX) */
} ditattn_rope_pairing;

typedef enum ditattn_rope_preset {
  DITATTN_ROPE_PRESET_WAN21 = 0,  /* θ = 10000, d_t = D - 4⌊D/6⌋, d_h = d_w = 2⌊D/6⌋ */
  DITATTN_ROPE_PRESET_HUNYUAN = 1 /* θ = 256, (16, 56, 56) for D = 128, scaled by D/128 */
} ditattn_rope_preset;

typedef struct ditattn_rope_params {
  int64_t grid[3]; /* T, H, W (for validating positions) */
  int64_t dims[3]; /* d_t, d_h, d_w: each even, sum <= D; channels past the sum untouched */
  double theta;    /* base, > 0 */
  ditattn_rope_pairing pairing;
} ditattn_rope_params;

ditattn_status ditattn_rope_params_preset(ditattn_rope_preset preset, int64_t D, int64_t T,
                                          int64_t H, int64_t W, ditattn_rope_params *params);

typedef enum ditattn_direction { DITATTN_FORWARD = 0, DITATTN_INVERSE = 1 } ditattn_direction;

/* y = RoPE(x) (or its inverse, angle -φ). pos: N triples (t, y, x) in
 * sequence order, host memory, or NULL for raster order (then N = T·H·W).
 * y may alias x exactly (in place). */
ditattn_status ditattn_rope_apply(ditattn_context *ctx, const ditattn_rope_params *params,
                                  const int32_t *pos, ditattn_direction direction,
                                  const ditattn_tensor *x, ditattn_tensor *y);

/* ---------------------------------------------------------------- token orders */
typedef enum ditattn_order_kind {
  DITATTN_ORDER_RASTER = 0, /* identity */
  DITATTN_ORDER_MORTON = 1, /* spec §5: bits of (t, y, x) interleaved, t most significant */
  DITATTN_ORDER_TILE = 2    /* tiles of (tt, th, tw) in raster order, raster inside */
} ditattn_order_kind;

typedef struct ditattn_order_params {
  ditattn_order_kind kind;
  int64_t grid[3]; /* T, H, W */
  int64_t tile[3]; /* tt, th, tw (TILE only), each >= 1 */
} ditattn_order_params;

/* seq_to_raster[s] = raster index (t·H + y)·W + x of the token at sequence
 * position s; T·H·W entries. Pure host function (no context). */
ditattn_status ditattn_order_permutation(const ditattn_order_params *params,
                                         int64_t *seq_to_raster);
/* pos[3s..3s+2] = (t, y, x) of the token at sequence position s. */
ditattn_status ditattn_order_positions(const ditattn_order_params *params, int32_t *pos);

/* FORWARD: y[s] = x[seq_to_raster[s]] (raster → sequence order);
 * INVERSE: y[seq_to_raster[s]] = x[s]. x, y: (B,H,T·H·W,D), must not alias. */
ditattn_status ditattn_order_apply(ditattn_context *ctx, const ditattn_order_params *params,
                                   ditattn_direction direction, const ditattn_tensor *x,
                                   ditattn_tensor *y);

/* ---------------------------------------------------------------- RoPeSLR */
/* 3D-RoPE sparse + low-rank attention (spec ropeslr.md; ditattn's choices in
 * docs/ropeslr.md). Per (batch, head): exact softmax attention of each query
 * block over its K selected key blocks (the spikes), plus a positive-feature
 * linear attention over every other key token (the background), mixed as
 * o = o_sparse + Wᵀ o_lowrank. */
typedef enum ditattn_slr_policy {
  DITATTN_SLR_KEEP_FRACTION = 0, /* K = max(1, ceil(rho · n)) */
  DITATTN_SLR_FIXED_K = 1,       /* K = topk (clamped to n) */
  DITATTN_SLR_SQRT = 2           /* K = max(1, ceil(sqrt_c · sqrt(n))) (spike set O(N^1.5)) */
} ditattn_slr_policy;

typedef enum ditattn_slr_feature {
  DITATTN_SLR_FEATURE_ELU1 = 0,   /* φ(u) = elu(u) + 1 */
  DITATTN_SLR_FEATURE_SOFTMAX = 1 /* φ(u) = softmax over the r entries */
} ditattn_slr_feature;

typedef struct ditattn_ropeslr_params {
  int64_t block; /* b >= 1, for query and key blocks alike; default 64 */
  ditattn_slr_policy policy;
  double rho;          /* KEEP_FRACTION: (0, 1]; default 0.10 */
  int64_t topk;        /* FIXED_K: >= 1 */
  double sqrt_c;       /* SQRT: > 0 */
  int force_own_block; /* 1: the query's own block always selected (default); 0: pure top-K */
  int64_t rank;        /* r >= 1 (any r, also r > D); default 64 */
  ditattn_slr_feature feature;
  float scale;     /* <= 0 means 1/sqrt(D); applies to the sparse branch only */
  int64_t grid[3]; /* T, H, W of the token positions: no default, must be set */
} ditattn_ropeslr_params;

/* block 64, KEEP_FRACTION rho = 0.10, own block forced, rank 64, ELU1,
 * scale 1/sqrt(D), grid {0, 0, 0} (invalid until the caller sets it). */
ditattn_ropeslr_params ditattn_ropeslr_params_default(void);

/* Per-head learned weights, each a 4-D tensor view with shape[0] = 1, f32,
 * in the same memory as q (device memory on GPU backends):
 * A, Bk: (1, H, D, r); Et: (1, H, T, r); Ey: (1, H, H_grid, r); Ex: (1, H, W, r);
 * W: (1, H, D, D) (o += Wᵀ o_lowrank, i.e. o[e] += Σ_d W[d][e] o_lowrank[d]).
 * Bk is the spec's B (key projection), renamed to avoid the batch size. */
typedef struct ditattn_ropeslr_weights {
  ditattn_tensor A, Bk, Et, Ey, Ex, W;
} ditattn_ropeslr_weights;

/* Number K of kept key blocks per query block for N tokens, 1 <= K <= n =
 * ceil(N/b) (0 on bad params or N < 1). */
int64_t ditattn_ropeslr_topk(const ditattn_ropeslr_params *params, int64_t N);
/* Entries of the optional selection output: B·H·n·K (0 on bad arguments). */
int64_t ditattn_ropeslr_selection_count(const ditattn_ropeslr_params *params, int64_t B, int64_t H,
                                        int64_t N);

/* o = o_sparse + Wᵀ o_lowrank (spec §4). q, k, v, out: (B,H,N,D), RoPE
 * already applied to q and k. pos: N triples (t,y,x) in sequence order, host
 * memory, or NULL for raster order (then N = T·H·W). lse_sparse: optional
 * [B][H][N], the sparse branch's natural-log LSE. sel: optional, host memory,
 * [B][H][n][K] int32 key-block indices in rank order (score desc, index asc;
 * a forced own block takes the last slot). */
ditattn_status ditattn_ropeslr_forward(ditattn_context *ctx, const ditattn_ropeslr_params *params,
                                       const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                       const ditattn_tensor *q, const ditattn_tensor *k,
                                       const ditattn_tensor *v, ditattn_tensor *out,
                                       float *lse_sparse, int32_t *sel);

/* Gradients of Σ dout·o w.r.t. q, k, v and every weight, the selection held
 * constant (it is recomputed from q, k, as is everything else: no forward
 * state is needed). dq, dk, dv and every dweights tensor are overwritten;
 * weight gradients are summed over the batch. dweights: same shapes as
 * weights. No output may overlap an input or another output. */
ditattn_status ditattn_ropeslr_backward(ditattn_context *ctx, const ditattn_ropeslr_params *params,
                                        const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                        const ditattn_tensor *q, const ditattn_tensor *k,
                                        const ditattn_tensor *v, const ditattn_tensor *dout,
                                        ditattn_tensor *dq, ditattn_tensor *dk, ditattn_tensor *dv,
                                        ditattn_ropeslr_weights *dweights);

#ifdef __cplusplus
}
#endif
#endif /* DITATTN_DITATTN_H */
