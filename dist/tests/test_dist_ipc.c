/* The IPC all-gather of the device routes (dist_device_ipc.c: q, k, v for
 * LLSA and RoPeSLR, k and v for dense) without a GPU: a REF context whose
 * table gains a host imitation of CUDA/HIP IPC. Its device memory is
 * memfd-backed shared mappings; a handle names (pid, fd, size), and a peer
 * opens it by mapping /proc/<pid>/fd/<fd> — real memory shared between the
 * rank processes, as IPC shares device memory. Checked, at any P:
 *   - ranks of one host take the IPC route (gpu_transfer 3) and every
 *     rank's rows equal the single-process forward bit for bit;
 *   - DITATTN_DIST_IPC=0 on any one rank puts every rank on the ring (1);
 *   - a second call of the same shape maps nothing new (ipc_opened 0: the
 *     context's cache) and is exact again;
 *   - an export or open failing on one rank: every rank falls back to the
 *     ring with the same exact result, nothing stays mapped;
 *   - RoPeSLR's key-side split (a synthetic two-array key summary on the
 *     fake table): every unit reaches every rank from its owner, the bytes
 *     and mappings add up, and a failed summary export falls back exactly;
 *   - ditattn_dist_free_cache leaves no device buffer or mapping behind, and
 *     the ring's staging buffers come from host_alloc and are all freed.
 * New "device" allocations are filled with NaN, so a row the gather failed
 * to write poisons the output.
 * The GPU's own IPC is checked by dist/device/gpu_check (run.sh). */
#define _GNU_SOURCE /* memfd_create */
#include "dist_test_util.h"

#include "backends/backend.h"
#include "dist/dist_device.h"        /* DT_SIDE_MARKS_MAX */
#include "dist/dist_ropeslr_bench.h" /* a RoPeSLR problem: params, weights, positions */

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int g_rank, g_size;

/* ------------------------------------------------------------ fake IPC */
enum { MAX_MAPS = 64, HANDLE_MAGIC = 0x1dc0ffee };

typedef struct mapping {
  void *ptr;
  size_t size;
  int fd; /* own allocations: the memfd; opened peers' maps: -1 */
} mapping;

typedef struct fake_handle {
  uint32_t magic;
  int32_t pid, fd;
  uint64_t size;
} fake_handle;

static mapping g_own[MAX_MAPS], g_opened[MAX_MAPS];
static int g_fail_export, g_fail_open; /* inject on this rank */
static int g_pinned_live, g_pinned_made;
static dt_backend_ops g_fake;

static mapping *find(mapping *table, const void *ptr) {
  for (int i = 0; i < MAX_MAPS; i++)
    if (table[i].ptr && table[i].ptr == ptr) return &table[i];
  return NULL;
}

static int live(const mapping *table) {
  int n = 0;
  for (int i = 0; i < MAX_MAPS; i++) n += table[i].ptr != NULL;
  return n;
}

static ditattn_status fake_alloc(ditattn_context *ctx, size_t bytes, void **ptr) {
  mapping *slot = NULL;
  for (int i = 0; i < MAX_MAPS && !slot; i++)
    if (!g_own[i].ptr) slot = &g_own[i];
  const size_t size = bytes ? bytes : 1;
  int fd = slot ? memfd_create("ditattn_test_ipc", 0) : -1;
  if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
    if (fd >= 0) close(fd);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "fake device: %zu bytes", size);
  }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    close(fd);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "fake device: mmap %zu bytes", size);
  }
  memset(p, 0xff, size); /* NaN in every float */
  *slot = (mapping){p, size, fd};
  *ptr = p;
  return DITATTN_OK;
}

static ditattn_status fake_free(ditattn_context *ctx, void *ptr) {
  mapping *m = find(g_own, ptr);
  if (!m) return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "fake device: free of %p", ptr);
  munmap(m->ptr, m->size);
  close(m->fd);
  *m = (mapping){0};
  return DITATTN_OK;
}

static void *g_summary_buf;
static int g_fail_export_summary;

static ditattn_status fake_export(ditattn_context *ctx, void *base, void *handle) {
  const mapping *m = find(g_own, base);
  if (g_fail_export || (g_fail_export_summary && base == g_summary_buf))
    return dt_fail(ctx, DITATTN_ERR_DEVICE, "fake IPC export: injected");
  /* The contract: a whole allocation of mem_alloc, by its base. */
  if (!m) return dt_fail(ctx, DITATTN_ERR_DEVICE, "fake IPC export: %p is no allocation", base);
  const fake_handle h = {HANDLE_MAGIC, (int32_t)getpid(), m->fd, m->size};
  memset(handle, 0, DT_IPC_HANDLE_BYTES);
  memcpy(handle, &h, sizeof h);
  return DITATTN_OK;
}

static ditattn_status fake_open(ditattn_context *ctx, const void *handle, void **ptr) {
  fake_handle h;
  memcpy(&h, handle, sizeof h);
  *ptr = NULL;
  if (g_fail_open) return dt_fail(ctx, DITATTN_ERR_DEVICE, "fake IPC open: injected");
  if (h.magic != HANDLE_MAGIC || h.pid == getpid())
    return dt_fail(ctx, DITATTN_ERR_DEVICE, "fake IPC open: bad handle (pid %d)", (int)h.pid);
  mapping *slot = NULL;
  for (int i = 0; i < MAX_MAPS && !slot; i++)
    if (!g_opened[i].ptr) slot = &g_opened[i];
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)h.pid, (int)h.fd);
  int fd = slot ? open(path, O_RDONLY) : -1;
  if (fd < 0) return dt_fail(ctx, DITATTN_ERR_DEVICE, "fake IPC open: %s", path);
  void *p = mmap(NULL, (size_t)h.size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return dt_fail(ctx, DITATTN_ERR_DEVICE, "fake IPC open: mmap %s", path);
  *slot = (mapping){p, (size_t)h.size, -1};
  *ptr = p;
  return DITATTN_OK;
}

static ditattn_status fake_close(ditattn_context *ctx, void *ptr) {
  mapping *m = find(g_opened, ptr);
  if (!m) return dt_fail(ctx, DITATTN_ERR_DEVICE, "fake IPC close: %p was not opened", ptr);
  munmap(m->ptr, m->size);
  *m = (mapping){0};
  return DITATTN_OK;
}

static int g_copies_2d; /* fake_copy_2d calls in the current case */

static ditattn_status fake_copy_2d(ditattn_context *ctx, void *dst, size_t dpitch, const void *src,
                                   size_t spitch, size_t width, size_t height) {
  /* As cudaMemcpy2DAsync: a pitch under the width is an invalid argument. */
  if (dpitch < width || spitch < width)
    return dt_fail(ctx, DITATTN_ERR_DEVICE, "fake copy_2d: pitch %zu/%zu under width %zu", dpitch,
                   spitch, width);
  for (size_t r = 0; r < height; r++)
    memcpy((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
  g_copies_2d++;
  return DITATTN_OK;
}

/* fake_copy_2d_batch calls, those writing the summary buffer (the
 * exchange), entries overlapping. */
static int g_batches, g_summary_batches, g_batch_overlaps;

/* Some row of copy side a (base, pitch; width bytes a row, height rows)
 * shares a byte with some row of side b: row by row, exact (the test's
 * copies have few rows; rows of interleaved copies do not meet). */
static int sides_meet(const void *a, size_t a_pitch, const void *b, size_t b_pitch, size_t a_width,
                      size_t a_height, size_t b_width, size_t b_height) {
  for (size_t i = 0; i < a_height; i++)
    for (size_t j = 0; j < b_height; j++) {
      const uintptr_t a_lo = (uintptr_t)a + i * a_pitch, b_lo = (uintptr_t)b + j * b_pitch;
      if (a_width && b_width && a_lo < b_lo + b_width && b_lo < a_lo + a_width) return 1;
    }
  return 0;
}

/* As the GPU's batch: copy_2d's checks for each entry, which the contract
 * lets run in any order, so one entry's destination meeting another's
 * source or destination is counted as a bug. */
static ditattn_status fake_copy_2d_batch(ditattn_context *ctx, const dt_copy_2d_desc *d,
                                         int count) {
  for (int i = 0; i < count; i++)
    for (int j = 0; j < count; j++)
      g_batch_overlaps +=
          (i != j && sides_meet(d[i].dst, d[i].dpitch, d[j].dst, d[j].dpitch, d[i].width,
                                d[i].height, d[j].width, d[j].height)) ||
          sides_meet(d[i].dst, d[i].dpitch, d[j].src, d[j].spitch, d[i].width, d[i].height,
                     d[j].width, d[j].height);
  for (int i = 0; i < count; i++)
    TRY(fake_copy_2d(ctx, d[i].dst, d[i].dpitch, d[i].src, d[i].spitch, d[i].width, d[i].height));
  g_batches++;
  const mapping *sum = g_summary_buf ? find(g_own, g_summary_buf) : NULL;
  g_summary_batches += count > 0 && sum && (char *)d[0].dst >= (char *)sum->ptr &&
                       (char *)d[0].dst < (char *)sum->ptr + sum->size;
  return DITATTN_OK;
}

/* The side stream: copies wait in a queue until side_join (or a wait for
 * a mark after them) performs them, so anything that reads their rows
 * before that reads NaN. */
enum { MAX_PENDING = 512 };
typedef struct pending_copy {
  void *dst;
  const void *src;
  size_t dpitch, spitch, width, height;
} pending_copy;
static pending_copy g_pending[MAX_PENDING];
static int g_npending, g_ndone, g_side_copies, g_joins;
static int g_mark_at[DT_SIDE_MARKS_MAX], g_nmarks; /* queue length at each mark */

static ditattn_status fake_side_fork(ditattn_context *ctx) {
  (void)ctx;
  g_nmarks = 0;
  return DITATTN_OK;
}

static ditattn_status fake_side_mark(ditattn_context *ctx) {
  if (g_nmarks == DT_SIDE_MARKS_MAX) return dt_fail(ctx, DITATTN_ERR_INTERNAL, "fake: marks");
  g_mark_at[g_nmarks++] = g_npending;
  return DITATTN_OK;
}

static ditattn_status fake_side_copy_2d(ditattn_context *ctx, void *dst, size_t dpitch,
                                        const void *src, size_t spitch, size_t width,
                                        size_t height) {
  if (dpitch < width || spitch < width)
    return dt_fail(ctx, DITATTN_ERR_DEVICE, "fake side copy_2d: pitch %zu/%zu under width %zu",
                   dpitch, spitch, width);
  if (g_npending == MAX_PENDING) return dt_fail(ctx, DITATTN_ERR_INTERNAL, "fake side: queue full");
  g_pending[g_npending++] = (pending_copy){dst, src, dpitch, spitch, width, height};
  g_side_copies++;
  /* Until performed, the destination holds nothing valid: NaN, whatever an
   * earlier call left in the (reused) buffer. */
  for (size_t r = 0; r < height; r++) memset((char *)dst + r * dpitch, 0xff, width);
  return DITATTN_OK;
}

/* Performs the queued copies up to queue position `upto`. */
static void fake_side_run(ditattn_context *ctx, int upto) {
  for (; g_ndone < upto; g_ndone++) {
    const pending_copy *c = &g_pending[g_ndone];
    (void)fake_copy_2d(ctx, c->dst, c->dpitch, c->src, c->spitch, c->width, c->height);
  }
}

static ditattn_status fake_side_join(ditattn_context *ctx) {
  fake_side_run(ctx, g_npending);
  g_npending = g_ndone = 0;
  g_joins++;
  return DITATTN_OK;
}

static ditattn_status fake_host_alloc(ditattn_context *ctx, size_t bytes, void **ptr) {
  *ptr = malloc(bytes ? bytes : 1);
  if (!*ptr) return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "fake pinned: %zu bytes", bytes);
  g_pinned_live++;
  g_pinned_made++;
  return DITATTN_OK;
}

static ditattn_status fake_host_free(ditattn_context *ctx, void *ptr) {
  (void)ctx;
  free(ptr);
  g_pinned_live--;
  return DITATTN_OK;
}

/* ------------------------------------------------------------ fake key summary */
/* RoPeSLR's table gains a synthetic key summary (backend.h dt_key_summary)
 * of two arrays with different spans: FILL writes a code naming (array,
 * head, unit) into each unit this rank owns; READ checks that every unit
 * of the buffer holds its code (so each was written by its owner and
 * copied to every rank) and then runs ref/'s forward. */
static const dt_backend_ops *g_ref;
static int64_t g_summary_bad, g_summary_reads;
static int g_chunks_seen; /* side_chunks of the last forward with pending copies */
/* g_summary_buf: the buffer FILL last wrote; g_fail_export_summary: its
 * export fails on this rank (declared with fake_export). */

static void fake_layout_of(const dt_ropeslr_fwd *p, dt_key_summary *s) {
  const int64_t N = p->q->shape[2], spans[2] = {p->params.block, 3};
  const size_t unit_bytes[2] = {sizeof(double), 2 * sizeof(double)};
  memset(s, 0, sizeof *s);
  s->arrays = 2;
  for (int a = 0; a < 2; a++) {
    s->rows[a] = p->q->shape[0] * p->q->shape[1] * (a == 1 ? 2 : 1); /* any row count works */
    s->span[a] = spans[a];
    s->units[a] = (N + spans[a] - 1) / spans[a];
    s->unit_bytes[a] = unit_bytes[a];
    s->offset[a] = s->bytes;
    s->bytes += (size_t)(s->rows[a] * s->units[a]) * unit_bytes[a];
  }
}

static ditattn_status fake_slr_layout(ditattn_context *ctx, const dt_ropeslr_fwd *p,
                                      dt_key_summary *s) {
  (void)ctx;
  fake_layout_of(p, s);
  return DITATTN_OK;
}

static double unit_code(int a, int64_t h, int64_t c) { return 1e6 * a + 1e3 * (double)h + c + 0.5; }

/* 1 if any element of the (b, h) slices [bh0, bh1) of x (f32, contiguous) is NaN. */
static int slices_have_nan(const ditattn_tensor *x, int64_t bh0, int64_t bh1) {
  const float *base = x->data;
  for (int64_t i = bh0 * x->shape[2] * x->shape[3]; i < bh1 * x->shape[2] * x->shape[3]; i++)
    if (isnan(base[i])) return 1;
  return 0;
}

/* 1 if any element of rows [r0, r1) of x (f32, contiguous) is NaN. */
static int rows_have_nan(const ditattn_tensor *x, int64_t r0, int64_t r1) {
  const float *base = x->data;
  for (int64_t bh = 0; bh < x->shape[0] * x->shape[1]; bh++)
    for (int64_t i = r0 * x->shape[3]; i < r1 * x->shape[3]; i++)
      if (isnan(base[bh * x->shape[2] * x->shape[3] + i])) return 1;
  return 0;
}

static ditattn_status fake_slr_forward(ditattn_context *ctx, const dt_ropeslr_fwd *p) {
  dt_key_summary s;
  fake_layout_of(p, &s);
  /* A share reads the k and v rows of its units, past its slice too: the
   * gather must have copied them (not left them to the side stream). */
  for (int a = 0; a < s.arrays && p->summary.use == DT_SUMMARY_FILL; a++)
    for (int64_t c = 0; c < s.units[a]; c++)
      if (c * s.span[a] >= p->summary.key_lo && c * s.span[a] < p->summary.key_hi) {
        const int64_t r1 =
            (c + 1) * s.span[a] < p->k->shape[2] ? (c + 1) * s.span[a] : p->k->shape[2];
        g_summary_bad +=
            rows_have_nan(p->k, c * s.span[a], r1) + rows_have_nan(p->v, c * s.span[a], r1);
      }
  /* What the GPU forward does before its attention: chunk c of the (b, h)
   * slices waits for side mark c, and its k and v must then be complete. */
  const int chunks = p->summary.side_chunks;
  const int64_t BH = p->q->shape[0] * p->q->shape[1];
  if (chunks) g_chunks_seen = chunks;
  for (int c = 0; c < chunks; c++) {
    int64_t lo, hi;
    dt_side_chunk_bh(BH, chunks, c, &lo, &hi);
    if (p->summary.side_marked && c < g_nmarks)
      fake_side_run(ctx, g_mark_at[c]);
    else
      (void)ctx->ops->side_join(ctx);
    g_summary_bad += slices_have_nan(p->k, lo, hi) + slices_have_nan(p->v, lo, hi);
  }
  if (chunks) (void)ctx->ops->side_join(ctx);
  for (int a = 0; a < s.arrays && p->summary.use != DT_SUMMARY_NONE; a++)
    for (int64_t h = 0; h < s.rows[a]; h++)
      for (int64_t c = 0; c < s.units[a]; c++) {
        double *u = (double *)((char *)p->summary.buf + s.offset[a] +
                               (size_t)(h * s.units[a] + c) * s.unit_bytes[a]);
        const int mine = c * s.span[a] >= p->summary.key_lo && c * s.span[a] < p->summary.key_hi;
        if (p->summary.use == DT_SUMMARY_FILL && mine) {
          u[0] = unit_code(a, h, c);
          if (a == 1) u[1] = -u[0];
        } else if (p->summary.use == DT_SUMMARY_READ)
          g_summary_bad += u[0] != unit_code(a, h, c) || (a == 1 && u[1] != -unit_code(a, h, c));
      }
  if (p->summary.use == DT_SUMMARY_FILL) {
    g_summary_buf = p->summary.buf;
    return DITATTN_OK;
  }
  g_summary_reads += p->summary.use == DT_SUMMARY_READ;
  dt_ropeslr_fwd whole = *p;
  whole.summary.use = DT_SUMMARY_NONE;
  return g_ref->ropeslr_forward(ctx, &whole);
}

/* Bytes of the units rank-piece [at, at + len) owns. */
static int64_t fake_owned_bytes(const dt_key_summary *s, int64_t at, int64_t len) {
  int64_t bytes = 0;
  for (int a = 0; a < s->arrays; a++)
    for (int64_t c = 0; c < s->units[a]; c++)
      if (c * s->span[a] >= at && c * s->span[a] < at + len)
        bytes += s->rows[a] * (int64_t)s->unit_bytes[a];
  return bytes;
}

/* Hosts of two ranks: the rank on this rank's host that holds rank r's
 * slice after the ring between hosts (the one with r's index). */
static int holder_of_two(int r) { return g_rank / 2 * 2 + r % 2; }

/* ------------------------------------------------------------ cases */
typedef enum fault {
  F_NONE = 0,
  F_IPC_OFF_ON_LAST,   /* DITATTN_DIST_IPC=0 on the last rank only */
  F_EXPORT_ON_FIRST,   /* export fails on rank 0 */
  F_OPEN_ON_LAST,      /* open fails on the last rank */
  F_SUMMARY_ON_LAST,   /* the key summary's export fails on the last rank */
  F_SPLIT_OFF_ON_LAST, /* DITATTN_DIST_SPLIT_KEYS=0 on the last rank only */
  F_HOSTS_OF_TWO,      /* DITATTN_DIST_RANKS_PER_HOST=2 on every rank (not a fault) */
  F_COUNT
} fault;
static const char *const fault_names[F_COUNT] = {"none",
                                                 "IPC off on the last rank",
                                                 "export fails on rank 0",
                                                 "open fails on the last rank",
                                                 "summary export fails on the last rank",
                                                 "key split off on the last rank",
                                                 "hosts of two ranks"};

typedef enum op { OP_LLSA = 0, OP_ROPESLR, OP_DENSE, OP_COUNT } op;
static const char *const op_names[OP_COUNT] = {"llsa", "ropeslr", "dense"};

/* One case of op with fault f: LLSA with random (b, L, K), RoPeSLR with
 * the bench's problem (b = 64, ρ = 0.1, r = 64), dense (k and v gathered,
 * q not). */
static void run_case(ditattn_context *ctx, uint64_t seed, int ci, fault f, op o) {
  const int slr = o == OP_ROPESLR;
  dtu_rng rng = {seed * 2654435761u + (uint64_t)ci};
  const int64_t B = dtu_int(&rng, 1, 2), H = dtu_int(&rng, 1, 3), D = 8 * dtu_int(&rng, 1, 4);
  const int64_t block = 8 << dtu_int(&rng, 0, 1), N = dtu_int(&rng, 2 * g_size, 700);
  ditattn_llsa_params prm = ditattn_llsa_params_default();
  prm.block = block;
  prm.levels = (int)dtu_int(&rng, 1, 2);
  for (int l = 0; l < prm.levels; l++) prm.topk[l] = dtu_int(&rng, 1, 6);
  dtu_tensor q, k, v, ref;
  dtu_qkv_new(B, H, N, D, &rng, &q, &k, &v, &ref);
  int64_t lengths[64], offset = 0;
  dtu_partition(&rng, N, g_size, lengths);
  const int part = ci % 2 ? g_size - 1 - g_rank : g_rank; /* odd cases: reversed order */
  for (int r = 0; r < part; r++) offset += lengths[r];
  const int64_t BH = B * H, len = lengths[part];
  float *lse_ref = malloc((size_t)(BH * N) * sizeof(float));
  float *lse = malloc((size_t)(BH * len) * sizeof(float));
  for (int64_t i = 0; i < BH * len; i++) lse[i] = NAN;
  dt_slr_bench_problem sp;
  memset(&sp, 0, sizeof sp);
  ditattn_status st = slr ? dt_slr_bench_problem_new(ctx, N, H, D, 0, N, &sp) : DITATTN_OK;
  if (st == DITATTN_OK)
    st = slr ? ditattn_ropeslr_forward(ctx, &sp.params, &sp.weights, sp.pos, &q.t, &k.t, &v.t,
                                       &ref.t, lse_ref, NULL)
         : o == OP_LLSA ? ditattn_llsa_forward(ctx, &prm, &q.t, &k.t, &v.t, &ref.t, lse_ref, NULL)
                        : ditattn_dense_forward(ctx, &q.t, &k.t, &v.t, 0.0f, &ref.t, lse_ref);
  dtu_check(st == DITATTN_OK, "case %d: single-process %s failed: %s", ci, op_names[o],
            ditattn_last_error(ctx));
  dtu_tensor ql = dtu_tensor_new(B, H, len, D, 1, 0), kl = dtu_tensor_new(B, H, len, D, 0, 1),
             vl = dtu_tensor_new(B, H, len, D, 0, 0), ol = dtu_tensor_new(B, H, len, D, 0, 0);
  dtu_copy_slice(&ql, &q, offset);
  dtu_copy_slice(&kl, &k, offset);
  dtu_copy_slice(&vl, &v, offset);

  const int last = g_rank == g_size - 1;
  if (f == F_IPC_OFF_ON_LAST && last) setenv("DITATTN_DIST_IPC", "0", 1);
  if (f == F_SPLIT_OFF_ON_LAST && last) setenv("DITATTN_DIST_SPLIT_KEYS", "0", 1);
  if (f == F_HOSTS_OF_TWO) setenv("DITATTN_DIST_RANKS_PER_HOST", "2", 1);
  /* Hosts of two, every other pair of cases: MPI taken as CUDA-aware, so
   * the rings between hosts hand it the "device" buffers themselves. */
  const int aware = f == F_HOSTS_OF_TWO && (ci / 2) % 2 == 1;
  if (aware) setenv("DITATTN_DIST_CUDA_AWARE", "1", 1);
  g_fail_export = f == F_EXPORT_ON_FIRST && g_rank == 0;
  g_fail_open = f == F_OPEN_ON_LAST && last;
  g_fail_export_summary = f == F_SUMMARY_ON_LAST && last;
  g_summary_buf = NULL; /* an earlier case's address may be reused for q, k, v */
  g_pinned_made = 0;
  g_copies_2d = 0;
  /* Two cases in three copy with copy_2d (the copy engines' entry), the
   * third through ditattn_pool_mean (backends without it). */
  g_fake.copy_2d = ci % 3 ? fake_copy_2d : NULL;
  /* Of those, every other one has the batch entry too. */
  g_fake.copy_2d_batch = ci % 3 == 2 ? fake_copy_2d_batch : NULL;
  g_batches = g_summary_batches = g_batch_overlaps = 0;
  const ditattn_dist_slice slice = {N, offset, len};
  /* IPC needs a peer; any rank's refusal or failure means the ring. Hosts
   * of two: P = 2 is one host, P = 3 hosts of 2 and 1 (the ring), P = 4
   * two hosts of two (the ring between hosts, then IPC: 4). */
  int expect =
      g_size > 1 && (f == F_NONE || f == F_SUMMARY_ON_LAST || f == F_SPLIT_OFF_ON_LAST) ? 3 : 1;
  if (f == F_HOSTS_OF_TWO) expect = g_size == 2 ? 3 : g_size == 4 ? 4 : aware ? 2 : 1;
  /* RoPeSLR over IPC splits its key summary, where copies have copy_2d (on
   * several hosts after the units' ring between them). */
  const int split =
      slr && ci % 3 != 0 && ((expect == 3 && (f == F_NONE || f == F_HOSTS_OF_TWO)) || expect == 4);
  /* Second calls of the same shape: nothing mapped anew. */
  const int calls = f == F_NONE || f == F_HOSTS_OF_TWO ? 2 : 1;
  for (int call = 0; call < calls; call++) {
    for (int64_t i = 0; i < BH * len; i++) lse[i] = NAN;
    dtu_tensor_free(&ol);
    ol = dtu_tensor_new(B, H, len, D, 0, 0); /* NaN: poisoned */
    g_summary_bad = g_summary_reads = 0;
    g_side_copies = g_joins = g_chunks_seen = 0;
    /* 1 .. 4 chunks of (b, h) slices for the deferred copies, any B·H. */
    const int side_chunks = 1 + (ci + call) % 4;
    char chunks_env[8];
    snprintf(chunks_env, sizeof chunks_env, "%d", side_chunks);
    setenv("DITATTN_DIST_SIDE_CHUNKS", chunks_env, 1);
    /* Odd cases: the ring's staged messages in chunks of a few rows. */
    if (ci % 2) setenv("DITATTN_DIST_RING_CHUNK_BYTES", "64", 1);
    if (slr)
      st = ditattn_dist_ropeslr_forward(ctx, MPI_COMM_WORLD, &slice, &sp.params, &sp.weights,
                                        sp.pos + 3 * offset, &ql.t, &kl.t, &vl.t, &ol.t, lse);
    else if (o == OP_LLSA)
      st = ditattn_dist_llsa_forward(ctx, MPI_COMM_WORLD, &slice, &prm, &ql.t, &kl.t, &vl.t, &ol.t,
                                     lse);
    else
      st = ditattn_dist_dense_forward(ctx, MPI_COMM_WORLD, &slice, &ql.t, &kl.t, &vl.t, 0.0f, &ol.t,
                                      lse);
    unsetenv("DITATTN_DIST_IPC");
    unsetenv("DITATTN_DIST_SPLIT_KEYS");
    unsetenv("DITATTN_DIST_SIDE_CHUNKS");
    unsetenv("DITATTN_DIST_RING_CHUNK_BYTES");
    g_fail_export = g_fail_open = g_fail_export_summary = 0;
    ditattn_dist_stats stats;
    ditattn_dist_last_stats(&stats);
    dtu_check(st == DITATTN_OK, "case %d (%s) P=%d call %d: dist %s failed: %s", ci, fault_names[f],
              g_size, call, op_names[o], ditattn_last_error(ctx));
    dtu_check(stats.gpu_transfer == expect, "case %d (%s) P=%d: gpu_transfer %d, expected %d", ci,
              fault_names[f], g_size, stats.gpu_transfer, expect);
    /* With the split the bulk k/v copies go on the side stream (copy_2d
     * cases): none may be left unjoined. */
    const int may_defer = slr && g_size > 1 && ci % 3 != 0; /* the gather may defer */
    /* A forward reading the split summary waits for the deferred copies
     * in min(B·H, DITATTN_DIST_SIDE_CHUNKS) chunks (the others join them). */
    const int chunks = (int)(BH < side_chunks ? BH : side_chunks);
    dtu_check(g_npending == 0 && (g_side_copies == 0 || g_joins > 0) &&
                  (may_defer || g_side_copies == 0) &&
                  (!split || g_side_copies == 0 || g_chunks_seen == chunks),
              "case %d (%s) P=%d call %d: %d side copies pending, %d queued, %d joins, %d "
              "chunks (expected %d)",
              ci, fault_names[f], g_size, call, g_npending, g_side_copies, g_joins, g_chunks_seen,
              chunks);
    g_npending = 0;
    /* The summary exchange is the batch's user: one batch per call that
     * copies peers' units, where the table has the entry. */
    dtu_check(g_batch_overlaps == 0 && (ci % 3 == 2 || g_batches == 0) &&
                  (ci % 3 == 2 && split ? g_summary_batches == call + 1 : g_summary_batches == 0),
              "case %d (%s) P=%d call %d: %d copy batches, %d of the summary, %d overlapping "
              "entries",
              ci, fault_names[f], g_size, call, g_batches, g_summary_batches, g_batch_overlaps);
    dtu_check(stats.keys_split == split && g_summary_reads == split && g_summary_bad == 0,
              "case %d (%s) P=%d call %d: keys_split %d (expected %d), %lld summary reads, %lld "
              "summary units wrong",
              ci, fault_names[f], g_size, call, stats.keys_split, split, (long long)g_summary_reads,
              (long long)g_summary_bad);
    const double e_out = dtu_rel_err_slice(&ol.t, &ref.t, offset);
    const double e_lse = dtu_rel_err_lse(lse, lse_ref, BH, len, N, offset);
    /* Gathers are exact; dense's ring (the fallback) merges partials. */
    const double tol = o == OP_DENSE && (expect == 1 || expect == 2) && g_size > 1 ? 1e-5 : 0.0;
    dtu_check(e_out <= tol && e_lse <= tol,
              "case %d (%s, %s) P=%d call %d B=%lld H=%lld N=%lld D=%lld b=%lld L=%d "
              "slice=[%lld,+%lld): out rel err %g, lse rel err %g (tolerance %g)",
              ci, op_names[o], fault_names[f], g_size, call, (long long)B, (long long)H,
              (long long)N, (long long)D, (long long)block, prm.levels, (long long)offset,
              (long long)len, e_out, e_lse, tol);
    if (expect == 3) {
      /* k, v: every other row; q: only the other rows of the blocks (LLSA:
       * of b^L tokens, RoPeSLR: of b) this rank's rows touch (the forward
       * reads no other q). */
      int64_t span = slr ? sp.params.block : 1;
      for (int l = 0; l < prm.levels && span < N && !slr; l++) span *= block;
      const int64_t q_lo = offset / span * span,
                    q_hi = (offset + len - 1) / span * span + span < N
                               ? (offset + len - 1) / span * span + span
                               : N;
      const int64_t row = BH * D * (int64_t)sizeof(float);
      const int64_t q_rows = o == OP_DENSE ? 0 : q_hi - q_lo - len; /* dense: no q */
      /* Split: plus the summary units of every other piece. */
      dt_key_summary sl;
      const dt_ropeslr_fwd shape = {.params = sp.params, .q = &q.t};
      if (split) fake_layout_of(&shape, &sl); /* sp is set for RoPeSLR only */
      int64_t summary_bytes = 0;
      int summary_peers = 0;
      for (int r = 0, at = 0; r < g_size && split; at += (int)lengths[r], r++) {
        const int64_t owned = fake_owned_bytes(&sl, at, lengths[r]);
        if (r == part) continue;
        summary_bytes += owned;
        summary_peers += owned > 0;
      }
      const int64_t want = (2 * (N - len) + q_rows) * row + summary_bytes;
      dtu_check(stats.ring_bytes_received == want,
                "case %d: IPC received %lld bytes, expected %lld (q rows [%lld, %lld))", ci,
                (long long)stats.ring_bytes_received, (long long)want, (long long)q_lo,
                (long long)q_hi);
      /* Every slice is non-empty: k and v of each peer, q of the peers
       * holding rows of [q_lo, q_hi), mapped in the first call only. */
      int q_peers = 0;
      for (int r = 0, at = 0; r < g_size; at += (int)lengths[r], r++) {
        const int holder = ci % 2 ? g_size - 1 - r : r; /* rank holding piece r */
        q_peers += o != OP_DENSE && holder != g_rank && at < q_hi && at + lengths[r] > q_lo;
      }
      const int mapped = 2 * (g_size - 1) + q_peers + summary_peers;
      const int opened = call == 0 ? mapped : 0;
      dtu_check(stats.ipc_opened == opened, "case %d call %d: %d peer buffers mapped, expected %d",
                ci, call, stats.ipc_opened, opened);
      /* A failed summary exchange maps no summary and keeps the rest. */
      dtu_check(live(g_opened) == mapped, "case %d: %d peer mappings kept, expected %d", ci,
                live(g_opened), mapped);
      dtu_check((g_copies_2d > 0) == (ci % 3 != 0), "case %d: %d copy_2d calls", ci, g_copies_2d);
      /* What the ranks read of each other adds up (RoPeSLR's bytes_sent
       * also counts its positions' all-gather). */
      int64_t sums[2] = {stats.bytes_sent, stats.ring_bytes_received}, all[2];
      MPI_Allreduce(sums, all, 2, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
      dtu_check(slr || all[0] == all[1], "case %d: peers read %lld bytes in all, received %lld", ci,
                (long long)all[0], (long long)all[1]);
    } else if (expect == 4) {
      /* The host-mate's k and v, and its q where it holds q rows this
       * rank's blocks touch, mapped in the first call only. */
      int64_t span = slr ? sp.params.block : 1;
      for (int l = 0; l < prm.levels && span < N && !slr; l++) span *= block;
      const int64_t q_lo = offset / span * span, q_hi = (offset + len - 1) / span * span + span;
      int q_mate = 0;
      for (int r = 0, at = 0; r < g_size; at += (int)lengths[r], r++) {
        const int owner = ci % 2 ? g_size - 1 - r : r; /* rank holding piece r */
        q_mate |= o != OP_DENSE && owner != g_rank && holder_of_two(owner) != g_rank && at < q_hi &&
                  at + lengths[r] > q_lo;
      }
      /* Split: the host-mate's summary, where it holds units (its own, or
       * those of the other host's rank with its index). */
      dt_key_summary sl;
      const dt_ropeslr_fwd shape = {.params = sp.params, .q = &q.t};
      if (split) fake_layout_of(&shape, &sl);
      int summary_mate = 0;
      int64_t summary_all = 0;
      for (int r = 0, at = 0; r < g_size && split; at += (int)lengths[r], r++) {
        const int owner = ci % 2 ? g_size - 1 - r : r;
        const int64_t owned = fake_owned_bytes(&sl, at, lengths[r]);
        summary_all += owned;
        summary_mate |= owner != g_rank && holder_of_two(owner) != g_rank && owned > 0;
      }
      const int mapped = 2 + q_mate + summary_mate;
      dtu_check(stats.ipc_opened == (call == 0 ? mapped : 0) && live(g_opened) == mapped,
                "case %d (%s) call %d: %d peer buffers mapped, %d kept, expected %d", ci,
                fault_names[f], call, stats.ipc_opened, live(g_opened), mapped);
      int64_t sums[2] = {stats.bytes_sent, stats.ring_bytes_received}, all[2];
      MPI_Allreduce(sums, all, 2, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
      dtu_check(slr || all[0] == all[1], "case %d: peers read %lld bytes in all, received %lld", ci,
                (long long)all[0], (long long)all[1]);
      /* Between the hosts crossed exactly the slices of the other host's
       * rank with this rank's index (the ring of two: k, v, and q but for
       * dense); the rest came by IPC. */
      const int64_t row = BH * D * (int64_t)sizeof(float);
      const int other = (g_rank + 2) % 4;
      const int other_piece = ci % 2 ? g_size - 1 - other : other;
      const int64_t ring = (o == OP_DENSE ? 2 : 3) * lengths[other_piece] * row;
      dtu_check(stats.ring_bytes_received > ring &&
                    stats.ring_bytes_received <= ring + 3 * (N - len) * row + summary_all,
                "case %d: received %lld bytes, the ring's %lld plus IPC", ci,
                (long long)stats.ring_bytes_received, (long long)ring);
    } else {
      dtu_check(live(g_opened) == 0, "case %d (%s): %d peer buffers still mapped after the ring",
                ci, fault_names[f], live(g_opened));
    }
    /* P = 1 runs on the caller's tensors: no cache at all. Dense caches k
     * and v when it tried IPC (even if it then took its ring). */
    /* RoPeSLR adds its summary buffer where it tried the split, and a ring
     * its two packed-slice buffers (kept for the next call). */
    const int summary_buf =
        slr && (expect == 3 || expect == 4) && ci % 3 != 0 && f != F_SPLIT_OFF_ON_LAST;
    const int ring_bufs = g_size > 1 && expect != 3 ? 2 : 0;
    const int cached = g_size == 1     ? 0
                       : o != OP_DENSE ? 3 + summary_buf + ring_bufs
                       : f == F_IPC_OFF_ON_LAST || (f == F_HOSTS_OF_TWO && expect < 3)
                           ? ring_bufs
                           : 2 + ring_bufs;
    dtu_check(live(g_own) == cached,
              "case %d (%s): %d device allocations between calls, expected %d", ci, fault_names[f],
              live(g_own), cached);
  }
  unsetenv("DITATTN_DIST_RANKS_PER_HOST");
  unsetenv("DITATTN_DIST_CUDA_AWARE");
  st = ditattn_dist_free_cache(ctx, MPI_COMM_WORLD);
  dtu_check(st == DITATTN_OK, "case %d: free_cache: %s", ci, ditattn_strerror(st));
  dtu_check(live(g_opened) == 0, "case %d (%s): %d peer buffers mapped after free_cache", ci,
            fault_names[f], live(g_opened));
  dtu_check(live(g_own) == 0, "case %d (%s): %d device allocations after free_cache", ci,
            fault_names[f], live(g_own));
  dtu_check(g_pinned_live == 0, "case %d (%s): %d staging buffers not freed", ci, fault_names[f],
            g_pinned_live);
  if (expect != 3 && g_size > 1 && !aware)
    dtu_check(g_pinned_made > 0, "case %d (%s): the ring staged without host_alloc", ci,
              fault_names[f]);
  dtu_tensor *all[] = {&q, &k, &v, &ref, &ql, &kl, &vl, &ol};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dtu_tensor_free(all[i]);
  dt_slr_bench_problem_free(&sp);
  free(lse);
  free(lse_ref);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  const uint64_t seed = dtu_seed(MPI_COMM_WORLD);
  setenv("DITATTN_DIST_DEVICE_PATH", "1", 1);
  unsetenv("DITATTN_DIST_CUDA_AWARE");
  unsetenv("DITATTN_DIST_IPC");
  unsetenv("DITATTN_DIST_SPLIT_KEYS");
  unsetenv("DITATTN_DIST_OVERLAP");
  ditattn_context *ctx = NULL;
  ditattn_status st = ditattn_context_create(DITATTN_BACKEND_REF, &ctx);
  dtu_check(st == DITATTN_OK, "ref context: %s", ditattn_strerror(st));
  if (st == DITATTN_OK) {
    const dt_backend_ops *ref = ctx->ops;
    g_fake = *ref;
    g_fake.mem_alloc = fake_alloc;
    g_fake.mem_free = fake_free;
    g_fake.ipc_export = fake_export;
    g_fake.ipc_open = fake_open;
    g_fake.ipc_close = fake_close;
    g_fake.host_alloc = fake_host_alloc;
    g_fake.host_free = fake_host_free;
    g_ref = ref;
    g_fake.ropeslr_forward = fake_slr_forward;
    g_fake.ropeslr_summary_layout = fake_slr_layout;
    g_fake.side_fork = fake_side_fork;
    g_fake.side_copy_2d = fake_side_copy_2d;
    g_fake.side_join = fake_side_join;
    g_fake.side_mark = fake_side_mark;
    ctx->ops = &g_fake;
    int ci = 0;
    for (int f = 0; f < F_COUNT; f++)
      for (int rep = 0; rep < 6; rep++) run_case(ctx, seed, ci++, (fault)f, (op)(rep / 2));
    ditattn_dist_free_cache(ctx, MPI_COMM_WORLD); /* its buffers came from the fake table */
    ctx->ops = ref;
  }
  ditattn_context_destroy(ctx);
  int rc = dtu_finish(MPI_COMM_WORLD, "test_dist_ipc");
  MPI_Finalize();
  return rc;
}
