/* Helpers shared by the GPU kernel files: tensor views, warp reductions,
 * launch checks. Platform names come from gpu_port.h only. */
#ifndef DITATTN_GPU_COMMON_CUH
#define DITATTN_GPU_COMMON_CUH

#include "gpu_port.h"

#include "gpu_api.h"
#include "warp_algos.h"

#include <stdint.h>

namespace DT_GPU_NS {

/* A (B,H,N,D) view in kernel form: element strides, D contiguous. */
template <typename T> struct View {
  T *data;
  long long sb, sh, sn;
  int H;
  DT_DEV T *row(long long bh, long long n) const {
    return data + (bh / H) * sb + (bh % H) * sh + n * sn;
  }
};

template <typename T> static inline View<T> make_view(const ditattn_tensor *t) {
  View<T> v;
  v.data = (T *)t->data;
  v.sb = t->stride[0];
  v.sh = t->stride[1];
  v.sn = t->stride[2];
  v.H = (int)t->shape[1];
  return v;
}

/* acc += x[0], x[step], ... x[(U-1)·step] in that order, the U loads
 * issued before the adds. */
template <int U, typename T> DT_DEV double add_batch(double acc, const T *x, long long step) {
  float v[U];
#pragma unroll
  for (int u = 0; u < U; u++) v[u] = to_f32(x[u * step]);
#pragma unroll
  for (int u = 0; u < U; u++) acc = add_rn(acc, (double)v[u]);
  return acc;
}

/* Σ_d q[d]·kt[d·stride] over d = 0 .. D-1, unfused double multiplies and
 * adds in d order (ref/'s selection scores, bit for bit), the loads of 8
 * terms issued ahead of their adds. */
DT_DEV double dot_strided(const double *q, const double *kt, long long stride, int D) {
  double s = 0.0;
  int d = 0;
  for (; d + 8 <= D; d += 8) {
    double k8[8];
#pragma unroll
    for (int u = 0; u < 8; u++) k8[u] = kt[(long long)(d + u) * stride];
#pragma unroll
    for (int u = 0; u < 8; u++) s = add_rn(s, mul_rn(q[d + u], k8[u]));
  }
  for (; d < D; d++) s = add_rn(s, mul_rn(q[d], kt[(long long)d * stride]));
  return s;
}

/* Mean of channel d over tokens [j0, j1), accumulated in double in token
 * order: the same operations as ref/, so the result is bit-identical. The
 * loads go out 32 (then 8) tokens at a time ahead of their in-order adds:
 * with one thread per output, a long block (LLSA's coarse levels: b^l
 * tokens, with few outputs when a dist/ rank pools its share) is otherwise
 * bound by one load's latency per token. */
template <typename T>
DT_DEV double block_mean(const View<const T> &x, long long bh, long long j0, long long j1,
                         long long d) {
  const T *at = x.row(bh, j0) + d;
  const long long step = x.sn;
  double acc = 0.0;
  long long j = j0;
  for (; j + 32 <= j1; j += 32, at += 32 * step) acc = add_batch<32>(acc, at, step);
  for (; j + 8 <= j1; j += 8, at += 8 * step) acc = add_batch<8>(acc, at, step);
  for (; j < j1; j++, at += step) acc = add_rn(acc, (double)to_f32(*at));
  return acc / (double)(j1 - j0);
}

/* Butterfly all-reduce over the warp (see warp_algos.h). */
DT_DEV float warp_max(float v) {
  for (int off = DT_WARP / 2; off > 0; off >>= 1) v = dt_wa_max(v, shfl_xor(v, off));
  return v;
}
DT_DEV float warp_sum(float v) {
  for (int off = DT_WARP / 2; off > 0; off >>= 1) v += shfl_xor(v, off);
  return v;
}
DT_DEV void warp_best(double *s, int *i) {
  for (int off = DT_WARP / 2; off > 0; off >>= 1) {
    double so = shfl_xor(*s, off);
    int io = shfl_xor(*i, off);
    dt_wa_best_of(s, i, so, io);
  }
}

/* The last launch's status (0 = fine). */
static inline int launch_status(void) { return (int)gpuGetLastError(); }

/* Grid dimension y/z limit: B·H beyond it is processed in slices. */
static const long long kMaxGridY = 65535;

static inline unsigned blocks_for(long long work, int threads) {
  long long b = (work + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : b);
}

/* Blocks of `threads` for a grid-stride loop over `work` elements: at most
 * 2^20 (the loop covers the rest), at least 1. */
static inline unsigned stride_grid(long long work, int threads) {
  long long b = (work + threads - 1) / threads;
  if (b > (1 << 20)) b = 1 << 20;
  return (unsigned)(b < 1 ? 1 : b);
}

/* Calls f.template run<T, DMAX>() for the element type of `dtype` and the
 * head-dimension class DMAX in {64, 128, 256} that holds D. */
template <typename T, typename F> static int dispatch_dmax(int D, const F &f) {
  if (D <= 64) return f.template run<T, 64>();
  if (D <= 128) return f.template run<T, 128>();
  if (D <= 256) return f.template run<T, 256>();
  return DT_GPU_NOT_IMPLEMENTED;
}
template <typename F> static int dispatch_dtype_dmax(ditattn_dtype dtype, int D, const F &f) {
  switch (dtype) {
  case DITATTN_F32: return dispatch_dmax<float>(D, f);
  case DITATTN_BF16: return dispatch_dmax<bf16_t>(D, f);
  case DITATTN_F16: return dispatch_dmax<f16_t>(D, f);
  }
  return DT_GPU_NOT_IMPLEMENTED;
}

} // namespace DT_GPU_NS

#endif /* DITATTN_GPU_COMMON_CUH */
