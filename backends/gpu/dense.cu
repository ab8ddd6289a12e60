/* Dense attention forward: the fp32 attend kernel over one key range, and a
 * tensor-core kernel (mma.sync m16n8k16, fp32 accumulate, online softmax in
 * the exp2 domain) for bf16/f16 with D in {64, 128} where the platform has it. */
#include "attend.cuh"
#include "mma_common.cuh"

namespace DT_GPU_NS {

/* Every query group sees all Nk original keys with weight 1. */
struct DenseKeys {
  long long Nk;
  DT_DEV void begin(long long, long long) {}
  DT_DEV long long count() const { return Nk; }
  DT_DEV KeyRef resolve(long long p) const {
    KeyRef r = {0, p, 0.0f};
    return r;
  }
  DT_DEV const float *pooled_k(int, long long, long long) const { return nullptr; }
  DT_DEV const float *pooled_v(int, long long, long long) const { return nullptr; }
};

#if defined(DT_GPU_HOST_HAS_MMA)
/* ---------------------------------------------------------------- mma path */
static const int kMmaThreads = 128; /* 4 warps × 16 query rows */
static const int kMmaQ = 64;
static const int kMmaKT = 64;

/* Lane roles (mma fragments): g = lane / 4 picks rows g and g + 8 of the
 * warp's 16 queries (and key/channel g of a B tile), t = lane % 4 picks
 * columns 2t, 2t + 1 (and 2t + 8, 2t + 9 of A). */
template <typename T, int D>
__global__ void __launch_bounds__(kMmaThreads)
    dense_mma_kernel(View<const T> q, View<const T> k, View<const T> v, View<T> out, float *lse,
                     long long Nq, long long Nk, float scale_log2, long long bh0) {
  const int KT = kMmaKT, KS = D + 8, VS = KT + 8; /* +8: conflict-free fragment reads */
  __shared__ __align__(16) unsigned short Ks[KT * KS];
  __shared__ __align__(16) unsigned short Vt[D * VS]; /* V transposed: [channel][key] */
  const long long bh = bh0 + blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
  const long long r0 = blockIdx.x * (long long)kMmaQ + warp * 16 + g, r1 = r0 + 8;
  const unsigned short *q0 = r0 < Nq ? (const unsigned short *)q.row(bh, r0) : nullptr;
  const unsigned short *q1 = r1 < Nq ? (const unsigned short *)q.row(bh, r1) : nullptr;

  unsigned qa[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++) {
    qa[ks][0] = ld_pair(q0, ks * 16 + 2 * t);
    qa[ks][1] = ld_pair(q1, ks * 16 + 2 * t);
    qa[ks][2] = ld_pair(q0, ks * 16 + 2 * t + 8);
    qa[ks][3] = ld_pair(q1, ks * 16 + 2 * t + 8);
  }
  float o[D / 8][4];
#pragma unroll
  for (int nd = 0; nd < D / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (long long kt0 = 0; kt0 < Nk; kt0 += KT) {
    __syncthreads(); /* the previous tile is no longer read */
    for (int e = tid; e < KT * D / 8; e += kMmaThreads) {
      const int c = e / (D / 8), d8 = (e % (D / 8)) * 8;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (kt0 + c < Nk) {
        kv = *(const uint4 *)(k.row(bh, kt0 + c) + d8);
        vv = *(const uint4 *)(v.row(bh, kt0 + c) + d8);
      }
      *(uint4 *)&Ks[c * KS + d8] = kv;
      const unsigned w[4] = {vv.x, vv.y, vv.z, vv.w};
#pragma unroll
      for (int i = 0; i < 4; i++) {
        Vt[(d8 + 2 * i) * VS + c] = (unsigned short)(w[i] & 0xffffu);
        Vt[(d8 + 2 * i + 1) * VS + c] = (unsigned short)(w[i] >> 16);
      }
    }
    __syncthreads();

    float s[KT / 8][4];
#pragma unroll
    for (int nt = 0; nt < KT / 8; nt++) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) {
        const unsigned short *kr = &Ks[(nt * 8 + g) * KS + ks * 16 + 2 * t];
        mma16816<T>(s[nt], qa[ks], *(const unsigned *)kr, *(const unsigned *)(kr + 8));
      }
    }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < KT / 8; nt++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const long long col = kt0 + nt * 8 + 2 * t + (i & 1);
        s[nt][i] = col < Nk ? s[nt][i] * scale_log2 : -INFINITY;
        mx[i >> 1] = dt_wa_max(mx[i >> 1], s[nt][i]);
      }
    }
#pragma unroll
    for (int h = 0; h < 2; h++) { /* the 4 lanes of a quad share rows */
      mx[h] = dt_wa_max(mx[h], shfl_xor(mx[h], 1));
      mx[h] = dt_wa_max(mx[h], shfl_xor(mx[h], 2));
      const float alpha = mx[h] == -INFINITY ? 1.0f : exp2f(m[h] - mx[h]);
      m[h] = mx[h];
      l[h] *= alpha;
#pragma unroll
      for (int nd = 0; nd < D / 8; nd++) {
        o[nd][2 * h] *= alpha;
        o[nd][2 * h + 1] *= alpha;
      }
    }
#pragma unroll
    for (int nt = 0; nt < KT / 8; nt++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const float mh = m[i >> 1];
        const float p = mh == -INFINITY ? 0.0f : exp2f(s[nt][i] - mh);
        s[nt][i] = p;
        l[i >> 1] += p;
      }
    }
#pragma unroll
    for (int kk = 0; kk < KT / 16; kk++) {
      const unsigned pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]),
                              pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int nd = 0; nd < D / 8; nd++) {
        const unsigned short *vr = &Vt[(nd * 8 + g) * VS + kk * 16 + 2 * t];
        mma16816<T>(o[nd], pa, *(const unsigned *)vr, *(const unsigned *)(vr + 8));
      }
    }
  }

#pragma unroll
  for (int h = 0; h < 2; h++) {
    l[h] += shfl_xor(l[h], 1);
    l[h] += shfl_xor(l[h], 2);
    const long long r = h ? r1 : r0;
    if (r >= Nq) continue;
    const float inv = 1.0f / l[h];
    unsigned short *orow = (unsigned short *)out.row(bh, r);
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++)
      *(unsigned *)(orow + nd * 8 + 2 * t) = pack2<T>(o[nd][2 * h] * inv, o[nd][2 * h + 1] * inv);
    if (lse && t == 0) lse[bh * Nq + r] = (m[h] + log2f(l[h])) * 0.69314718055994531f;
  }
}

template <typename T, int D>
static int dense_mma_launch(const ditattn_tensor *q, const ditattn_tensor *k,
                            const ditattn_tensor *v, const ditattn_tensor *out, float *lse,
                            float scale, gpuStream_t s) {
  const long long BH = q->shape[0] * q->shape[1], Nq = q->shape[2], Nk = k->shape[2];
  const float scale_log2 = scale * 1.4426950408889634f;
  for (long long bh0 = 0; bh0 < BH; bh0 += kMaxGridY) {
    long long nbh = BH - bh0 < kMaxGridY ? BH - bh0 : kMaxGridY;
    dim3 grid(blocks_for(Nq, kMmaQ), (unsigned)nbh);
    dense_mma_kernel<T, D><<<grid, kMmaThreads, 0, s>>>(
        make_view<const T>(q), make_view<const T>(k), make_view<const T>(v), make_view<T>(out), lse,
        Nq, Nk, scale_log2, bh0);
    int st = launch_status();
    if (st) return st;
  }
  return 0;
}
#endif /* DT_GPU_HOST_HAS_MMA */

} // namespace DT_GPU_NS

using namespace DT_GPU_NS;

extern "C" {

int DT_GPU_FN(launch_dense_mma)(const ditattn_tensor *q, const ditattn_tensor *k,
                                const ditattn_tensor *v, const ditattn_tensor *out, float *lse,
                                float scale, void *stream) {
#if defined(DT_GPU_HOST_HAS_MMA)
  const long long D = q->shape[3];
  if (q->dtype == DITATTN_F32 || (D != 64 && D != 128)) return DT_GPU_NOT_IMPLEMENTED;
  if (!rows_aligned16(q) || !rows_aligned16(k) || !rows_aligned16(v) || !rows_aligned16(out))
    return DT_GPU_NOT_IMPLEMENTED;
  gpuStream_t s = (gpuStream_t)stream;
  if (q->dtype == DITATTN_BF16)
    return D == 64 ? dense_mma_launch<bf16_t, 64>(q, k, v, out, lse, scale, s)
                   : dense_mma_launch<bf16_t, 128>(q, k, v, out, lse, scale, s);
  return D == 64 ? dense_mma_launch<f16_t, 64>(q, k, v, out, lse, scale, s)
                 : dense_mma_launch<f16_t, 128>(q, k, v, out, lse, scale, s);
#else
  (void)q, (void)k, (void)v, (void)out, (void)lse, (void)scale, (void)stream;
  return DT_GPU_NOT_IMPLEMENTED;
#endif
}

int DT_GPU_FN(launch_dense_f32)(const ditattn_tensor *q, const ditattn_tensor *k,
                                const ditattn_tensor *v, const ditattn_tensor *out, float *lse,
                                float scale, void *stream) {
  const AttendArgs a = attend_args(q->shape[2], q->shape[2], (int)q->shape[3], scale, lse);
  DenseKeys keys;
  keys.Nk = k->shape[2];
  return attend_dispatch(q, k, v, out, a, 1, keys, (gpuStream_t)stream);
}

} // extern "C"
