/* ditattn_dist — sequence parallelism over MPI (library ditattn_dist).
 *
 * Every rank of a communicator holds one contiguous slice of the token
 * sequence of q, k and v (slices may be uneven). A dist call computes this
 * rank's slice of the output (and LSE) exactly as the single-process
 * operation of ditattn.h would on the whole sequence.
 *
 * All calls are collective over `comm`: every rank must make the same call
 * with the same parameters. They first agree on the arguments (one small
 * all-gather), so a mismatch between ranks, or an invalid argument on any
 * one rank, returns the SAME status and message on every rank instead of
 * hanging. Failures during the computation are agreed on the same way
 * before returning. The caller's communicator is duplicated for the call,
 * so dist traffic never mixes with the caller's messages.
 *
 * Backends: host memory (DITATTN_BACKEND_REF, DITATTN_BACKEND_CPU) for
 * every call, f32. GPU contexts (CUDA, HIP): the forwards run on device
 * memory (q, k, v, out, lse and RoPeSLR's weights are device pointers, as
 * in the single-process calls; f32, bf16 or f16) — dense by a device ring
 * with LSE merge, LLSA and RoPeSLR by gathering q, k, v on every rank and
 * running the single-process kernels on this rank's rows (exactly the
 * single-process output, at O(N) device memory and traffic per rank). The
 * backward answers DITATTN_ERR_UNSUPPORTED there (host contexts only). See
 * docs/dist.md, "GPU contexts". */
#ifndef DITATTN_DITATTN_DIST_H
#define DITATTN_DITATTN_DIST_H

#include <mpi.h>

#include "ditattn/ditattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* This rank's part of a sequence of n_global tokens: tokens
 * [offset, offset + length). Over all ranks the slices must tile
 * [0, n_global) exactly (any rank order); length >= 1. The local tensors'
 * N dimension equals length. */
typedef struct ditattn_dist_slice {
  int64_t n_global;
  int64_t offset;
  int64_t length;
} ditattn_dist_slice;

/* Dense self-attention by ring attention: K/V slices travel around the
 * ring (double-buffered, overlapping the next transfer with the current
 * block's compute); partials are computed with ditattn_dense_forward on
 * ctx's backend and merged with ditattn_lse_merge.
 * q, k, v, out: (B, H, slice->length, D). lse: optional, [B][H][length].
 * On a GPU context all of them are device memory of ctx's device; slices
 * cross MPI staged through host memory, or as device pointers when MPI is
 * CUDA-aware (ditattn_dist_stats.gpu_transfer says which). */
ditattn_status ditattn_dist_dense_forward(ditattn_context *ctx, MPI_Comm comm,
                                          const ditattn_dist_slice *slice, const ditattn_tensor *q,
                                          const ditattn_tensor *k, const ditattn_tensor *v,
                                          float scale, ditattn_tensor *out, float *lse);

/* Dense attention backward on a sliced sequence: this rank's slice of dq,
 * dk, dv, equal (f32, to rounding) to ditattn_dense_backward on the whole
 * sequence. out and lse ([B][H][length], required) are this rank's slice
 * of the forward's results (ditattn_dist_dense_forward gives them), dout
 * the slice of the output gradient. dq is local; the K/V slices travel the
 * ring with dK/dV accumulators (double) that return to their owners. f32,
 * host contexts only (a GPU context gets DITATTN_ERR_UNSUPPORTED on every
 * rank). q, k, v, out, dout, dq, dk, dv: (B, H, slice->length, D). */
ditattn_status ditattn_dist_dense_backward(ditattn_context *ctx, MPI_Comm comm,
                                           const ditattn_dist_slice *slice, const ditattn_tensor *q,
                                           const ditattn_tensor *k, const ditattn_tensor *v,
                                           const ditattn_tensor *out, const float *lse,
                                           const ditattn_tensor *dout, float scale,
                                           ditattn_tensor *dq, ditattn_tensor *dk,
                                           ditattn_tensor *dv);

/* LLSA forward (spec/llsa.md §1-3) on a sliced sequence. Pooled tokens of
 * every level are all-gathered so each rank selects GLOBALLY exactly as
 * the single-process operation (same tie rule; blocks may straddle slice
 * boundaries). Fine keys: either the K/V slices travel the ring and each
 * rank attends to the parts of its selected blocks as they pass, or each
 * rank fetches only the parts of its selected blocks that others hold; the
 * call measures which moves less (see ditattn_dist_stats). f32 only
 * (host contexts). q, k, v, out: (B, H, slice->length, D). lse: optional,
 * [B][H][length].
 * GPU contexts: another route. The q, k, v slices travel a device ring and
 * every rank assembles the whole sequence in device memory (3·B·H·N·D
 * elements, plus two ring buffers of the longest slice's q, k, v), then
 * runs the backend's single-process forward restricted to its query rows:
 * out and lse equal ditattn_llsa_forward on one GPU exactly, no LSE merge.
 * q, k, v, out, lse: device memory; any dtype the backend takes. Each rank
 * receives all other slices of q, k, v (3·(N − length)·B·H·D elements) per
 * call, far more than the host route's selected blocks. */
ditattn_status ditattn_dist_llsa_forward(ditattn_context *ctx, MPI_Comm comm,
                                         const ditattn_dist_slice *slice,
                                         const ditattn_llsa_params *params, const ditattn_tensor *q,
                                         const ditattn_tensor *k, const ditattn_tensor *v,
                                         ditattn_tensor *out, float *lse);

/* LLSA backward (spec/llsa.md §4) on a sliced sequence: this rank's slice
 * of dq, dk, dv, equal to ditattn_llsa_backward on the whole sequence.
 * out and lse ([B][H][length], required) are this rank's slice of the
 * forward's results (ditattn_dist_llsa_forward gives them), dout the slice
 * of the output gradient. Selection as in the forward (global, identical);
 * dq is local; the fine K/V slices travel the ring together with dK/dV
 * accumulators that return to their owners; the gradients of the pooled
 * keys are summed over ranks (MPI_Allreduce) and flow back to the tokens
 * through the mean. Double accumulation (as ref/). f32 only; host contexts
 * only (a GPU context gets DITATTN_ERR_UNSUPPORTED on every rank).
 * q, k, v, out, dout, dq, dk, dv: (B, H, slice->length, D). */
ditattn_status
ditattn_dist_llsa_backward(ditattn_context *ctx, MPI_Comm comm, const ditattn_dist_slice *slice,
                           const ditattn_llsa_params *params, const ditattn_tensor *q,
                           const ditattn_tensor *k, const ditattn_tensor *v,
                           const ditattn_tensor *out, const float *lse, const ditattn_tensor *dout,
                           ditattn_tensor *dq, ditattn_tensor *dk, ditattn_tensor *dv);

/* RoPeSLR forward (spec/ropeslr.md §2-4) on a sliced sequence; this rank's
 * slice of out and lse_sparse equals the single-process
 * ditattn_ropeslr_forward on the whole sequence. Block means of q and k are
 * all-gathered as partial sums, so each rank selects GLOBALLY as the single
 * process does (blocks may straddle slice boundaries). Sparse branch: each
 * rank fetches only the K/V rows of its selected blocks that others hold.
 * Low-rank branch: the global factors S = Σ g vᵀ, z = Σ g (r×D + r per
 * head) are summed with an all-reduce, never the K/V; the selected blocks'
 * factors come from the fetched rows. f32 only (host contexts).
 * pos: this rank's `length` (t, y, x) triples in sequence order, or NULL on
 * every rank for raster order of the global grid (n_global = T·H·W).
 * weights: every rank passes the same full weights (1, H, ·, ·).
 * q, k, v, out: (B, H, slice->length, D). lse_sparse: optional,
 * [B][H][length].
 * GPU contexts: as ditattn_dist_llsa_forward's GPU route (q, k, v gathered
 * on every rank, the single-process forward on this rank's rows, which
 * computes every block's key features and factors from the gathered K/V
 * instead of all-reducing them): exactly ditattn_ropeslr_forward on one
 * GPU. q, k, v, out, lse_sparse and the weights: device memory; pos stays
 * host memory (all-gathered on the host). Any dtype the backend takes. */
ditattn_status ditattn_dist_ropeslr_forward(ditattn_context *ctx, MPI_Comm comm,
                                            const ditattn_dist_slice *slice,
                                            const ditattn_ropeslr_params *params,
                                            const ditattn_ropeslr_weights *weights,
                                            const int32_t *pos, const ditattn_tensor *q,
                                            const ditattn_tensor *k, const ditattn_tensor *v,
                                            ditattn_tensor *out, float *lse_sparse);

/* RoPeSLR backward on a sliced sequence: this rank's slice of dq, dk, dv
 * and the weight gradients summed over the whole sequence (every rank gets
 * the same totals), equal (f32, to rounding) to ditattn_ropeslr_backward
 * on the whole sequence; like it, nothing from the forward is needed: the
 * selection (held constant), both branches and the features are
 * recomputed as ditattn_dist_ropeslr_forward computes them. The selected
 * blocks' rows are fetched from their owners and their dk/dv contributions
 * sent back; the low-rank branch's gradients reach the keys through one
 * MPI_Allreduce of B·H·(n + 1)·(r·D + r) doubles (n = ceil(N / b) blocks:
 * per key block, the summed gradient of the background factors it was
 * left out of). Double accumulation (as ref/), f32 tensors, host contexts
 * only (a GPU context gets DITATTN_ERR_UNSUPPORTED on every rank).
 * q, k, v, dout, dq, dk, dv: (B, H, slice->length, D); pos as for the
 * forward; dweights shaped as weights; no output may overlap an input or
 * another output. */
ditattn_status ditattn_dist_ropeslr_backward(
    ditattn_context *ctx, MPI_Comm comm, const ditattn_dist_slice *slice,
    const ditattn_ropeslr_params *params, const ditattn_ropeslr_weights *weights,
    const int32_t *pos, const ditattn_tensor *q, const ditattn_tensor *k, const ditattn_tensor *v,
    const ditattn_tensor *dout, ditattn_tensor *dq, ditattn_tensor *dk, ditattn_tensor *dv,
    ditattn_ropeslr_weights *dweights);

/* Timings of the last dist call made by this process (for profiling and
 * the benchmark; not thread-safe). comm_wait_s: time blocked waiting for
 * transfers or collectives after the local work that could overlap them
 * was done. */
typedef struct ditattn_dist_stats {
  double wall_s;
  double comm_wait_s;
  double compute_s;
  int64_t bytes_sent; /* by this rank */
  /* LLSA only: K/V bytes this rank would have to receive if it fetched just
   * the fine blocks its queries selected, vs ring_bytes_received for the
   * ring (all other slices). Measures what a fetch scheme could save.
   * RoPeSLR sets both too (it always fetches: the bytes it received). */
  int64_t llsa_fetch_bytes;
  int64_t ring_bytes_received;
  /* LLSA only: 1 when the call fetched the selected blocks instead of
   * running the ring (environment DITATTN_DIST_LLSA=ring|fetch forces one;
   * by default fetch when every rank would receive under half as much). */
  int llsa_fetched;
  /* GPU contexts (every device route: dense's K/V ring, LLSA's and
   * RoPeSLR's q/k/v gather): how slices crossed between ranks. 0: host
   * memory (REF/CPU contexts), 1: staged through (page-locked) host
   * buffers, 2: device pointers handed to a CUDA-aware MPI (Open MPI's
   * MPIX_Query_cuda_support() said so, or DITATTN_DIST_CUDA_AWARE=1 forced
   * it; =0 forces staging), 3: LLSA/RoPeSLR gather only, every rank on one
   * host: copied device to device out of the peers' buffers by CUDA/HIP IPC
   * (DITATTN_DIST_IPC=0 turns it off; an IPC failure on any rank falls back
   * to the ring, 1 or 2), 4: every device route, ranks on several hosts
   * with as many (at least 2) on each: each rank's slices went around the
   * ring (1 or 2) of the ranks with its index on their hosts, the rest by
   * IPC from its host-mates (DITATTN_DIST_HOSTS=0 turns it off: then the
   * ring of all ranks). */
  int gpu_transfer;
  /* IPC gather: peer buffers this call mapped into the process (0 when the
   * mappings cached from an earlier call with the same buffers served). */
  int ipc_opened;
  /* 1 when the ranks split the key-side work of a sparse forward (GPU
   * route over IPC: each computed the key summaries of its own blocks and
   * copied the peers'; the bytes count in ring_bytes_received). */
  int keys_split;
} ditattn_dist_stats;
void ditattn_dist_last_stats(ditattn_dist_stats *stats);

/* The forwards on GPU contexts keep, with the context, the whole-sequence
 * q, k, v buffers of their last shape (up to 3·B·H·N·D elements of device
 * memory), the ring's two packed-slice buffers (and their page-locked host
 * copies when staged; the largest slice's q, k, v each) and, on one host,
 * the peers' buffers mapped by IPC, so that
 * repeated calls (every step of a diffusion sampler) neither allocate nor
 * map again. This releases them; the next call rebuilds them.
 * Collective over comm, every rank with its context: CUDA requires every
 * peer to unmap a buffer before its owner frees it, so all ranks unmap,
 * meet in a barrier, then free. ditattn_context_destroy frees the cache
 * too, without that barrier: call this first (or destroy the contexts
 * after the ranks' last dist call and a barrier), and before using the
 * context with another communicator. A context without a cache only takes
 * part in the barrier. */
ditattn_status ditattn_dist_free_cache(ditattn_context *ctx, MPI_Comm comm);

#ifdef __cplusplus
}
#endif
#endif /* DITATTN_DITATTN_DIST_H */
