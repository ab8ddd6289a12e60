/* LLSA forward on the GPU (spec §1-3): pooling, hierarchical top-K selection
 * and the fused sparse + enrichment attention. */
#include "attend_mma.cuh"

#include <limits.h>

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
/* The level-l units one pool launch covers: pooled q for [q_lo, q_hi),
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

/* One thread per (b·h, c, d) of the units u of one level: q and k means
 * kept in double for the selection, k and v means in f32 for the attention.
 * Outputs are laid out as dt_gpu_llsa says, whatever the range. */
template <typename T>
__global__ void llsa_pool_kernel(View<const T> q, View<const T> k, View<const T> v, dt_gpu_llsa p,
                                 int level, PoolUnits u, long long total) {
  const long long nl = p.n[level], span = p.span[level], D = p.D;
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
       e += (long long)gridDim.x * blockDim.x) {
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
}

template <typename T>
static int llsa_pool_typed(const dt_gpu_llsa *p, int level, const ditattn_tensor *q,
                           const ditattn_tensor *k, const ditattn_tensor *v, gpuStream_t s) {
  const PoolUnits u = pool_units(p, level);
  const long long total = p->B * p->H * u.n * p->D, threads = 256;
  if (total <= 0) return 0;
  llsa_pool_kernel<T><<<stride_grid(total, (int)threads), (unsigned)threads, 0, s>>>(
      make_view<const T>(q), make_view<const T>(k), make_view<const T>(v), *p, level, u, total);
  return launch_status();
}

/* The pool kernel's f32 pooled k, (float)mk, from the same double mk. */
__global__ void llsa_pk_cast_kernel(const double *pk64, float *pk, long long nl, long long D,
                                    long long total) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
       e += (long long)gridDim.x * blockDim.x) {
    const long long d = e % D, c = e / D % nl, bh = e / D / nl;
    pk[e] = (float)pk64[(bh * D + d) * nl + c];
  }
}

/* ---------------------------------------------------------------- selection */
static const int kSelectThreads = 128;

/* TPR threads per query-block row (a warp, or the whole block where the
 * candidates are many): they score candidates j = t, t + TPR, ... into the
 * row's scratch, in double with unfused multiplies and adds over
 * d = 0 .. D-1 from the double pooled means: the operations of
 * ref/llsa_select.c, so scores and therefore selections equal ref/'s
 * exactly, ties included. Then the row's first warp runs keff passes, each
 * picking the best candidate ranked after the previous pick
 * (dt_wa_lane_scan + butterfly). A block per row at the coarsest level
 * (n_L candidates): a dist/ rank selects few of its rows, and a warp per
 * row left their dot products a latency-bound chain. */
template <int TPR>
__global__ void __launch_bounds__(kSelectThreads)
    select_kernel(dt_gpu_llsa p, int level, long long row0, long long rows, long long ncand,
                  double *scores, int *idx) {
  const int t = threadIdx.x % TPR;
  const long long w = blockIdx.x * (long long)(kSelectThreads / TPR) + threadIdx.x / TPR;
  const bool active = w < rows;
  const long long nl = p.n[level], cnt = p.blk_n[level], lw = row0 + (active ? w : 0);
  const long long bh = lw / cnt, g = p.blk_lo[level] + lw % cnt, row = bh * nl + g;
  const int D = (int)p.D;
  const double *qrow = p.pq64[level - 1] + row * p.D;
  const double *kt = p.pk64[level - 1] + bh * p.D * nl; /* [D][n_l] */
  double *sc = scores + w * ncand;
  int *ix = idx + w * ncand;
  const int32_t *parents = nullptr;
  if (level < p.L) parents = p.sel[level] + (bh * p.n[level + 1] + g / p.b) * p.keff[level];

  for (long long j = t; active && j < ncand; j += TPR) {
    long long c = j;
    if (parents) {
      const long long par = parents[j / p.b];
      c = par < 0 ? nl : par * p.b + j % p.b;
    }
    if (c >= nl) {
      sc[j] = 0.0;
      ix[j] = DT_WA_NO_INDEX;
      continue;
    }
    sc[j] = dot_strided(qrow, kt + c, nl, D);
    ix[j] = (int)c;
  }
  if (TPR > DT_WARP) __syncthreads(); /* a row's scores, from its warps, seen by its first */
  if (!active || t >= DT_WARP) return;
  const int lane = t;

  const long long keff = p.keff[level - 1];
  int32_t *out = p.sel[level - 1] + row * keff;
  double prev_s = 0.0;
  int prev_i = -1;
  for (long long r = 0; r < keff; r++) {
    double bs;
    int bi;
    dt_wa_lane_scan(sc, ix, (int)ncand, lane, DT_WARP, prev_s, prev_i, &bs, &bi);
    warp_best(&bs, &bi);
    if (lane == 0) out[r] = bi == DT_WA_NO_INDEX ? -1 : bi;
    if (bi == DT_WA_NO_INDEX) {
      for (long long rr = r + 1 + lane; rr < keff; rr += DT_WARP) out[rr] = -1;
      break;
    }
    prev_s = bs;
    prev_i = bi;
  }
}

} // namespace DT_GPU_NS

using namespace DT_GPU_NS;

extern "C" {

int DT_GPU_FN(launch_llsa_pool)(const dt_gpu_llsa *p, int level, const ditattn_tensor *q,
                                const ditattn_tensor *k, const ditattn_tensor *v, void *stream) {
  gpuStream_t s = (gpuStream_t)stream;
  switch (q->dtype) {
  case DITATTN_F32: return llsa_pool_typed<float>(p, level, q, k, v, s);
  case DITATTN_BF16: return llsa_pool_typed<bf16_t>(p, level, q, k, v, s);
  case DITATTN_F16: return llsa_pool_typed<f16_t>(p, level, q, k, v, s);
  }
  return DT_GPU_NOT_IMPLEMENTED;
}

int DT_GPU_FN(launch_llsa_pk_from_pk64)(const dt_gpu_llsa *p, int level, void *stream) {
  const long long total = p->B * p->H * p->n[level] * p->D, threads = 256;
  if (total <= 0) return 0;
  llsa_pk_cast_kernel<<<stride_grid(total, (int)threads), (unsigned)threads, 0,
                        (gpuStream_t)stream>>>(p->pk64[level - 1], p->pk[level - 1], p->n[level],
                                               p->D, total);
  return launch_status();
}

int64_t DT_GPU_FN(llsa_candidates)(const dt_gpu_llsa *p, int level) {
  return level == p->L ? p->n[level] : p->keff[level] * p->b;
}

int DT_GPU_FN(launch_llsa_select)(const dt_gpu_llsa *p, int level, int64_t row0, int64_t rows,
                                  double *scores, int32_t *idx, void *stream) {
  const long long ncand = DT_GPU_FN(llsa_candidates)(p, level);
  if (ncand > INT_MAX || p->n[level] > INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  /* A warp per row for a few candidates (the children of the parent's
   * picks), a block per row for many (the coarsest level). */
  const bool by_block = ncand >= 4 * kSelectThreads;
  const long long per_block = by_block ? 1 : kSelectThreads / DT_WARP;
  const long long blocks = (rows + per_block - 1) / per_block;
  if (blocks > INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  if (by_block)
    select_kernel<kSelectThreads><<<(unsigned)blocks, kSelectThreads, 0, (gpuStream_t)stream>>>(
        *p, level, row0, rows, ncand, scores, idx);
  else
    select_kernel<DT_WARP><<<(unsigned)blocks, kSelectThreads, 0, (gpuStream_t)stream>>>(
        *p, level, row0, rows, ncand, scores, idx);
  return launch_status();
}

int DT_GPU_FN(launch_llsa_attend)(const dt_gpu_llsa *p, const ditattn_tensor *q,
                                  const ditattn_tensor *k, const ditattn_tensor *v,
                                  const ditattn_tensor *out, float *lse, void *stream) {
  AttendArgs a = attend_args(p->N, p->b, (int)p->D, p->scale, lse);
  long long groups;
  attend_restrict_rows(&a, p->q_lo, p->q_hi, &groups);
  LlsaKeys keys;
  keys.p = *p;
  keys.bh0 = keys.g10 = 0;
  if (groups * a.tiles_per_group > INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  return attend_dispatch_mma_or_simt(q, k, v, out, a, groups, keys, (gpuStream_t)stream);
}

} // extern "C"
