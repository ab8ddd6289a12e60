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

/* tile[r][d] = row n0 + r of x (zeros past n_end or D). */
template <typename T, int DMAX, int R>
DT_DEV void load_tile(float (*tile)[DMAX + 1], const View<const T> &x, long long bh, long long n0,
                      long long n_end, int D) {
  for (int e = threadIdx.x; e < R * DMAX; e += kBwdThreads) {
    const int r = e / DMAX, d = e % DMAX;
    tile[r][d] = (n0 + r < n_end && d < D) ? to_f32(x.row(bh, n0 + r)[d]) : 0.0f;
  }
}

/* For query rows i (tile Qs/dOs, lse, Δ) and key rows j (Ks/Vs), both R
 * long: P[i][j] and dS[i][j]; zero where the query or key is out of range. */
template <int DMAX, int R>
DT_DEV void probs_and_dscores(const float (*Qs)[DMAX + 1], const float (*dOs)[DMAX + 1],
                              const float (*Ks)[DMAX + 1], const float (*Vs)[DMAX + 1],
                              const float *lse, const float *delta, int nq, int nk, int D,
                              float scale, float (*P)[R + 1], float (*dS)[R + 1]) {
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

struct BwdArgs {
  long long Nq, Nk, bh0;
  int D;
  float scale;
  const float *lse, *delta; /* [B·H][Nq] */
};

template <typename T, int DMAX>
__global__ void __launch_bounds__(kBwdThreads)
    bwd_dkdv_kernel(View<const T> q, View<const T> k, View<const T> v, View<const T> dout,
                    View<T> dk, View<T> dv, BwdArgs a) {
  const int R = BwdTile<DMAX>::R, OPT = R * DMAX / kBwdThreads, D = a.D, tid = threadIdx.x;
  __shared__ float Ks[R][DMAX + 1], Vs[R][DMAX + 1], Qs[R][DMAX + 1], dOs[R][DMAX + 1];
  __shared__ float P[R][R + 1], dS[R][R + 1], lse[R], delta[R];
  const long long bh = a.bh0 + blockIdx.y, k0 = blockIdx.x * (long long)R;
  const int nk = a.Nk - k0 < R ? (int)(a.Nk - k0) : R;
  load_tile<T, DMAX, R>(Ks, k, bh, k0, a.Nk, D);
  load_tile<T, DMAX, R>(Vs, v, bh, k0, a.Nk, D);
  float gk[OPT], gv[OPT];
#pragma unroll
  for (int j = 0; j < OPT; j++) gk[j] = gv[j] = 0.0f;
  for (long long q0 = 0; q0 < a.Nq; q0 += R) {
    const int nq = a.Nq - q0 < R ? (int)(a.Nq - q0) : R;
    __syncthreads(); /* the previous tile is no longer read */
    load_tile<T, DMAX, R>(Qs, q, bh, q0, a.Nq, D);
    load_tile<T, DMAX, R>(dOs, dout, bh, q0, a.Nq, D);
    if (tid < R) {
      lse[tid] = tid < nq ? a.lse[bh * a.Nq + q0 + tid] : 0.0f;
      delta[tid] = tid < nq ? a.delta[bh * a.Nq + q0 + tid] : 0.0f;
    }
    __syncthreads();
    probs_and_dscores<DMAX, R>(Qs, dOs, Ks, Vs, lse, delta, nq, nk, D, a.scale, P, dS);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < OPT; j++) {
      const int e = tid + j * kBwdThreads, key = e / DMAX, d = e % DMAX;
      float ak = gk[j], av = gv[j];
      for (int i = 0; i < R; i++) {
        ak = fmaf(dS[i][key], Qs[i][d], ak);
        av = fmaf(P[i][key], dOs[i][d], av);
      }
      gk[j] = ak;
      gv[j] = av;
    }
  }
#pragma unroll
  for (int j = 0; j < OPT; j++) {
    const int e = tid + j * kBwdThreads, key = e / DMAX, d = e % DMAX;
    if (key < nk && d < D) {
      dk.row(bh, k0 + key)[d] = from_f32<T>(a.scale * gk[j]);
      dv.row(bh, k0 + key)[d] = from_f32<T>(gv[j]);
    }
  }
}

template <typename T, int DMAX>
__global__ void __launch_bounds__(kBwdThreads)
    bwd_dq_kernel(View<const T> q, View<const T> k, View<const T> v, View<const T> dout, View<T> dq,
                  BwdArgs a) {
  const int R = BwdTile<DMAX>::R, OPT = R * DMAX / kBwdThreads, D = a.D, tid = threadIdx.x;
  __shared__ float Ks[R][DMAX + 1], Vs[R][DMAX + 1], Qs[R][DMAX + 1], dOs[R][DMAX + 1];
  __shared__ float P[R][R + 1], dS[R][R + 1], lse[R], delta[R];
  const long long bh = a.bh0 + blockIdx.y, q0 = blockIdx.x * (long long)R;
  const int nq = a.Nq - q0 < R ? (int)(a.Nq - q0) : R;
  load_tile<T, DMAX, R>(Qs, q, bh, q0, a.Nq, D);
  load_tile<T, DMAX, R>(dOs, dout, bh, q0, a.Nq, D);
  if (tid < R) {
    lse[tid] = tid < nq ? a.lse[bh * a.Nq + q0 + tid] : 0.0f;
    delta[tid] = tid < nq ? a.delta[bh * a.Nq + q0 + tid] : 0.0f;
  }
  float gq[OPT];
#pragma unroll
  for (int j = 0; j < OPT; j++) gq[j] = 0.0f;
  for (long long k0 = 0; k0 < a.Nk; k0 += R) {
    const int nk = a.Nk - k0 < R ? (int)(a.Nk - k0) : R;
    __syncthreads(); /* the previous tile is no longer read (and Qs/lse are visible) */
    load_tile<T, DMAX, R>(Ks, k, bh, k0, a.Nk, D);
    load_tile<T, DMAX, R>(Vs, v, bh, k0, a.Nk, D);
    __syncthreads();
    probs_and_dscores<DMAX, R>(Qs, dOs, Ks, Vs, lse, delta, nq, nk, D, a.scale, P, dS);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < OPT; j++) {
      const int e = tid + j * kBwdThreads, i = e / DMAX, d = e % DMAX;
      float acc = gq[j];
      for (int key = 0; key < R; key++) acc = fmaf(dS[i][key], Ks[key][d], acc);
      gq[j] = acc;
    }
  }
#pragma unroll
  for (int j = 0; j < OPT; j++) {
    const int e = tid + j * kBwdThreads, i = e / DMAX, d = e % DMAX;
    if (i < nq && d < D) dq.row(bh, q0 + i)[d] = from_f32<T>(a.scale * gq[j]);
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
  gpuStream_t s = (gpuStream_t)stream;
#define DT_BWD_D(T)                                                                                \
  do {                                                                                             \
    if (a.D <= 64) return dense_bwd_typed<T, 64>(tensors, a, delta, s);                            \
    if (a.D <= 128) return dense_bwd_typed<T, 128>(tensors, a, delta, s);                          \
    if (a.D <= 256) return dense_bwd_typed<T, 256>(tensors, a, delta, s);                          \
    return DT_GPU_NOT_IMPLEMENTED;                                                                 \
  } while (0)
  switch (q->dtype) {
  case DITATTN_F32: DT_BWD_D(float);
  case DITATTN_BF16: DT_BWD_D(bf16_t);
  case DITATTN_F16: DT_BWD_D(f16_t);
  }
#undef DT_BWD_D
  return DT_GPU_NOT_IMPLEMENTED;
}
