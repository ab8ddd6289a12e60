/* Memory-bound helpers: mean pooling, 3D RoPE, token-order gathers and the
 * log-sum-exp merge. Each is one grid-stride kernel templated on dtypes. */
#include "gpu_common.cuh"

namespace DT_GPU_NS {

static const int kThreads = 256;

static inline unsigned grid_for(long long work) { return stride_grid(work, kThreads); }

/* ------------------------------------------------------------ pooling */
template <typename Tin, typename Tout>
__global__ void pool_kernel(View<const Tin> x, View<Tout> y, long long N, long long D,
                            long long n_out, long long block, long long total) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
       e += (long long)gridDim.x * blockDim.x) {
    long long d = e % D, c = e / D % n_out, bh = e / D / n_out;
    long long j0 = c * block, j1 = N - j0 > block ? j0 + block : N;
    y.row(bh, c)[d] = from_f32<Tout>((float)block_mean(x, bh, j0, j1, d));
  }
}

template <typename Tin, typename Tout>
static int pool_typed(const ditattn_tensor *x, const ditattn_tensor *y, long long block,
                      gpuStream_t s) {
  long long N = x->shape[2], D = x->shape[3], n = y->shape[2];
  long long total = x->shape[0] * x->shape[1] * n * D;
  pool_kernel<Tin, Tout><<<grid_for(total), kThreads, 0, s>>>(
      make_view<const Tin>(x), make_view<Tout>(y), N, D, n, block, total);
  return launch_status();
}

/* ------------------------------------------------------------ RoPE */
struct RopeArgs {
  long long N, D, BH;
  int dims[3];
  int rot_pairs; /* (d_t + d_h + d_w) / 2 */
  int items;     /* rot_pairs + pass-through channels (0 when in place) */
  int half_split, inverse;
  double theta;
};

/* One thread per (token, pair): the angle is computed once in double (angles
 * reach 2^21 rad) and applied to every (b, h). */
template <typename T>
__global__ void rope_kernel(View<const T> x, View<T> y, const int32_t *pos, RopeArgs a) {
  long long total = a.N * a.items;
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
       e += (long long)gridDim.x * blockDim.x) {
    long long n = e / a.items;
    int item = (int)(e % a.items);
    if (item >= a.rot_pairs) { /* channel past the rotated parts: copy */
      long long ch = 2LL * a.rot_pairs + (item - a.rot_pairs);
      for (long long bh = 0; bh < a.BH; bh++) y.row(bh, n)[ch] = x.row(bh, n)[ch];
      continue;
    }
    int axis = 0, j = item, off = 0;
    while (j >= a.dims[axis] / 2) {
      j -= a.dims[axis] / 2;
      off += a.dims[axis];
      axis++;
    }
    int da = a.dims[axis];
    double omega = pow(a.theta, -2.0 * (double)j / (double)da);
    double phi = (double)pos[3 * n + axis] * omega;
    if (a.inverse) phi = -phi;
    double sn, cs;
    sincos(phi, &sn, &cs);
    long long c0 = a.half_split ? off + j : off + 2 * j;
    long long c1 = a.half_split ? off + j + da / 2 : off + 2 * j + 1;
    for (long long bh = 0; bh < a.BH; bh++) {
      const T *xr = x.row(bh, n);
      double u = to_f32(xr[c0]), w = to_f32(xr[c1]);
      T *yr = y.row(bh, n);
      yr[c0] = from_f32<T>((float)(u * cs - w * sn));
      yr[c1] = from_f32<T>((float)(u * sn + w * cs));
    }
  }
}

template <typename T>
static int rope_typed(const ditattn_tensor *x, const ditattn_tensor *y, const int32_t *pos,
                      RopeArgs a, gpuStream_t s) {
  rope_kernel<T>
      <<<grid_for(a.N * a.items), kThreads, 0, s>>>(make_view<const T>(x), make_view<T>(y), pos, a);
  return launch_status();
}

/* ------------------------------------------------------------ token order */
/* Raw element copies: W is a word type of the dtype's size. */
template <typename W>
__global__ void order_kernel(View<const W> x, View<W> y, const int64_t *perm, long long N,
                             long long D, long long total, int inverse) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
       e += (long long)gridDim.x * blockDim.x) {
    long long d = e % D, s = e / D % N, bh = e / D / N;
    long long src = inverse ? s : perm[s], dst = inverse ? perm[s] : s;
    y.row(bh, dst)[d] = x.row(bh, src)[d];
  }
}

template <typename W>
static int order_typed(const ditattn_tensor *x, const ditattn_tensor *y, const int64_t *perm,
                       int inverse, gpuStream_t s) {
  long long N = x->shape[2], D = x->shape[3];
  long long total = x->shape[0] * x->shape[1] * N * D;
  order_kernel<W><<<grid_for(total), kThreads, 0, s>>>(make_view<const W>(x), make_view<W>(y), perm,
                                                       N, D, total, inverse);
  return launch_status();
}

/* ------------------------------------------------------------ LSE merge */
/* One thread per row: the row's lse is read before and written after its D
 * channels, so no other thread may touch the row. */
template <typename T>
__global__ void lse_merge_kernel(View<T> acc, float *lse_acc, View<const T> part,
                                 const float *lse_part, long long N, long long D, long long rows) {
  for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < rows;
       r += (long long)gridDim.x * blockDim.x) {
    long long bh = r / N, n = r % N;
    float la = lse_acc[r], lp = lse_part[r];
    T *o = acc.row(bh, n);
    if (lp == -INFINITY) { /* empty part adds nothing; two empty sides give zeros */
      if (la == -INFINITY)
        for (long long d = 0; d < D; d++) o[d] = from_f32<T>(0.0f);
      continue;
    }
    const T *op = part.row(bh, n);
    if (la == -INFINITY) { /* empty accumulator: its values are not read */
      for (long long d = 0; d < D; d++) o[d] = op[d];
      lse_acc[r] = lp;
      continue;
    }
    float m = dt_wa_max(la, lp);
    float lse = m + logf(expf(la - m) + expf(lp - m));
    float wa = expf(la - lse), wp = expf(lp - lse);
    for (long long d = 0; d < D; d++) o[d] = from_f32<T>(wa * to_f32(o[d]) + wp * to_f32(op[d]));
    lse_acc[r] = lse;
  }
}

template <typename T>
static int lse_merge_typed(const ditattn_tensor *acc, float *lse_acc, const ditattn_tensor *part,
                           const float *lse_part, gpuStream_t s) {
  long long N = acc->shape[2], D = acc->shape[3], rows = acc->shape[0] * acc->shape[1] * N;
  lse_merge_kernel<T><<<grid_for(rows), kThreads, 0, s>>>(
      make_view<T>(acc), lse_acc, make_view<const T>(part), lse_part, N, D, rows);
  return launch_status();
}

} // namespace DT_GPU_NS

using namespace DT_GPU_NS;

extern "C" {

int DT_GPU_FN(launch_pool)(const ditattn_tensor *x, const ditattn_tensor *y, int64_t block,
                           void *stream) {
  gpuStream_t s = (gpuStream_t)stream;
  if (x->dtype != y->dtype) return DT_GPU_NOT_IMPLEMENTED;
  switch (x->dtype) {
  case DITATTN_F32: return pool_typed<float, float>(x, y, block, s);
  case DITATTN_BF16: return pool_typed<bf16_t, bf16_t>(x, y, block, s);
  case DITATTN_F16: return pool_typed<f16_t, f16_t>(x, y, block, s);
  }
  return DT_GPU_NOT_IMPLEMENTED;
}

int DT_GPU_FN(launch_rope)(const ditattn_tensor *x, const ditattn_tensor *y, const int32_t *pos,
                           const int64_t dims[3], double theta, int half_split, int inverse,
                           void *stream) {
  RopeArgs a;
  a.N = x->shape[2];
  a.D = x->shape[3];
  a.BH = x->shape[0] * x->shape[1];
  for (int i = 0; i < 3; i++) a.dims[i] = (int)dims[i];
  a.rot_pairs = (a.dims[0] + a.dims[1] + a.dims[2]) / 2;
  a.items = a.rot_pairs + (x->data == y->data ? 0 : (int)(a.D - 2 * a.rot_pairs));
  a.half_split = half_split;
  a.inverse = inverse;
  a.theta = theta;
  if (a.items == 0) return 0; /* in place with nothing to rotate */
  gpuStream_t s = (gpuStream_t)stream;
  switch (x->dtype) {
  case DITATTN_F32: return rope_typed<float>(x, y, pos, a, s);
  case DITATTN_BF16: return rope_typed<bf16_t>(x, y, pos, a, s);
  case DITATTN_F16: return rope_typed<f16_t>(x, y, pos, a, s);
  }
  return DT_GPU_NOT_IMPLEMENTED;
}

int DT_GPU_FN(launch_order)(const ditattn_tensor *x, const ditattn_tensor *y,
                            const int64_t *seq_to_raster, int inverse, void *stream) {
  gpuStream_t s = (gpuStream_t)stream;
  if (x->dtype == DITATTN_F32) return order_typed<unsigned>(x, y, seq_to_raster, inverse, s);
  return order_typed<unsigned short>(x, y, seq_to_raster, inverse, s);
}

int DT_GPU_FN(launch_lse_merge)(const ditattn_tensor *out_acc, float *lse_acc,
                                const ditattn_tensor *out_part, const float *lse_part,
                                void *stream) {
  gpuStream_t s = (gpuStream_t)stream;
  switch (out_acc->dtype) {
  case DITATTN_F32: return lse_merge_typed<float>(out_acc, lse_acc, out_part, lse_part, s);
  case DITATTN_BF16: return lse_merge_typed<bf16_t>(out_acc, lse_acc, out_part, lse_part, s);
  case DITATTN_F16: return lse_merge_typed<f16_t>(out_acc, lse_acc, out_part, lse_part, s);
  }
  return DT_GPU_NOT_IMPLEMENTED;
}

} // extern "C"
