/* RoPeSLR forward on the GPU (spec ropeslr.md §2-4): block means and top-K
 * selection (bit-identical to ref/), the sparse branch through the shared
 * online-softmax attention (attend.cuh), and the low-rank branch through
 * per-block factors S_C = Σ g vᵀ, z_C = Σ g, in double like ref/'s factors
 * (S_bg = S − Σ_sel S_C cancels when most blocks are selected), then
 * o = o_s + Wᵀ o_lr. Every element kernel is a grid-stride loop over one
 * output element per thread with a fixed, sequential accumulation order. */
#include "attend_mma.cuh"
#include "ropeslr_api.h"

#include <limits.h>

namespace DT_GPU_NS {

static const int kSlrThreads = 256;

static inline unsigned slr_grid(long long total) { return stride_grid(total, kSlrThreads); }

#define SLR_FOR(e, total)                                                                          \
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < (total);                \
       e += (long long)gridDim.x * blockDim.x)

/* ---------------------------------------------------------------- selection */
/* Block means of q and k in double (spec §2, as ref/): q as [BH][n][D]
 * for the query blocks [G_lo, G_lo + G_n) (all in a whole call; with a row
 * range no other pooled q is read, and dist/ leaves other q rows stale), k
 * transposed to [BH][D][n] so that the selection's lanes, one key block
 * each, read consecutive addresses. */
template <typename T>
__global__ void slr_pool_kernel(View<const T> q, View<const T> k, dt_gpu_ropeslr p,
                                long long total) {
  SLR_FOR(e, total) {
    const long long d = e % p.D, c = e / p.D % p.n, bh = e / p.D / p.n;
    const long long j0 = c * p.b, j1 = p.N - j0 > p.b ? j0 + p.b : p.N;
    if (c >= p.G_lo && c < p.G_lo + p.G_n) /* only the selected query blocks are read */
      p.pq64[e] = block_mean(q, bh, j0, j1, d);
    if (!p.keys_ready && c >= p.C_lo && c < p.C_lo + p.C_n)
      p.pk64[(bh * p.D + d) * p.n + c] = block_mean(k, bh, j0, j1, d);
  }
}

static const int kSlrSelectThreads = 128;

/* Score of key block c for a query block: pq_G · pk_C, unfused double
 * multiplies and adds over d in order (ref/ropeslr_select.c's operations,
 * so the value equals ref/'s). kt: the head's pooled k, [D][n]. */
DT_DEV double slr_score(const double *qrow, const double *kt, int D, int n, int c) {
  return dot_strided(qrow, kt + c, n, D);
}

/* One warp: K passes of "best ranked after the previous pick" over the n
 * scores sc (indices ix) of query block G into out, then the own block
 * replaces the last pick when force_own and not picked. */
DT_DEV void slr_select_passes(const double *sc, const int *ix, int n, int G,
                              const dt_gpu_ropeslr &p, int32_t *out) {
  const int lane = threadIdx.x % DT_WARP;
  double prev_s = 0.0;
  int prev_i = -1, own_taken = 0;
  for (long long t = 0; t < p.K; t++) {
    double bs;
    int bi;
    dt_wa_lane_scan(sc, ix, n, lane, DT_WARP, prev_s, prev_i, &bs, &bi);
    warp_best(&bs, &bi);
    /* K <= n distinct candidates: bi is always a real block. */
    if (lane == 0) out[t] = bi;
    own_taken |= bi == G;
    prev_s = bs;
    prev_i = bi;
  }
  if (lane == 0 && p.force_own && !own_taken) out[p.K - 1] = (int32_t)G;
}

/* One warp per (bh, G) row: unfused double scores pq_G·pk_C over d in order
 * (ref/ropeslr_select.c's operations, so the scores and picks equal ref/'s,
 * ties by smaller index), K passes of "best ranked after the previous pick",
 * then the own block replaces the last pick when force_own and not picked. */
__global__ void __launch_bounds__(kSlrSelectThreads)
    slr_select_kernel(dt_gpu_ropeslr p, long long row0, long long rows) {
  const int lane = threadIdx.x % DT_WARP;
  const long long w = blockIdx.x * (long long)(kSlrSelectThreads / DT_WARP) + threadIdx.x / DT_WARP;
  if (w >= rows) return; /* uniform over the warp */
  const long long lw = row0 + w, bh = lw / p.G_n, G = p.G_lo + lw % p.G_n, row = bh * p.n + G;
  const int D = (int)p.D, n = (int)p.n;
  const double *qrow = p.pq64 + row * p.D;
  const double *kt = p.pk64 + bh * p.D * p.n; /* [D][n] */
  double *sc = p.scores + w * p.n;
  int *ix = p.idx + w * p.n;
  for (int c = lane; c < n; c += DT_WARP) {
    sc[c] = slr_score(qrow, kt, D, n, c);
    ix[c] = c;
  }
  slr_select_passes(sc, ix, n, (int)G, p, p.sel + row * p.K);
}

/* The same selection for n <= kSlrSortMax blocks, one thread block per
 * (bh, G) row: the scores (same operations, so the same values), then a
 * bitonic sort in shared memory by (score descending, index ascending) —
 * the order of the K passes above, picked at once however large K is (the
 * passes cost K scans of n: K = ρn makes that quadratic in n). */
static const int kSlrSortThreads = 256, kSlrSortMax = 4096;

DT_DEV bool slr_ranks_before(double sa, int ia, double sb, int ib) {
  return sa > sb || (sa == sb && ia < ib);
}

__global__ void __launch_bounds__(kSlrSortThreads)
    slr_select_sort_kernel(dt_gpu_ropeslr p, int n_pad) {
  extern __shared__ double slr_sort_smem[];
  int has_nan = 0;
  double *key = slr_sort_smem;
  int *ix = (int *)(key + n_pad);
  const long long bh = blockIdx.x / p.G_n, G = p.G_lo + blockIdx.x % p.G_n, row = bh * p.n + G;
  const int D = (int)p.D, n = (int)p.n;
  const double *qrow = p.pq64 + row * p.D;
  const double *kt = p.pk64 + bh * p.D * p.n; /* [D][n] */
  for (int c = threadIdx.x; c < n_pad; c += blockDim.x) {
    const double sc = c < n ? slr_score(qrow, kt, D, n, c) : -INFINITY;
    key[c] = sc;
    ix[c] = c < n ? c : INT_MAX; /* padding ranks last */
    has_nan |= isnan(sc);
  }
  int32_t *out = p.sel + row * p.K;
  if (__syncthreads_or(has_nan)) {
    /* A NaN score has no place in a sort: the K passes of ref/ give the
     * deterministic order it defines (docs/ropeslr.md). */
    if (threadIdx.x < DT_WARP) slr_select_passes(key, ix, n, (int)G, p, out);
    return;
  }
  for (int size = 2; size <= n_pad; size <<= 1)
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < n_pad; t += blockDim.x) {
        const int u = t ^ stride;
        if (u > t) {
          const bool first_half_up = (t & size) == 0; /* t should rank before u */
          const bool swap = first_half_up ? slr_ranks_before(key[u], ix[u], key[t], ix[t])
                                          : slr_ranks_before(key[t], ix[t], key[u], ix[u]);
          if (swap) {
            const double ks = key[t];
            const int is = ix[t];
            key[t] = key[u];
            ix[t] = ix[u];
            key[u] = ks;
            ix[u] = is;
          }
        }
      }
      __syncthreads();
    }
  int own_taken = 0;
  for (long long t = threadIdx.x; t < p.K; t += blockDim.x) {
    out[t] = ix[t];
    own_taken |= ix[t] == (int)G;
  }
  own_taken = __syncthreads_or(own_taken);
  if (threadIdx.x == 0 && p.force_own && !own_taken) out[p.K - 1] = (int32_t)G;
}

/* ---------------------------------------------------------------- sparse branch */
/* Keys of query block g: the tokens of its K selected key blocks, in rank
 * order (positions past N in a partial last block are masked). */
struct SlrKeys {
  const int32_t *sel;
  long long n, K, b, N;
  const int32_t *row;
  DT_DEV void begin(long long bh, long long g) { row = sel + (bh * n + g) * K; }
  DT_DEV long long count() const { return K * b; }
  DT_DEV KeyRef resolve(long long pos) const { return resolve_row(row, pos); }
  /* The same for (bh, g) without begin (a const member: see attend_mma.cuh). */
  DT_DEV KeyRef resolve_in(long long bh, long long g, long long pos) const {
    return resolve_row(sel + (bh * n + g) * K, pos);
  }
  DT_DEV KeyRef resolve_row(const int32_t *picks, long long pos) const {
    KeyRef r = {-1, 0, 0.0f};
    const long long tok = (long long)picks[pos / b] * b + pos % b;
    if (tok < N) r.level = 0, r.row = tok;
    return r;
  }
  /* Only the tiles of one query group share keys. */
  DT_DEV long long shared_from(bool one_group) const { return one_group ? 0 : count(); }
  DT_DEV const float *pooled_k(int, long long, long long) const { return nullptr; }
  DT_DEV const float *pooled_v(int, long long, long long) const { return nullptr; }
};

/* ---------------------------------------------------------------- low-rank branch */
/* u = E^t[t] + E^y[y] + E^x[x] + projᵀ x_i (spec §3) for tokens
 * [i0, i0 + ni), into out [BH][N][r]; φ = elu + 1 applied here, softmax by
 * slr_softmax_kernel. One thread block per (bh, kFeatTokens tokens), the
 * tokens' x staged in shared memory; thread m loads each proj[d][m] once
 * for all of them. Each u still sums its terms in ref/'s order. */
static const int kFeatTokens = 16, kFeatD = 64;

template <typename T>
__global__ void slr_feature_kernel(View<const T> x, View<const float> proj, View<const float> et,
                                   View<const float> ey, View<const float> ex, dt_gpu_ropeslr p,
                                   long long i0, long long ni, double *out) {
  __shared__ float xs[kFeatTokens][kFeatD];
  const long long chunks = (ni + kFeatTokens - 1) / kFeatTokens;
  const long long bh = blockIdx.x / chunks, t0 = i0 + blockIdx.x % chunks * kFeatTokens;
  const long long h = bh % p.H, tn = i0 + ni - t0 < kFeatTokens ? i0 + ni - t0 : kFeatTokens;
  for (long long m0 = 0; m0 < p.r; m0 += blockDim.x) {
    const long long m = m0 + threadIdx.x;
    double u[kFeatTokens];
    for (int t = 0; t < kFeatTokens; t++) {
      u[t] = 0.0;
      if (t < tn && m < p.r) {
        const int32_t *pi = p.pos + 3 * (t0 + t);
        u[t] = add_rn(add_rn((double)et.row(h, pi[0])[m], (double)ey.row(h, pi[1])[m]),
                      (double)ex.row(h, pi[2])[m]);
      }
    }
    for (long long d0 = 0; d0 < p.D; d0 += kFeatD) {
      const long long dn = p.D - d0 < kFeatD ? p.D - d0 : kFeatD;
      __syncthreads(); /* the previous tile is consumed */
      for (long long e = threadIdx.x; e < tn * kFeatD; e += blockDim.x) {
        const long long t = e / kFeatD, d = e % kFeatD;
        xs[t][d] = d < dn ? to_f32(x.row(bh, t0 + t)[d0 + d]) : 0.0f;
      }
      __syncthreads();
      if (m < p.r)
        for (long long d = 0; d < dn; d++) {
          const double pd = (double)proj.row(h, d0 + d)[m];
          for (int t = 0; t < kFeatTokens; t++) u[t] = add_rn(u[t], mul_rn((double)xs[t][d], pd));
        }
    }
    if (m < p.r)
      for (int t = 0; t < kFeatTokens && t < tn; t++)
        out[(bh * p.N + t0 + t) * p.r + m] =
            p.softmax_feature ? u[t] : (u[t] > 0.0 ? u[t] + 1.0 : exp(u[t]));
  }
}

/* φ = softmax over the r entries of each row of tokens [i0, i0 + ni) of
 * x [BH][N][r], in place. */
__global__ void slr_softmax_kernel(double *x, long long N, long long i0, long long ni,
                                   long long rows, long long r) {
  SLR_FOR(e, rows) {
    double *u = x + (e / ni * N + i0 + e % ni) * r, umax = -INFINITY, sum = 0.0;
    for (long long m = 0; m < r; m++) umax = u[m] > umax ? u[m] : umax;
    for (long long m = 0; m < r; m++) sum += u[m] = exp(u[m] - umax);
    for (long long m = 0; m < r; m++) u[m] /= sum;
  }
}

/* S_C[m][d] = Σ_{j∈C} g_j[m] v_j[d] (d < D), z_C[m] = Σ g_j[m] (d = D)
 * for C in [C_lo, C_lo + C_n). One thread block per (bh, C, chunk of
 * kFactorM ranks m): thread dd holds
 * the kFactorM sums of its column, so each v_j[dd] it loads serves
 * kFactorM products, and the chunk's g_j[m] are staged in shared memory
 * (broadcast reads). Every sum still runs over j in order, one term at a
 * time: the values do not depend on this layout. */
static const int kFactorM = 16, kFactorJ = 32;

template <typename T>
__global__ void slr_factor_kernel(View<const T> v, dt_gpu_ropeslr p, long long m_chunks) {
  __shared__ double gs[kFactorJ][kFactorM];
  const long long D1 = p.D + 1, mc = blockIdx.x % m_chunks,
                  C = p.C_lo + blockIdx.x / m_chunks % p.C_n, bh = blockIdx.x / m_chunks / p.C_n,
                  m0 = mc * kFactorM;
  const long long j0 = C * p.b, j1 = p.N - j0 > p.b ? j0 + p.b : p.N;
  const double *g = p.g + bh * p.N * p.r;
  for (long long dd0 = 0; dd0 < D1; dd0 += blockDim.x) {
    const long long dd = dd0 + threadIdx.x;
    double acc[kFactorM];
    for (int t = 0; t < kFactorM; t++) acc[t] = 0.0;
    for (long long js = j0; js < j1; js += kFactorJ) {
      const long long jn = j1 - js < kFactorJ ? j1 - js : kFactorJ;
      __syncthreads(); /* the previous tile is consumed */
      for (long long x = threadIdx.x; x < jn * kFactorM; x += blockDim.x) {
        const long long m = m0 + x % kFactorM;
        gs[x / kFactorM][x % kFactorM] = m < p.r ? g[(js + x / kFactorM) * p.r + m] : 0.0;
      }
      __syncthreads();
      if (dd < D1)
        for (long long j = 0; j < jn; j++) {
          const double vj = dd < p.D ? (double)to_f32(v.row(bh, js + j)[dd]) : 1.0;
          for (int t = 0; t < kFactorM; t++) {
            const double gj = gs[j][t];
            acc[t] += dd < p.D ? gj * vj : gj;
          }
        }
    }
    if (dd < D1)
      for (int t = 0; t < kFactorM && m0 + t < p.r; t++)
        p.SC[((bh * p.n + C) * p.r + m0 + t) * D1 + dd] = acc[t];
  }
}

/* S = Σ_C S_C in block order, [BH][r][D + 1]. */
__global__ void slr_total_kernel(dt_gpu_ropeslr p, long long total) {
  const long long rd1 = p.r * (p.D + 1);
  SLR_FOR(e, total) {
    const long long x = e % rd1, bh = e / rd1;
    const double *sc = p.SC + bh * p.n * rd1 + x;
    double acc = 0.0;
    for (long long C = 0; C < p.n; C++) acc += sc[C * rd1];
    p.S[e] = acc;
  }
}

/* S_bg(G) = S − Σ_{C∈sel[G]} S_C (spec §3, the selected blocks are
 * distinct), for the selected query blocks G_lo .. G_lo + G_n - 1: one
 * thread block per (bh, G), its threads along the r·(D+1) entries. */
__global__ void slr_background_kernel(dt_gpu_ropeslr p) {
  const long long rd1 = p.r * (p.D + 1), G = p.G_lo + blockIdx.x % p.G_n, bh = blockIdx.x / p.G_n;
  const int32_t *sel = p.sel + (bh * p.n + G) * p.K;
  const double *sc = p.SC + bh * p.n * rd1;
  for (long long x = threadIdx.x; x < rd1; x += blockDim.x) {
    double acc = p.S[bh * rd1 + x];
    for (long long t = 0; t < p.K; t++) acc -= sc[sel[t] * rd1 + x];
    p.Sbg[(bh * p.n + G) * rd1 + x] = acc;
  }
}

/* o_lr_i = f_iᵀ S_bg / f_iᵀ z_bg for rows [q_lo, q_hi); 0 for an empty
 * background (K = n) or a zero denominator, as ref/. */
__global__ void slr_readout_kernel(dt_gpu_ropeslr p, long long total) {
  const long long D1 = p.D + 1, nq = p.q_hi - p.q_lo;
  SLR_FOR(e, total) {
    const long long d = e % p.D, i = p.q_lo + e / p.D % nq, bh = e / p.D / nq, G = i / p.b;
    double val = 0.0;
    if (p.K < p.n) {
      const double *fi = p.f + (bh * p.N + i) * p.r;
      const double *sbg = p.Sbg + (bh * p.n + G) * p.r * D1;
      double num = 0.0, den = 0.0;
      for (long long m = 0; m < p.r; m++) {
        den += fi[m] * sbg[m * D1 + p.D];
        num += fi[m] * sbg[m * D1 + d];
      }
      val = den != 0.0 ? num / den : 0.0;
    }
    p.olr[(bh * p.N + i) * p.D + d] = val;
  }
}

/* out[e] = o_s[e] + Σ_d W[d][e] o_lr[d] (spec §4) for rows [q_lo, q_hi)
 * (out row 0 is row q_lo); out holds o_s on entry. */
template <typename T>
__global__ void slr_combine_kernel(View<T> out, View<const float> W, dt_gpu_ropeslr p,
                                   long long total) {
  const long long nq = p.q_hi - p.q_lo;
  SLR_FOR(e, total) {
    const long long col = e % p.D, i = p.q_lo + e / p.D % nq, bh = e / p.D / nq, h = bh % p.H;
    const double *olr = p.olr + (bh * p.N + i) * p.D;
    T *o = out.row(bh, i - p.q_lo) + col;
    double acc = (double)to_f32(*o);
    for (long long d = 0; d < p.D; d++) acc += (double)W.row(h, d)[col] * olr[d];
    *o = from_f32<T>((float)acc);
  }
}

static bool select_sorts(const dt_gpu_ropeslr &p) {
  return p.n <= kSlrSortMax && p.B * p.H * p.G_n <= INT_MAX;
}

/* Key features g of the tokens of key blocks [C_lo, C_lo + C_n), then their
 * factors S_C | z_C (every block's are needed: the background of any query
 * block subtracts its selected blocks' from the total). */
template <typename T>
static int slr_factors_typed(const dt_gpu_ropeslr &p, const View<const T> &kv,
                             const View<const T> &vv, const ditattn_ropeslr_weights *w,
                             gpuStream_t s) {
  const long long BH = p.B * p.H, D1 = p.D + 1;
  if (p.C_n <= 0) return 0;
  const long long j0 = p.C_lo * p.b,
                  j_end = (p.C_lo + p.C_n) * p.b < p.N ? (p.C_lo + p.C_n) * p.b : p.N;
  const long long nk = j_end - j0;
  const int feat_threads = p.r < 128 ? (int)((p.r + DT_WARP - 1) / DT_WARP * DT_WARP) : 128;
  const long long k_chunks = (nk + kFeatTokens - 1) / kFeatTokens;
  if (BH * k_chunks > INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  int st;
  slr_feature_kernel<T><<<(unsigned)(BH * k_chunks), feat_threads, 0, s>>>(
      kv, make_view<const float>(&w->Bk), make_view<const float>(&w->Et),
      make_view<const float>(&w->Ey), make_view<const float>(&w->Ex), p, j0, nk, p.g);
  if ((st = launch_status())) return st;
  if (p.softmax_feature) {
    slr_softmax_kernel<<<slr_grid(BH * nk), kSlrThreads, 0, s>>>(p.g, p.N, j0, nk, BH * nk, p.r);
    if ((st = launch_status())) return st;
  }
  const long long m_chunks = (p.r + kFactorM - 1) / kFactorM;
  const int factor_threads = D1 < 128 ? (int)((D1 + DT_WARP - 1) / DT_WARP * DT_WARP) : 128;
  if (BH * p.C_n * m_chunks > INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  slr_factor_kernel<T>
      <<<(unsigned)(BH * p.C_n * m_chunks), factor_threads, 0, s>>>(vv, p, m_chunks);
  return launch_status();
}

/* A dist/ rank's share of the key summary: pooled k (the pool kernel with
 * no query blocks) and factors of key blocks [C_lo, C_lo + C_n). */
template <typename T>
static int slr_key_share_typed(const dt_gpu_ropeslr &p, const ditattn_tensor *k,
                               const ditattn_tensor *v, const ditattn_ropeslr_weights *w,
                               gpuStream_t s) {
  const View<const T> kv = make_view<const T>(k), vv = make_view<const T>(v);
  dt_gpu_ropeslr share = p;
  share.G_n = 0;
  const long long total = p.B * p.H * p.n * p.D;
  slr_pool_kernel<T><<<slr_grid(total), kSlrThreads, 0, s>>>(kv, kv, share, total);
  const int st = launch_status();
  return st ? st : slr_factors_typed<T>(p, kv, vv, w, s);
}

template <typename T>
static int slr_forward_typed(const dt_gpu_ropeslr &p, const ditattn_tensor *q,
                             const ditattn_tensor *k, const ditattn_tensor *v,
                             const ditattn_tensor *out, const ditattn_ropeslr_weights *w,
                             float *lse, gpuStream_t s) {
  const long long BH = p.B * p.H, D1 = p.D + 1;
  const View<const T> qv = make_view<const T>(q), kv = make_view<const T>(k),
                      vv = make_view<const T>(v);
  int st;
  /* §2 selection */
  long long total = BH * p.n * p.D;
  slr_pool_kernel<T><<<slr_grid(total), kSlrThreads, 0, s>>>(qv, kv, p, total);
  if ((st = launch_status())) return st;
  const long long rows = BH * p.G_n, warps = kSlrSelectThreads / DT_WARP;
  int n_pad = 1;
  while (n_pad < p.n) n_pad <<= 1;
  const bool sort = select_sorts(p); /* else the warp passes */
  if (sort) {
    const size_t smem = (size_t)n_pad * (sizeof(double) + sizeof(int));
    slr_select_sort_kernel<<<(unsigned)rows, kSlrSortThreads, smem, s>>>(p, n_pad);
    if ((st = launch_status())) return st;
  }
  for (long long r0 = 0; r0 < rows && !sort; r0 += p.select_rows) {
    const long long nr = rows - r0 < p.select_rows ? rows - r0 : p.select_rows;
    slr_select_kernel<<<blocks_for(nr, (int)warps), kSlrSelectThreads, 0, s>>>(p, r0, nr);
    if ((st = launch_status())) return st;
  }
  /* §2 sparse branch: out = o_s; its first read of k and v rows */
  if (p.join_stream && (st = DT_GPU_FN(stream_wait)(s, p.join_stream, p.join_event))) return st;
  AttendArgs a = attend_args(p.N, p.b, (int)p.D, p.scale, lse);
  long long groups;
  attend_restrict_rows(&a, p.q_lo, p.q_hi, &groups);
  SlrKeys keys;
  keys.sel = p.sel;
  keys.n = p.n;
  keys.K = p.K;
  keys.b = p.b;
  keys.N = p.N;
  keys.row = nullptr;
  st = attend_dispatch_mma_or_simt(q, k, v, out, a, groups, keys, s);
  if (st) return st;
  /* §3 features */
  const View<const float> et = make_view<const float>(&w->Et), ey = make_view<const float>(&w->Ey),
                          ex = make_view<const float>(&w->Ex);
  /* Query features of the computed rows only. */
  const long long nq = p.q_hi - p.q_lo;
  const int feat_threads = p.r < 128 ? (int)((p.r + DT_WARP - 1) / DT_WARP * DT_WARP) : 128;
  const long long q_chunks = (nq + kFeatTokens - 1) / kFeatTokens;
  if (BH * q_chunks > INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  slr_feature_kernel<T><<<(unsigned)(BH * q_chunks), feat_threads, 0, s>>>(
      qv, make_view<const float>(&w->A), et, ey, ex, p, p.q_lo, nq, p.f);
  if ((st = launch_status())) return st;
  if (p.softmax_feature) {
    slr_softmax_kernel<<<slr_grid(BH * nq), kSlrThreads, 0, s>>>(p.f, p.N, p.q_lo, nq, BH * nq,
                                                                 p.r);
    if ((st = launch_status())) return st;
  }
  /* §3 factors (unless dist/ brought every block's) and readout */
  if (!p.keys_ready && (st = slr_factors_typed<T>(p, kv, vv, w, s))) return st;
  slr_total_kernel<<<slr_grid(BH * p.r * D1), kSlrThreads, 0, s>>>(p, BH * p.r * D1);
  if ((st = launch_status())) return st;
  if (BH * p.G_n > INT_MAX) return DT_GPU_NOT_IMPLEMENTED;
  slr_background_kernel<<<(unsigned)(BH * p.G_n), kSlrThreads, 0, s>>>(p);
  if ((st = launch_status())) return st;
  total = BH * nq * p.D;
  slr_readout_kernel<<<slr_grid(total), kSlrThreads, 0, s>>>(p, total);
  if ((st = launch_status())) return st;
  /* §4 */
  slr_combine_kernel<T><<<slr_grid(total), kSlrThreads, 0, s>>>(
      make_view<T>(out), make_view<const float>(&w->W), p, total);
  return launch_status();
}

} // namespace DT_GPU_NS

using namespace DT_GPU_NS;

extern "C" int DT_GPU_FN(launch_ropeslr_forward)(const dt_gpu_ropeslr *p, const ditattn_tensor *q,
                                                 const ditattn_tensor *k, const ditattn_tensor *v,
                                                 const ditattn_tensor *out,
                                                 const ditattn_ropeslr_weights *weights, float *lse,
                                                 void *stream) {
  const long long tiles = (p->b + kAttendQT - 1) / kAttendQT;
  if (p->n > INT_MAX || p->n * tiles > INT_MAX || p->D > DT_GPU_MAX_D ||
      (p->select_rows < 1 && !select_sorts(*p)))
    return DT_GPU_NOT_IMPLEMENTED;
  gpuStream_t s = (gpuStream_t)stream;
  switch (q->dtype) {
  case DITATTN_F32: return slr_forward_typed<float>(*p, q, k, v, out, weights, lse, s);
  case DITATTN_BF16: return slr_forward_typed<bf16_t>(*p, q, k, v, out, weights, lse, s);
  case DITATTN_F16: return slr_forward_typed<f16_t>(*p, q, k, v, out, weights, lse, s);
  }
  return DT_GPU_NOT_IMPLEMENTED;
}

extern "C" int DT_GPU_FN(launch_ropeslr_factors)(const dt_gpu_ropeslr *p, const ditattn_tensor *k,
                                                 const ditattn_tensor *v,
                                                 const ditattn_ropeslr_weights *weights,
                                                 void *stream) {
  if (p->n > INT_MAX || p->D > DT_GPU_MAX_D) return DT_GPU_NOT_IMPLEMENTED;
  gpuStream_t s = (gpuStream_t)stream;
  switch (k->dtype) {
  case DITATTN_F32: return slr_key_share_typed<float>(*p, k, v, weights, s);
  case DITATTN_BF16: return slr_key_share_typed<bf16_t>(*p, k, v, weights, s);
  case DITATTN_F16: return slr_key_share_typed<f16_t>(*p, k, v, weights, s);
  }
  return DT_GPU_NOT_IMPLEMENTED;
}

extern "C" int DT_GPU_FN(ropeslr_select_sorts)(const dt_gpu_ropeslr *p) { return select_sorts(*p); }
