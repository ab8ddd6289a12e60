/* Dense attention backward, fp32 arithmetic for every dtype, deterministic
 * (no atomics): probabilities are recomputed from the forward's lse,
 *   P = exp(scale·q·k − lse),  dS = P ⊙ (dO·vᵀ − Δ),  Δ_i = dO_i · O_i,
 * then one kernel owns R keys and walks every query tile (dK = scale Σ dS q,
 * dV = Σ P dO), another owns R queries and walks every key tile
 * (dQ = scale Σ dS k). */
#include "gpu_common.cuh"

namespace DT_GPU_NS {

static const int kBwdThreads = 128;

/* Rows per tile, so that four tiles of R × (DMAX+1) floats stay < 48 KiB. */
template <int DMAX> struct BwdTile { static const int R = DMAX <= 128 ? 16 : 8; };

/* Δ_i = Σ_d dO_i,d O_i,d: one warp per row. */
template <typename T>
__global__ void bwd_delta_kernel(View<const T> out, View<const T> dout, float *delta, long long N,
                                 int D, long long rows) {
  const int warps = kBwdThreads / DT_WARP, lane = threadIdx.x % DT_WARP;
  const long long row = blockIdx.x * (long long)warps + threadIdx.x / DT_WARP;
  if (row >= rows) return;
  const T *o = out.row(row / N, row % N), *g = dout.row(row / N, row % N);
  float s = 0.0f;
  for (int d = lane; d < D; d += DT_WARP) s = fmaf(to_f32(o[d]), to_f32(g[d]), s);
  s = warp_sum(s);
  if (lane == 0) delta[row] = s;
}

struct BwdArgs {
  long long Nq, Nk, bh0;
  int D;
  float scale;
  const float *lse, *delta; /* [B·H][Nq] */
};

/* The shared-memory tiles of both backward kernels: R queries (q, dO, lse,
 * Δ), R keys (k, v) and their R × R probabilities and score gradients. */
template <typename T, int DMAX> struct BwdTiles {
  static const int R = BwdTile<DMAX>::R;
  float Qs[R][DMAX + 1], dOs[R][DMAX + 1], Ks[R][DMAX + 1], Vs[R][DMAX + 1];
  float P[R][R + 1], dS[R][R + 1], lse[R], delta[R];

  /* tile[r][d] = row n0 + r of x (zeros past n_end or D). */
  DT_DEV static void load(float (*tile)[DMAX + 1], const View<const T> &x, long long bh,
                          long long n0, long long n_end, int D) {
    for (int e = threadIdx.x; e < R * DMAX; e += kBwdThreads) {
      const int r = e / DMAX, d = e % DMAX;
      tile[r][d] = (n0 + r < n_end && d < D) ? to_f32(x.row(bh, n0 + r)[d]) : 0.0f;
    }
  }
  DT_DEV void load_queries(const View<const T> &q, const View<const T> &dout, const BwdArgs &a,
                           long long bh, long long q0, int nq) {
    load(Qs, q, bh, q0, a.Nq, a.D);
    load(dOs, dout, bh, q0, a.Nq, a.D);
    const int t = threadIdx.x;
    if (t < R) {
      lse[t] = t < nq ? a.lse[bh * a.Nq + q0 + t] : 0.0f;
      delta[t] = t < nq ? a.delta[bh * a.Nq + q0 + t] : 0.0f;
    }
  }
  DT_DEV void load_keys(const View<const T> &k, const View<const T> &v, const BwdArgs &a,
                        long long bh, long long k0) {
    load(Ks, k, bh, k0, a.Nk, a.D);
    load(Vs, v, bh, k0, a.Nk, a.D);
  }
  /* P[i][j] and dS[i][j]; zero where query i or key j is out of range. */
  DT_DEV void probs_and_dscores(int nq, int nk, int D, float scale) {
    for (int e = threadIdx.x; e < R * R; e += kBwdThreads) {
      const int i = e / R, j = e % R;
      float p = 0.0f, ds = 0.0f;
      if (i < nq && j < nk) {
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < D; d++) {
          s = fmaf(Qs[i][d], Ks[j][d], s);
          dp = fmaf(dOs[i][d], Vs[j][d], dp);
        }
        p = expf(s * scale - lse[i]);
        ds = p * (dp - delta[i]);
      }
      P[i][j] = p;
      dS[i][j] = ds;
    }
  }
};

/* One block per R keys: walks every query tile; dK = scale Σ dS q, dV = Σ P dO. */
template <typename T, int DMAX>
__global__ void __launch_bounds__(kBwdThreads)
    bwd_dkdv_kernel(View<const T> q, View<const T> k, View<const T> v, View<const T> dout,
                    View<T> dk, View<T> dv, BwdArgs a) {
  const int R = BwdTile<DMAX>::R, OPT = R * DMAX / kBwdThreads, tid = threadIdx.x;
  __shared__ BwdTiles<T, DMAX> t;
  const long long bh = a.bh0 + blockIdx.y, k0 = blockIdx.x * (long long)R;
  const int nk = a.Nk - k0 < R ? (int)(a.Nk - k0) : R;
  t.load_keys(k, v, a, bh, k0);
  float gk[OPT], gv[OPT];
#pragma unroll
  for (int j = 0; j < OPT; j++) gk[j] = gv[j] = 0.0f;
  for (long long q0 = 0; q0 < a.Nq; q0 += R) {
    const int nq = a.Nq - q0 < R ? (int)(a.Nq - q0) : R;
    __syncthreads(); /* the previous query tile is no longer read */
    t.load_queries(q, dout, a, bh, q0, nq);
    __syncthreads();
    t.probs_and_dscores(nq, nk, a.D, a.scale);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < OPT; j++) {
      const int e = tid + j * kBwdThreads, key = e / DMAX, d = e % DMAX;
      float ak = gk[j], av = gv[j];
      for (int i = 0; i < R; i++) {
        ak = fmaf(t.dS[i][key], t.Qs[i][d], ak);
        av = fmaf(t.P[i][key], t.dOs[i][d], av);
      }
      gk[j] = ak;
      gv[j] = av;
    }
  }
#pragma unroll
  for (int j = 0; j < OPT; j++) {
    const int e = tid + j * kBwdThreads, key = e / DMAX, d = e % DMAX;
    if (key < nk && d < a.D) {
      dk.row(bh, k0 + key)[d] = from_f32<T>(a.scale * gk[j]);
      dv.row(bh, k0 + key)[d] = from_f32<T>(gv[j]);
    }
  }
}

/* One block per R queries: walks every key tile; dQ = scale Σ dS k. */
template <typename T, int DMAX>
__global__ void __launch_bounds__(kBwdThreads)
    bwd_dq_kernel(View<const T> q, View<const T> k, View<const T> v, View<const T> dout, View<T> dq,
                  BwdArgs a) {
  const int R = BwdTile<DMAX>::R, OPT = R * DMAX / kBwdThreads, tid = threadIdx.x;
  __shared__ BwdTiles<T, DMAX> t;
  const long long bh = a.bh0 + blockIdx.y, q0 = blockIdx.x * (long long)R;
  const int nq = a.Nq - q0 < R ? (int)(a.Nq - q0) : R;
  t.load_queries(q, dout, a, bh, q0, nq);
  float gq[OPT];
#pragma unroll
  for (int j = 0; j < OPT; j++) gq[j] = 0.0f;
  for (long long k0 = 0; k0 < a.Nk; k0 += R) {
    const int nk = a.Nk - k0 < R ? (int)(a.Nk - k0) : R;
    __syncthreads(); /* the previous key tile is no longer read (and the queries are visible) */
    t.load_keys(k, v, a, bh, k0);
    __syncthreads();
    t.probs_and_dscores(nq, nk, a.D, a.scale);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < OPT; j++) {
      const int e = tid + j * kBwdThreads, i = e / DMAX, d = e % DMAX;
      float acc = gq[j];
      for (int key = 0; key < R; key++) acc = fmaf(t.dS[i][key], t.Ks[key][d], acc);
      gq[j] = acc;
    }
  }
#pragma unroll
  for (int j = 0; j < OPT; j++) {
    const int e = tid + j * kBwdThreads, i = e / DMAX, d = e % DMAX;
    if (i < nq && d < a.D) dq.row(bh, q0 + i)[d] = from_f32<T>(a.scale * gq[j]);
  }
}

template <typename T, int DMAX>
static int dense_bwd_typed(const ditattn_tensor *const *t, BwdArgs a, float *delta, gpuStream_t s) {
  const ditattn_tensor *q = t[0], *k = t[1], *v = t[2], *out = t[3], *dout = t[4];
  const long long BH = q->shape[0] * q->shape[1], rows = BH * a.Nq;
  const int R = BwdTile<DMAX>::R, warps = kBwdThreads / DT_WARP;
  bwd_delta_kernel<T><<<blocks_for(rows, warps), kBwdThreads, 0, s>>>(
      make_view<const T>(out), make_view<const T>(dout), delta, a.Nq, a.D, rows);
  int st = launch_status();
  a.delta = delta;
  for (long long bh0 = 0; !st && bh0 < BH; bh0 += kMaxGridY) {
    const unsigned nbh = (unsigned)(BH - bh0 < kMaxGridY ? BH - bh0 : kMaxGridY);
    a.bh0 = bh0;
    bwd_dkdv_kernel<T, DMAX><<<dim3(blocks_for(a.Nk, R), nbh), kBwdThreads, 0, s>>>(
        make_view<const T>(q), make_view<const T>(k), make_view<const T>(v),
        make_view<const T>(dout), make_view<T>(t[6]), make_view<T>(t[7]), a);
    st = launch_status();
    if (st) break;
    bwd_dq_kernel<T, DMAX><<<dim3(blocks_for(a.Nq, R), nbh), kBwdThreads, 0, s>>>(
        make_view<const T>(q), make_view<const T>(k), make_view<const T>(v),
        make_view<const T>(dout), make_view<T>(t[5]), a);
    st = launch_status();
  }
  return st;
}

struct BwdLaunch {
  const ditattn_tensor *const *tensors;
  BwdArgs a;
  float *delta;
  gpuStream_t s;
  template <typename T, int DMAX> int run() const {
    return dense_bwd_typed<T, DMAX>(tensors, a, delta, s);
  }
};

} // namespace DT_GPU_NS

using namespace DT_GPU_NS;

extern "C" int DT_GPU_FN(launch_dense_bwd)(const ditattn_tensor *const tensors[8], const float *lse,
                                           float scale, float *delta, void *stream) {
  const ditattn_tensor *q = tensors[0];
  BwdArgs a;
  a.Nq = q->shape[2];
  a.Nk = tensors[1]->shape[2];
  a.bh0 = 0;
  a.D = (int)q->shape[3];
  a.scale = scale;
  a.lse = lse;
  a.delta = delta;
  const BwdLaunch f = {tensors, a, delta, (gpuStream_t)stream};
  return dispatch_dtype_dmax(q->dtype, a.D, f);
}
