/* LLSA forward on the GPU (spec §1-3): pooling, hierarchical top-K selection
 * and the fused sparse + enrichment attention. */
#include "attend_mma.cuh"

#include <limits.h>
#include <string.h>

namespace DT_GPU_NS {

/* ln(cnt_l[c]): the number of original tokens pooled token c of level l covers. */
DT_DEV float ln_count(const dt_gpu_llsa &p, int level, long long c) {
  const long long span = p.span[level], rest = p.N - c * span;
  return logf((float)(rest < span ? rest : span));
}

/* The key list of one level-1 query block g1, as fixed-capacity segments of
 * b positions (unused positions are masked):
 *   keff_1 segments: the tokens of each selected level-1 block   (w = 1)
 *   for l = 1 .. L-1, keff_{l+1} segments: the level-l children of each block
 *     selected at level l+1 for this query's level-(l+1) block     (w = cnt_l)
 *   then the n_L coarsest pooled tokens                            (w = cnt_L) */
struct LlsaKeys {
  dt_gpu_llsa p;
  long long bh0, g10; /* set by begin for resolve */

  DT_DEV void begin(long long bh, long long g1) { bh0 = bh, g10 = g1; }
  DT_DEV long long count() const {
    long long m = p.n[p.L];
    for (int l = 1; l <= p.L; l++) m += p.b * p.keff[l - 1];
    return m;
  }
  DT_DEV KeyRef resolve(long long pos) const { return resolve_in(bh0, g10, pos); }
  /* Position pos of the list of (bh, level-1 block g1); a const member, so
   * that a kernel may keep the policy in parameter space (attend_mma.cuh)
   * instead of a per-thread local copy. The query's block at level l is
   * g1 / b^(l-1) = g1 / span[l-1] (span saturates at N only past g1's range). */
  DT_DEV KeyRef resolve_in(long long bh, long long g1, long long pos) const {
    KeyRef r = {-1, 0, 0.0f};
    long long len = p.b * p.keff[0];
    if (pos < len) {
      const long long blk = p.sel[0][(bh * p.n[1] + g1) * p.keff[0] + pos / p.b];
      const long long tok = blk * p.b + pos % p.b;
      if (blk >= 0 && tok < p.N) r.level = 0, r.row = tok;
      return r;
    }
    pos -= len;
    for (int l = 1; l < p.L; l++) {
      len = p.b * p.keff[l];
      if (pos < len) {
        const long long g = g1 / p.span[l]; /* this query's block at level l + 1 */
        const long long par = p.sel[l][(bh * p.n[l + 1] + g) * p.keff[l] + pos / p.b];
        const long long c = par * p.b + pos % p.b;
        if (par >= 0 && c < p.n[l]) r.level = l, r.row = c, r.lnw = ln_count(p, l, c);
        return r;
      }
      pos -= len;
    }
    r.level = p.L;
    r.row = pos;
    r.lnw = ln_count(p, p.L, pos);
    return r;
  }
  /* The n_L coarsest pooled tokens end every list of a (b, h); when a
   * block's tiles all belong to one query group, its whole list is common. */
  DT_DEV long long shared_from(bool one_group) const { return one_group ? 0 : count() - p.n[p.L]; }
  DT_DEV const float *pooled_k(int level, long long bh, long long row) const {
    return p.pk[level - 1] + (bh * p.n[level] + row) * p.D;
  }
  DT_DEV const float *pooled_v(int level, long long bh, long long row) const {
    return p.pv[level - 1] + (bh * p.n[level] + row) * p.D;
  }
};

/* ---------------------------------------------------------------- pooling */
/* The level-l units the pool launch covers: pooled q for [q_lo, q_hi),
 * pooled k and v for [kv_lo, kv_hi), and threads for their hull [lo, lo + n).
 * The hull wastes no thread in any mode: the whole forward's kv range holds
 * its q range, a summary fill has no q range and a summary read no kv range. */
struct PoolUnits {
  long long lo, n, q_lo, q_hi, kv_lo, kv_hi;
  bool with_pk; /* the f32 pooled k too (not part of the key summary) */
};

static PoolUnits pool_units(const dt_gpu_llsa *p, int level) {
  PoolUnits u;
  u.q_lo = p->blk_lo[level];
  u.q_hi = u.q_lo + p->blk_n[level];
  u.kv_lo = 0;
  u.kv_hi = p->kv_pool == DT_GPU_KV_ALL ? p->n[level] : 0;
  if (p->kv_pool == DT_GPU_KV_RANGE) {
    u.kv_lo = p->kv_lo[level];
    u.kv_hi = u.kv_lo + p->kv_n[level];
  }
  u.with_pk = p->kv_pool == DT_GPU_KV_ALL;
  const bool no_q = u.q_hi <= u.q_lo, no_kv = u.kv_hi <= u.kv_lo;
  long long lo = u.q_lo < u.kv_lo ? u.q_lo : u.kv_lo, hi = u.q_hi > u.kv_hi ? u.q_hi : u.kv_hi;
  if (no_q) lo = u.kv_lo, hi = u.kv_hi;
  if (no_kv) lo = u.q_lo, hi = u.q_hi;
  u.lo = lo;
  u.n = no_q && no_kv ? 0 : hi - lo;
  return u;
}

/* Every level's pooling in ONE launch, and (DT_GPU_KV_READY) the f32 cast
 * of every level's pooled k: a dist/ rank's pooling is a few small,
 * latency-bound pieces (its share of the coarse means, one thread per
 * output summing b^l tokens), which one launch runs side by side instead of
 * one after another. Slot s holds level L - s: the coarsest, slowest
 * threads are handed out first. Blocks [0, pool_blocks) pool; the rest
 * cast 32 × 32 tiles. */
static const int kPoolThreads = 256, kCastTile = 32;

struct PoolPlan {
  PoolUnits u[DITATTN_LLSA_MAX_LEVELS];        /* [level - 1] */
  long long end[DITATTN_LLSA_MAX_LEVELS];      /* pool elements of slots 0 .. s */
  long long cast_end[DITATTN_LLSA_MAX_LEVELS]; /* cast tiles of levels 1 .. l */
  long long pool_total, cast_total;
  unsigned pool_blocks;
};

static PoolPlan pool_plan(const dt_gpu_llsa *p) {
  PoolPlan plan;
  memset(&plan, 0, sizeof plan);
  const long long BH = p->B * p->H, dtiles = (p->D + kCastTile - 1) / kCastTile;
  for (int s = 0; s < p->L; s++) {
    const int level = p->L - s;
    plan.u[level - 1] = pool_units(p, level);
    plan.pool_total += BH * plan.u[level - 1].n * p->D;
    plan.end[s] = plan.pool_total;
  }
  for (int l = 1; l <= p->L; l++) {
    if (p->kv_pool == DT_GPU_KV_READY)
      plan.cast_total += BH * ((p->n[l] + kCastTile - 1) / kCastTile) * dtiles;
    plan.cast_end[l - 1] = plan.cast_total;
  }
  plan.pool_blocks = plan.pool_total > 0 ? stride_grid(plan.pool_total, kPoolThreads) : 0;
  return plan;
}

/* One thread per (b·h, c, d) of the units u of one level: q and k means
 * kept in double for the selection, k and v means in f32 for the attention.
 * Outputs are laid out as dt_gpu_llsa says, whatever the range. */
template <typename T>
DT_DEV void pool_one(const View<const T> &q, const View<const T> &k, const View<const T> &v,
                     const dt_gpu_llsa &p, int level, const PoolUnits &u, long long e) {
  const long long nl = p.n[level], span = p.span[level], D = p.D;
  const long long d = e % D, c = u.lo + e / D % u.n, bh = e / D / u.n;
  const long long j0 = c * span, j1 = p.N - j0 > span ? j0 + span : p.N;
  const long long at = (bh * nl + c) * D + d;
  if (c >= u.q_lo && c < u.q_hi) p.pq64[level - 1][at] = block_mean(q, bh, j0, j1, d);
  if (c >= u.kv_lo && c < u.kv_hi) {
    const double mk = block_mean(k, bh, j0, j1, d);
    p.pk64[level - 1][(bh * D + d) * nl + c] = mk; /* [B·H][D][n_l] */
    if (u.with_pk) p.pk[level - 1][at] = (float)mk;
    p.pv[level - 1][at] = (float)block_mean(v, bh, j0, j1, d);
  }
}

/* Cast tile `tile` of the plan: pk = (float)pk64 for 32 units × 32
 * channels, through shared memory so that both the [D][n_l] reads and the
 * [n_l][D] writes are coalesced. */
DT_DEV void cast_tile(const dt_gpu_llsa &p, const PoolPlan &plan, long long tile,
                      double (*sh)[kCastTile + 1]) {
  int l = 1;
  while (tile >= plan.cast_end[l - 1]) l++;
  tile -= l > 1 ? plan.cast_end[l - 2] : 0;
  const long long nl = p.n[l], D = p.D, dtiles = (D + kCastTile - 1) / kCastTile;
  const long long d0 = tile % dtiles * kCastTile,
                  c0 = tile / dtiles % ((nl + kCastTile - 1) / kCastTile) * kCastTile,
                  bh = tile / dtiles / ((nl + kCastTile - 1) / kCastTile);
  const int t = threadIdx.x, x = t % kCastTile;
  for (int y = t / kCastTile; y < kCastTile; y += kPoolThreads / kCastTile) {
    const long long d = d0 + y, c = c0 + x;
    sh[y][x] = d < D && c < nl ? p.pk64[l - 1][(bh * D + d) * nl + c] : 0.0;
  }
  __syncthreads();
  for (int y = t / kCastTile; y < kCastTile; y += kPoolThreads / kCastTile) {
    const long long c = c0 + y, d = d0 + x;
    if (d < D && c < nl) p.pk[l - 1][(bh * nl + c) * D + d] = (float)sh[x][y];
  }
  __syncthreads(); /* the tile is reused by the block's next one */
}

template <typename T>
__global__ void __launch_bounds__(kPoolThreads)
    llsa_pool_kernel(View<const T> q, View<const T> k, View<const T> v, dt_gpu_llsa p,
                     PoolPlan plan) {
  __shared__ double sh[kCastTile][kCastTile + 1];
  if (blockIdx.x < plan.pool_blocks) {
    for (long long e = blockIdx.x * (long long)kPoolThreads + threadIdx.x; e < plan.pool_total;
         e += (long long)plan.pool_blocks * kPoolThreads) {
      int s = 0;
      while (e >= plan.end[s]) s++;
      const int level = p.L - s;
      pool_one(q, k, v, p, level, plan.u[level - 1], e - (s > 0 ? plan.end[s - 1] : 0));
    }
    return;
  }
  const long long cast_blocks = gridDim.x - plan.pool_blocks;
  for (long long tile = blockIdx.x - plan.pool_blocks; tile < plan.cast_total; tile += cast_blocks)
    cast_tile(p, plan, tile, sh);
}

template <typename T>
static int llsa_pool_typed(const dt_gpu_llsa *p, const ditattn_tensor *q, const ditattn_tensor *k,
                           const ditattn_tensor *v, gpuStream_t s) {
  const PoolPlan plan = pool_plan(p);
  const long long cast_blocks = plan.cast_total < (1 << 16) ? plan.cast_total : (1 << 16);
  const long long blocks = (long long)plan.pool_blocks + cast_blocks;
  if (blocks <= 0) return 0;
  llsa_pool_kernel<T><<<(unsigned)blocks, kPoolThreads, 0, s>>>(
      make_view<const T>(q), make_view<const T>(k), make_view<const T>(v), *p, plan);
  return launch_status();
}

/* ---------------------------------------------------------------- selection */
/* Scores of one level, in tiles: a block scores up to kScoreRows query-block
 * rows that share their candidate list (the children of one parent's picks,
 * or at the coarsest level all n_L blocks) against kScoreCands candidates,
 * with the candidates' pooled k and the rows' pooled q staged in shared
 * memory kScoreDims channels at a time. Each pooled k is read from memory
 * once per tile instead of once per row: a rank's selection was bound by
 * re-reading them. Each score is still Σ_d q[d]·k[d] in double with
 * unfused multiplies and adds in d order: the operations of
 * ref/llsa_select.c, so scores and therefore selections equal ref/'s
 * exactly, ties included. */
static const int kScoreThreads = 256, kScoreRows = 16, kScoreCands = 64, kScoreDims = 64;
static const int kRowStep = kScoreThreads / kScoreCands; /* rows (or channels) a pass covers */
static const int kRowsPerThread = kScoreRows / kRowStep;
static_assert(kScoreDims == kScoreCands, "a thread stages channel jl of its q rows");

/* The launch's tiles: rows [row0, row0 + rows) of the flattened (b·h,
 * block) list, b·h in [bh0, bh0 + nbh); per b·h, `segs` segments of
 * seg_rows blocks with one candidate list each, cut into tiles_per_seg
 * tiles; cand_chunks chunks of candidates. */
struct ScoreGrid {
  long long row0, rows, ncand, bh0, seg_rows, segs, tiles_per_seg, cand_chunks;
};

__global__ void __launch_bounds__(kScoreThreads)
    select_score_kernel(dt_gpu_llsa p, int level, ScoreGrid sg, double *scores, int *idx) {
  __shared__ double ks[kScoreDims][kScoreCands];
  __shared__ double qs[kScoreRows][kScoreDims];
  __shared__ int cand[kScoreCands];
  long long x = blockIdx.x;
  const long long chunk = x % sg.cand_chunks;
  x /= sg.cand_chunks;
  const long long tile = x % sg.tiles_per_seg;
  x /= sg.tiles_per_seg;
  const long long seg = x % sg.segs, bh = sg.bh0 + x / sg.segs;
  const long long cnt = p.blk_n[level], lo = p.blk_lo[level], nl = p.n[level];
  /* This tile's blocks [g_lo, g_hi): within its segment, the level's
   * blocks and the launch's rows. Block-uniform, so returns are safe. */
  const long long seg_lo = (lo / sg.seg_rows + seg) * sg.seg_rows;
  long long g_lo = seg_lo + tile * kScoreRows;
  long long g_hi =
      g_lo + kScoreRows < seg_lo + sg.seg_rows ? g_lo + kScoreRows : seg_lo + sg.seg_rows;
  const long long first = lo + sg.row0 - bh * cnt, last = lo + sg.row0 + sg.rows - bh * cnt;
  if (g_lo < lo) g_lo = lo;
  if (g_lo < first) g_lo = first;
  if (g_hi > lo + cnt) g_hi = lo + cnt;
  if (g_hi > last) g_hi = last;
  if (g_lo >= g_hi) return;
  const long long nrows = g_hi - g_lo, j0 = chunk * kScoreCands, D = p.D;
  const int t = threadIdx.x;

  if (t < kScoreCands) {
    const long long j = j0 + t;
    long long c = j < sg.ncand ? j : nl;
    if (level < p.L && j < sg.ncand) { /* the children of the parent's picks */
      const int32_t *parents = p.sel[level] + (bh * p.n[level + 1] + g_lo / p.b) * p.keff[level];
      const long long par = parents[j / p.b];
      c = par < 0 ? nl : par * p.b + j % p.b;
    }
    cand[t] = c < nl ? (int)c : -1;
  }
  const int jl = t % kScoreCands, r0 = t / kScoreCands;
  double acc[kRowsPerThread];
#pragma unroll
  for (int m = 0; m < kRowsPerThread; m++) acc[m] = 0.0;
  const double *kt = p.pk64[level - 1] + bh * D * nl; /* [D][n_l] */
  const double *qt = p.pq64[level - 1] + (bh * nl + g_lo) * D;
  for (long long d0 = 0; d0 < D; d0 += kScoreDims) {
    const int dn = D - d0 < kScoreDims ? (int)(D - d0) : kScoreDims;
    __syncthreads(); /* cand written; the previous chunk's reads done */
                     /* Thread t stages candidate jl's channels r0, r0 + 4, ... and row
                      * r0, r0 + 4, ...'s channel jl: fixed trip counts, unrolled, so every
                      * load is issued before the first store waits on one. */
    const int c = cand[jl];
    const double *kc = kt + (d0 + r0) * nl + c;
#pragma unroll
    for (int u = 0; u < kScoreDims / kRowStep; u++) {
      const int dd = r0 + u * kRowStep;
      ks[dd][jl] = c >= 0 && dd < dn ? kc[u * kRowStep * nl] : 0.0;
    }
    const double *qr = qt + r0 * D + d0 + jl;
#pragma unroll
    for (int u = 0; u < kRowsPerThread; u++) {
      const int r = r0 + u * kRowStep;
      qs[r][jl] = r < nrows && jl < dn ? qr[u * kRowStep * D] : 0.0;
    }
    __syncthreads();
    for (int dd = 0; dd < dn; dd++) {
      const double kv = ks[dd][jl];
#pragma unroll
      for (int m = 0; m < kRowsPerThread; m++)
        acc[m] = add_rn(acc[m], mul_rn(qs[r0 + m * kRowStep][dd], kv));
    }
  }
  const long long j = j0 + jl;
  if (j >= sg.ncand) return;
  const int c = cand[jl];
#pragma unroll
  for (int m = 0; m < kRowsPerThread; m++) {
    const long long r = r0 + m * kRowStep;
    if (r >= nrows) continue;
    const long long w = bh * cnt + (g_lo + r - lo) - sg.row0; /* the row's scratch */
    scores[w * sg.ncand + j] = c >= 0 ? acc[m] : 0.0;
    idx[w * sg.ncand + j] = c >= 0 ? c : DT_WA_NO_INDEX;
  }
}

/* A warp per query-block row picks its keff best candidates from the
 * row's scores (the order of dt_wa_ranks_before). LIST > 0: each lane
 * streams its candidates j = lane, lane + W, ... from the scratch once,
 * keeping its LIST best sorted in registers (enough when keff <= LIST or
 * the lane has at most LIST candidates: no candidate a lane drops can be
 * among the row's keff best), and each pick is the butterfly's best of the
 * lanes' heads, after which the winning lane drops its head; a pick costs
 * one butterfly instead of a scan of the row. LIST = 0 (many candidates
 * and a wide K): keff passes over the scratch, each picking the best
 * candidate ranked after the previous pick (dt_wa_lane_scan). Both pick
 * the same candidates in the same order. */
static const int kPickThreads = 128;

/* Inserts (sc, c) into the lane's sorted list (best first) of LIST, if it
 * ranks before the list's last: fully unrolled, so the list stays in
 * registers. */
template <int LIST> DT_DEV void keep_best(double *ls, int *li, double sc, int c) {
  if (!dt_wa_ranks_before(sc, c, ls[LIST - 1], li[LIST - 1])) return;
  ls[LIST - 1] = sc, li[LIST - 1] = c;
#pragma unroll
  for (int u = LIST - 1; u > 0; u--) {
    if (dt_wa_ranks_before(ls[u], li[u], ls[u - 1], li[u - 1])) {
      const double ts = ls[u];
      const int ti = li[u];
      ls[u] = ls[u - 1], li[u] = li[u - 1];
      ls[u - 1] = ts, li[u - 1] = ti;
    }
  }
}

template <int LIST>
__global__ void __launch_bounds__(kPickThreads)
    select_pick_kernel(dt_gpu_llsa p, int level, long long row0, long long rows, long long ncand,
                       const double *scores, const int *idx) {
  const long long w = blockIdx.x * (long long)(kPickThreads / DT_WARP) + threadIdx.x / DT_WARP;
  if (w >= rows) return;
  const int lane = threadIdx.x % DT_WARP;
  const long long nl = p.n[level], cnt = p.blk_n[level], lw = row0 + w;
  const long long row = lw / cnt * nl + p.blk_lo[level] + lw % cnt;
  const double *sc = scores + w * ncand;
  const int *ix = idx + w * ncand;
  constexpr int kKeep = LIST > 0 ? LIST : 1; /* LIST = 0 keeps a list it never reads */
  double ls[kKeep];
  int li[kKeep];
#pragma unroll
  for (int u = 0; u < kKeep; u++) ls[u] = 0.0, li[u] = DT_WA_NO_INDEX;
  if (LIST > 0) {
    /* The first LIST candidates' loads all issued at once (most rows have
     * no more), then the rest streamed. */
    double first_s[kKeep];
    int first_i[kKeep];
#pragma unroll
    for (int u = 0; u < kKeep; u++) {
      const long long j = lane + (long long)u * DT_WARP;
      first_s[u] = j < ncand ? sc[j] : 0.0;
      first_i[u] = j < ncand ? ix[j] : DT_WA_NO_INDEX;
    }
#pragma unroll
    for (int u = 0; u < kKeep; u++) keep_best<kKeep>(ls, li, first_s[u], first_i[u]);
    for (long long j = lane + (long long)LIST * DT_WARP; j < ncand; j += DT_WARP)
      keep_best<kKeep>(ls, li, sc[j], ix[j]);
  }
  const long long keff = p.keff[level - 1];
  int32_t *out = p.sel[level - 1] + row * keff;
  double prev_s = 0.0;
  int prev_i = -1;
  for (long long r = 0; r < keff; r++) {
    double bs = ls[0];
    int bi = li[0];
    if (LIST == 0) dt_wa_lane_scan(sc, ix, (int)ncand, lane, DT_WARP, prev_s, prev_i, &bs, &bi);
    warp_best(&bs, &bi);
    if (lane == 0) out[r] = bi == DT_WA_NO_INDEX ? -1 : bi;
    if (bi == DT_WA_NO_INDEX) {
      for (long long rr = r + 1 + lane; rr < keff; rr += DT_WARP) out[rr] = -1;
      break;
    }
    prev_s = bs;
    prev_i = bi;
    if (LIST > 0 && li[0] == bi) { /* indices are distinct: one lane holds the pick */
#pragma unroll
      for (int u = 0; u + 1 < kKeep; u++) ls[u] = ls[u + 1], li[u] = li[u + 1];
      ls[kKeep - 1] = 0.0;
      li[kKeep - 1] = DT_WA_NO_INDEX;
    }
  }
}

} // namespace DT_GPU_NS

using namespace DT_GPU_NS;

extern "C" {

int DT_GPU_FN(launch_llsa_pool)(const dt_gpu_llsa *p, const ditattn_tensor *q,
                                const ditattn_tensor *k, const ditattn_tensor *v, void *stream) {
  gpuStream_t s = (gpuStream_t)stream;
  switch (q->dtype) {
  case DITATTN_F32: return llsa_pool_typed<float>(p, q, k, v, s);
  case DITATTN_BF16: return llsa_pool_typed<bf16_t>(p, q, k, v, s);
  case DITATTN_F16: return llsa_pool_typed<f16_t>(p, q, k, v, s);
  }
  return DT_GPU_NOT_IMPLEMENTED;
}

int64_t DT_GPU_FN(llsa_candidates)(const dt_gpu_llsa *p, int level) {
  return level == p->L ? p->n[level] : p->keff[level] * p->b;
}

int DT_GPU_FN(launch_llsa_select)(const dt_gpu_llsa *p, int level, int64_t row0, int64_t rows,
                                  double *scores, int32_t *idx, void *stream) {
  if (rows <= 0) return 0;
  gpuStream_t s = (gpuStream_t)stream;
  ScoreGrid sg;
  sg.row0 = row0;
  sg.rows = rows;
  sg.ncand = DT_GPU_FN(llsa_candidates)(p, level);
  if (sg.ncand > INT_MAX || p->n[level] > INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  const long long cnt = p->blk_n[level], lo = p->blk_lo[level];
  sg.bh0 = row0 / cnt;
  const long long nbh = (row0 + rows - 1) / cnt - sg.bh0 + 1;
  /* Rows share candidates within a parent (b blocks) below the coarsest
   * level, and across the whole b·h at it. */
  sg.seg_rows = level < p->L ? p->b : kScoreRows;
  sg.segs = (lo + cnt - 1) / sg.seg_rows - lo / sg.seg_rows + 1;
  sg.tiles_per_seg = (sg.seg_rows + kScoreRows - 1) / kScoreRows;
  sg.cand_chunks = (sg.ncand + kScoreCands - 1) / kScoreCands;
  const double blocks =
      (double)nbh * (double)sg.segs * (double)sg.tiles_per_seg * (double)sg.cand_chunks;
  if (blocks > (double)INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  select_score_kernel<<<(unsigned)blocks, kScoreThreads, 0, s>>>(*p, level, sg, scores, idx);
  int err = launch_status();
  if (err) return err;
  const long long per_block = kPickThreads / DT_WARP,
                  pick_blocks = (rows + per_block - 1) / per_block;
  if (pick_blocks > INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  /* The smallest list that holds what a lane must keep: min(keff, its
   * candidates). */
  const long long keff = p->keff[level - 1], per_lane = (sg.ncand + DT_WARP - 1) / DT_WARP;
  const long long keep = keff < per_lane ? keff : per_lane;
  const unsigned pb = (unsigned)pick_blocks;
  if (keep <= 4)
    select_pick_kernel<4><<<pb, kPickThreads, 0, s>>>(*p, level, row0, rows, sg.ncand, scores, idx);
  else if (keep <= 8)
    select_pick_kernel<8><<<pb, kPickThreads, 0, s>>>(*p, level, row0, rows, sg.ncand, scores, idx);
  else if (keep <= 16)
    select_pick_kernel<16>
        <<<pb, kPickThreads, 0, s>>>(*p, level, row0, rows, sg.ncand, scores, idx);
  else
    select_pick_kernel<0><<<pb, kPickThreads, 0, s>>>(*p, level, row0, rows, sg.ncand, scores, idx);
  return launch_status();
}

int DT_GPU_FN(launch_llsa_attend)(const dt_gpu_llsa *p, const ditattn_tensor *q,
                                  const ditattn_tensor *k, const ditattn_tensor *v,
                                  const ditattn_tensor *out, float *lse, int64_t bh_lo,
                                  int64_t bh_hi, void *stream) {
  AttendArgs a = attend_args(p->N, p->b, (int)p->D, p->scale, lse);
  a.bh_lo = bh_lo;
  a.bh_hi = bh_hi;
  long long groups;
  attend_restrict_rows(&a, p->q_lo, p->q_hi, &groups);
  LlsaKeys keys;
  keys.p = *p;
  keys.bh0 = keys.g10 = 0;
  if (groups * a.tiles_per_group > INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  return attend_dispatch_mma_or_simt(q, k, v, out, a, groups, keys, (gpuStream_t)stream);
}

} // extern "C"
