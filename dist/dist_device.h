/* GPU contexts in dist/: ring attention on device memory, written against
 * ditattn's public API only (ditattn_malloc, copies, ditattn_dense_forward,
 * ditattn_lse_merge, ditattn_synchronize), so dist/ never includes a CUDA or
 * HIP header. */
#ifndef DITATTN_DIST_DEVICE_H
#define DITATTN_DIST_DEVICE_H

#include "dist_internal.h"

/* Values of ditattn_dist_stats.gpu_transfer. */
enum {
  DT_DIST_XFER_HOST = 0,
  DT_DIST_XFER_STAGED = 1,
  DT_DIST_XFER_DEVICE = 2,
  DT_DIST_XFER_IPC = 3,
  DT_DIST_XFER_HOSTS = 4
};

/* 1 when environment variable `name` is set to exactly `value` (the
 * switches DITATTN_DIST_*). */
int dt_dist_env_is(const char *name, const char *value);

/* 1 when ctx's tensors live in device memory (CUDA, HIP contexts); also for
 * host contexts when DITATTN_DIST_DEVICE_PATH=1 (a test hook: REF/CPU then
 * run the device path on host memory, so CI covers it without a GPU). */
int dt_dist_is_device(const ditattn_context *ctx);

/* How this rank hands device buffers to MPI: DT_DIST_XFER_DEVICE when
 * DITATTN_DIST_CUDA_AWARE=1, or when it is unset, the backend is CUDA and
 * Open MPI says it is CUDA-aware (compile time MPIX_CUDA_AWARE_SUPPORT and
 * run time MPIX_Query_cuda_support()); else DT_DIST_XFER_STAGED. */
int dt_dist_device_transfer(ditattn_backend backend);

/* The rest of ditattn_dist_dense_forward on a GPU context, once its job
 * has begun (arguments agreed, scale resolved); ends the job. */
ditattn_status dt_dist_device_dense_run(dt_dist_job *job, const ditattn_tensor *q,
                                        const ditattn_tensor *k, const ditattn_tensor *v,
                                        float scale, ditattn_tensor *out, float *lse);

/* Called once per ring step with the K/V slice of rank `src` in device
 * memory; it may only queue work on ctx's stream (the ring synchronizes). */
typedef ditattn_status (*dt_device_ring_step_fn)(void *user, int step, int src,
                                                 const ditattn_tensor *k, const ditattn_tensor *v);

/* The K/V ring on device memory: double-buffered; while step s computes,
 * the slice it holds is sent on and the next one received (device pointers
 * to a CUDA-aware MPI, else through host staging buffers). Returns the
 * agreed status of the whole ring (same on every rank). */
ditattn_status dt_device_ring_run(dt_dist_job *job, const ditattn_tensor *k,
                                  const ditattn_tensor *v, dt_device_ring_step_fn step, void *user);

/* The same ring for nx (<= DT_DEVICE_RING_MAX) tensors of one shape and
 * dtype travelling together; step gets the nx slices of rank src. */
#define DT_DEVICE_RING_MAX 3
typedef ditattn_status (*dt_device_ring_step_n_fn)(void *user, int step, int src,
                                                   const ditattn_tensor *xs);
ditattn_status dt_device_ring_run_n(dt_dist_job *job, const ditattn_tensor *xs, int nx,
                                    dt_device_ring_step_n_fn step, void *user);
/* The same ring among the job's ranks members[0 .. count) only, in that
 * order (this rank among them); every rank of the job calls it at once
 * (its agreements are the job's), each with its own ring. */
ditattn_status dt_device_ring_run_among(dt_dist_job *job, const int *members, int count,
                                        const ditattn_tensor *xs, int nx,
                                        dt_device_ring_step_n_fn step, void *user);

/* What the LLSA/RoPeSLR GPU route keeps with the context between calls
 * (ctx->ext, dist_device_cache.c): the whole-sequence q, k, v buffers of
 * the last shape (no allocation, and no free that waits for the device, on
 * every call) and, for the IPC gather, this rank's exported handles and the
 * peers' buffers mapped into this process (opening a mapping costs far more
 * than a call's copies). Freed by ditattn_dist_free_cache or with the
 * context. */
/* Buffers a rank shares: q, k, v, then the key summary (dist_device_summary.c). */
enum { DT_GATHER_SUMMARY = 3, DT_GATHER_SLOTS = 4 };

typedef struct dt_gather_cache {
  int64_t B, H, N, D;
  ditattn_dtype dtype;
  void *buf[DT_GATHER_SLOTS]; /* buf[DT_GATHER_SUMMARY]: summary_bytes */
  size_t summary_bytes;
  int exported[DT_GATHER_SLOTS]; /* own_handles[i] is buf[i]'s */
  unsigned char own_handles[DT_GATHER_SLOTS * DT_IPC_HANDLE_BYTES];
  int peer_slots;              /* entries of peer_handles/peer_ptr: P * DT_GATHER_SLOTS */
  unsigned char *peer_handles; /* the handle each mapping was opened from */
  void **peer_ptr;             /* mapped peer buffers, NULL where none is open */
  /* The device ring's buffers (dist_device_ring.c), kept for the next call
   * (allocating and page-locking them took longer than the ring itself):
   * two packed slices on the device and, staged, two host copies. Never
   * mapped by peers. */
  void *ring_dev[2], *ring_host[2];
  size_t ring_bytes;
} dt_gather_cache;

/* The context's cache, its buffers (re)allocated for whole-sequence
 * (B, H, N = n_global, D) tensors like `like`: k's and v's, and q's when
 * with_q. Collective: a new shape on any rank first unmaps every peer
 * buffer on every rank (barrier), then frees the old buffers. On failure
 * the cache stays consistent. */
ditattn_status dt_gather_cache_get(dt_dist_job *job, const ditattn_tensor *like, int with_q,
                                   dt_gather_cache **cache);
/* The context's cache, or NULL when it has none. */
dt_gather_cache *dt_gather_cache_current(ditattn_context *ctx);
/* The cache's key-summary buffer, at least `bytes` (buf[DT_GATHER_SUMMARY]).
 * Collective like dt_gather_cache_get: a rank that must grow it makes every
 * rank unmap its peers' buffers first. Agreed status. */
ditattn_status dt_gather_cache_summary(dt_dist_job *job, dt_gather_cache *cache, size_t bytes);
/* The context's ring buffers of at least `bytes` each (page-locked host
 * copies too when staged), grown as needed; not collective (peers never
 * map them): the caller agrees on the status. */
ditattn_status dt_gather_cache_ring(ditattn_context *ctx, size_t bytes, int staged, void *dev[2],
                                    void *host[2]);
/* Closes every peer mapping of the cache (kept: its own buffers). */
void dt_gather_cache_close_peers(ditattn_context *ctx, dt_gather_cache *cache);
/* The same for the peers' buffers of one slot (0 .. DT_GATHER_SLOTS-1). */
void dt_gather_cache_close_slot(ditattn_context *ctx, dt_gather_cache *cache, int slot);

/* All-gather of q, k, v on device memory into the context's cached
 * whole-sequence contiguous (B, H, N, D) tensors, returned in gathered[0..2]
 * (owned by the cache: not to be freed), filled from every rank's slice: by
 * IPC when dt_dist_ipc_usable, else (or when IPC fails on any rank) as the
 * slices pass around the ring. q_span > 0: the forward reads q only within
 * the span-aligned blocks of tokens that this rank's rows touch (LLSA:
 * b^L, RoPeSLR: b), and the IPC gather copies no other q rows (the rest of
 * gathered[0] is stale; the ring fills it anyway). early_end >= 0 (the
 * key split's share reads k and v up to there), the IPC route and a
 * backend with a side stream (ops->side_*; DITATTN_DIST_OVERLAP=0 turns it
 * off): q and the k/v rows from this rank's slice end to early_end are
 * copied and waited for, the other k/v rows only queued on the side stream
 * (*deferred = the number of side chunks, dt_dist_side_chunks; chunk c
 * complete at side mark c where the backend has side_mark): the caller
 * must wait for them before anything reads them, and side_join before
 * the job ends. Returns the agreed status. */
ditattn_status dt_dist_device_gather_qkv(dt_dist_job *job, const ditattn_tensor *q,
                                         const ditattn_tensor *k, const ditattn_tensor *v,
                                         int64_t q_span, int64_t early_end,
                                         ditattn_tensor gathered[3], int *deferred);

/* The same for k and v only (gathered[1], gathered[2]; gathered[0] unset),
 * by IPC (mode: dt_dist_ipc_usable's answer, not DT_IPC_NONE; PER_HOST
 * with the ring between hosts first) only; a failure (agreed) leaves the
 * caller to take another route. */
ditattn_status dt_dist_device_gather_kv_ipc(dt_dist_job *job, int mode, const ditattn_tensor *k,
                                            const ditattn_tensor *v, ditattn_tensor gathered[3]);

/* Which ranks share a host, into job->hosts (kept on the caller's
 * communicator between calls; DITATTN_DIST_RANKS_PER_HOST=n, a test hook
 * set alike on every rank, makes hosts of n consecutive ranks). Collective;
 * agreed status. */
ditattn_status dt_dist_hosts_find(dt_dist_job *job);
/* The rank with index `local` on host `host` (needs hosts->per_host > 0). */
int dt_dist_hosts_rank(const dt_dist_hosts *hosts, int host, int local);
/* The rank on reader's host that holds rank src's slice after the ring
 * between hosts (dt_dist_device_gather_qkv): the one with src's index on
 * its host. hosts NULL (one host): src itself. */
int dt_dist_hosts_holder(const dt_dist_hosts *hosts, int reader, int src);
/* 1 when rank dst copies rank src's rows (or units) by IPC out of rank
 * from's buffers: dst needs them from elsewhere and from holds them for it. */
int dt_dist_hosts_reads_from(const dt_dist_hosts *hosts, int dst, int src, int from);

/* How the device routes may use IPC (dt_dist_ipc_usable). */
enum {
  DT_IPC_NONE = 0,     /* every slice crosses MPI (the ring) */
  DT_IPC_ONE_HOST = 1, /* every rank on one host: all by IPC */
  DT_IPC_PER_HOST = 2  /* several hosts of as many ranks each: IPC inside each */
};
/* The IPC mode: ONE_HOST when every rank shares one host, PER_HOST when
 * the ranks lie on several hosts, at least two on each and as many on each
 * (DITATTN_DIST_HOSTS=0 turns it off), NONE otherwise, or when the backend
 * cannot share device memory between processes (ops->ipc_*) or
 * DITATTN_DIST_IPC is "0" on any rank. Collective (job->hosts is found);
 * the same answer on every rank. */
int dt_dist_ipc_usable(dt_dist_job *job);

/* Rows [offset, offset + length) of a whole-sequence tensor laid out like
 * `whole`, in the buffer at base (whole's own, or a peer's mapping). */
ditattn_tensor dt_dist_rows_at(const ditattn_tensor *whole, void *base, int64_t offset,
                               int64_t length);
/* Rows [from, from + rows) of every (b, h) of whole (contiguous
 * (B, H, N, D)) copied from the same rows of the buffer at peer: one
 * strided copy by the copy engines where the backend has copy_2d, else a
 * device copy by ditattn_pool_mean with block 1 (exact). Queued on ctx's
 * stream, or (side, copy_2d only) on its side stream. */
ditattn_status dt_dist_copy_rows(ditattn_context *ctx, const ditattn_tensor *whole,
                                 const void *peer, int64_t from, int64_t rows, int side);
/* dst = src, two (B, H, n, D) tensors of one shape on ctx's device, queued
 * on its stream (or, side, copy_2d only, on its side stream): one strided
 * copy by the copy engines where the backend has copy_2d and both layouts
 * allow it (rows of D contiguous, the B·H slices at one pitch), else a
 * device copy by ditattn_pool_mean with block 1 (exact, but an element-wise
 * kernel with 64-bit index divisions, on the SMs). */
ditattn_status dt_dist_copy_tensor(ditattn_context *ctx, const ditattn_tensor *src,
                                   ditattn_tensor *dst, int side);
/* dst[i] = src[i] for `count` tensor pairs (each pair one shape) on ctx's
 * stream, as one copy_2d_batch where the backend has it and every row of
 * D is contiguous (one entry per tensor when its slices lie at one pitch,
 * else one per (b, h) slice: the DiT layout too); otherwise
 * dt_dist_copy_tensor each. DITATTN_DIST_COPY_BATCH=0: never the batch. */
ditattn_status dt_dist_copy_tensors(ditattn_context *ctx, const ditattn_tensor *src,
                                    ditattn_tensor *dst, int count);
/* dt_dist_copy_rows for the (b, h) slices [bh_lo, bh_hi) only, through
 * dt_dist_copy_tensor. */
ditattn_status dt_dist_copy_rows_of(ditattn_context *ctx, const ditattn_tensor *whole,
                                    const void *peer, int64_t from, int64_t rows, int side,
                                    int64_t bh_lo, int64_t bh_hi);

/* Every entry's copy_2d queued on ctx's stream: in one copy_2d_batch
 * launch where the backend has one (DITATTN_DIST_COPY_BATCH=0: never),
 * else one copy_2d each. The entries must not overlap (backend.h). */
ditattn_status dt_dist_copy_2d_each(ditattn_context *ctx, const dt_copy_2d_desc *descs, int count);

/* The deferred gather queues its side-stream copies in this many chunks of
 * (b, h) slices at most, so that a forward's attention of the first chunks
 * overlaps the copies of the later ones (dt_summary_arg.side_chunks). Each
 * chunk is its own attention launch: more chunks hide more of the copies
 * but leave each launch fewer blocks to fill the GPU with. */
#define DT_DIST_SIDE_CHUNKS 2
/* The chunks for BH slices on ctx: min(BH, DITATTN_DIST_SIDE_CHUNKS from
 * the environment (1 .. DT_SIDE_MARKS_MAX), else DT_DIST_SIDE_CHUNKS), or 1
 * where the backend has no side marks. */
int dt_dist_side_chunks(ditattn_context *ctx, int64_t BH);

/* Exports buf[slot] once (its handle then stays in own_handles). */
ditattn_status dt_dist_ipc_export(ditattn_context *ctx, dt_gather_cache *cache, int slot);
/* The peer src's buffer `slot` mapped into this process, from its handle of
 * this call (a kept mapping is reused while the handle stays the same). */
ditattn_status dt_dist_ipc_map(dt_dist_job *job, dt_gather_cache *cache, int src, int slot,
                               const unsigned char *handle, void **ptr);
/* Sizes the cache's peer tables for P ranks (a new P closes all). */
ditattn_status dt_dist_ipc_peer_tables(ditattn_context *ctx, dt_gather_cache *cache, int P);

/* IPC all-gather (dist_device_ipc.c): whole[0..nx) are the cache's
 * buffers, with this rank's rows already written and synchronized; fills
 * the peers' rows that this rank needs (whole[0], q: only the q_span-aligned
 * blocks its rows touch when q_span > 0, none when q_span < 0 (dense); the
 * others: every row) by copying them out of the peer's
 * buffers, mapped once and kept in the cache while the peer's handle stays the same. Returns the
 * agreed status; on success no peer reads this rank's buffers any more.
 * early_end >= 0: k/v rows past it are left on the side stream in *chunks
 * chunks (dt_dist_side_chunks); else *chunks = 0 and all are waited for. */
/* hosts (PER_HOST; NULL: one host): this rank's buffers hold the slices
 * of the ranks with its index on their hosts already, and the others come
 * from the host-mates that hold them (dt_dist_hosts_holder). */
ditattn_status dt_dist_ipc_allgather(dt_dist_job *job, const dt_dist_hosts *hosts,
                                     dt_gather_cache *cache, ditattn_tensor *whole, int nx,
                                     int64_t q_span, int64_t early_end, int *chunks);

/* LLSA and RoPeSLR forward on a GPU context, once the job has begun:
 * q, k, v all-gathered (dt_dist_device_gather_qkv), then the backend's
 * single-process forward restricted to this rank's query rows (q_row0):
 * selection and attention for the local rows only, the same kernels and
 * so the same values as one process. Ends the job. */
ditattn_status dt_dist_device_llsa_run(dt_dist_job *job, const ditattn_llsa_params *params,
                                       const ditattn_tensor *q, const ditattn_tensor *k,
                                       const ditattn_tensor *v, ditattn_tensor *out, float *lse);
ditattn_status dt_dist_device_ropeslr_run(dt_dist_job *job, const ditattn_ropeslr_params *params,
                                          const ditattn_ropeslr_weights *weights,
                                          const int32_t *pos_global, const ditattn_tensor *q,
                                          const ditattn_tensor *k, const ditattn_tensor *v,
                                          ditattn_tensor *out, float *lse_sparse);

/* The key-side work of a sparse forward split across the ranks of one host
 * (backend.h dt_key_summary), after an IPC gather: fill(share) computes
 * the units this rank owns into the cache's summary buffer; the ranks then
 * copy each other's units by IPC, and `read` runs the forward on the
 * complete summary. Returns the agreed status of fill and export, or this
 * rank's failure to queue its copies of the peers' units: DITATTN_OK when
 * the summary's copies are queued on the stream (then the caller runs its
 * forward with DT_SUMMARY_READ, after them on the stream, and waits for the
 * stream before the job's last agreement), else the caller computes
 * everything itself (DT_SUMMARY_NONE). */
typedef ditattn_status (*dt_summary_fill_fn)(ditattn_context *ctx, const dt_summary_arg *share,
                                             const void *user);
/* The token a share of the units whose first token is in [.., end) reads
 * k and v up to: the largest end of such a unit over the arrays (spans
 * need not divide each other), at most n. */
int64_t dt_dist_summary_reach(const dt_key_summary *layout, int64_t end, int64_t n);
ditattn_status dt_dist_summary_share(dt_dist_job *job, const dt_key_summary *layout,
                                     dt_summary_fill_fn fill, const void *user, void **buf);
/* Units [*lo, *hi) of array a that rank r owns (those whose first token
 * lies in its slice). */
void dt_dist_summary_units(const dt_dist_job *job, int r, const dt_key_summary *layout, int a,
                           int64_t *lo, int64_t *hi);

/* release(ctx, ptr) for a non-NULL ptr, keeping ctx's last error message
 * (cleanup after a failure must not erase the reason). */
typedef ditattn_status (*dt_dist_release_fn)(ditattn_context *ctx, void *ptr);
void dt_dist_release(ditattn_context *ctx, dt_dist_release_fn release, void *ptr);
/* dt_dist_release of a ditattn_malloc buffer. */
void dt_dist_device_free(ditattn_context *ctx, void *ptr);

/* Host staging buffers: page-locked where the backend offers it (device
 * copies from pageable memory run at a fraction of the bus bandwidth),
 * else dt_malloc. dt_dist_staging_free keeps ctx's last error. */
ditattn_status dt_dist_staging_alloc(ditattn_context *ctx, size_t bytes, void **ptr);
void dt_dist_staging_free(ditattn_context *ctx, void *ptr);

#endif
