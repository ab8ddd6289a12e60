/* The fp32-arithmetic attention kernel shared by dense attention and LLSA:
 * a block of 16 queries walks a list of key positions with online softmax.
 * What a key position means (an original token, or a pooled token with an
 * ln-weight, or nothing) is the job of a Keys policy:
 *   begin(bh, g)  once per block (g = the block's query group),
 *   count()       number of key positions,
 *   resolve(p)    KeyRef of position p (level -1 = masked out),
 *   pooled_k/v(level, bh, row)  f32 rows of pooled tokens (level >= 1).
 * Each tile's key rows are resolved once into shared row pointers.
 * Inputs of any dtype are converted to fp32 on load. */
#ifndef DITATTN_GPU_ATTEND_CUH
#define DITATTN_GPU_ATTEND_CUH

#include "gpu_common.cuh"

namespace DT_GPU_NS {

struct KeyRef {
  int level;     /* -1: masked, 0: original token, l >= 1: pooled level l */
  long long row; /* token index in that level */
  float lnw;     /* ln of the key's weight */
};

static const int kAttendThreads = 128;
static const int kAttendQT = 16; /* queries per block: one LLSA block at b = 16 */

/* Key tile per head-dimension class, so that static shared memory stays
 * under 48 KiB: floats = QT·DMAX + KT·(DMAX+1) + QT·KT. */
template <int DMAX> struct AttendTile {
  static const int KT = DMAX <= 64 ? 64 : (DMAX <= 128 ? 32 : 16);
};

struct AttendArgs {
  long long Nq;
  long long group_size;      /* queries sharing one key list */
  long long tiles_per_group; /* ceil(group_size / QT) */
  long long bh0;             /* first (b·H + h) of this launch */
  long long bh_lo, bh_hi;    /* the (b·H + h) slices to compute (clamped to B·H) */
  long long group0;          /* first query group of the launch */
  long long q_lo, q_hi;      /* query rows computed; out row 0 is q row q_lo */
  int D;
  float scale;
  float *lse; /* [B·H][q_hi - q_lo] or NULL */
};

/* The end of the launch's (b·H + h) slices: a.bh_hi within q's B·H. */
static inline long long attend_bh_end(const ditattn_tensor *q, const AttendArgs &a) {
  const long long BH = q->shape[0] * q->shape[1];
  return a.bh_hi < BH ? a.bh_hi : BH;
}

/* Every query row of every group (q_lo = 0, q_hi = Nq), every slice. */
static inline AttendArgs attend_args(long long Nq, long long group_size, int D, float scale,
                                     float *lse) {
  AttendArgs a;
  a.Nq = Nq;
  a.group_size = group_size;
  a.tiles_per_group = (group_size + kAttendQT - 1) / kAttendQT;
  a.bh0 = 0;
  a.bh_lo = 0;
  a.bh_hi = 1LL << 62; /* every slice */
  a.group0 = 0;
  a.q_lo = 0;
  a.q_hi = Nq;
  a.D = D;
  a.scale = scale;
  a.lse = lse;
  return a;
}

/* Rows [q_lo, q_hi) of query group g: the groups of a query-row range. */
static inline void attend_restrict_rows(AttendArgs *a, long long q_lo, long long q_hi,
                                        long long *groups) {
  a->q_lo = q_lo;
  a->q_hi = q_hi;
  a->group0 = q_lo / a->group_size;
  *groups = q_hi > q_lo ? (q_hi - 1) / a->group_size - a->group0 + 1 : 0;
}

/* Rows of one tile: [*begin, *end) = the tile's rows within its group,
 * clipped to the launch's row range (may be empty). */
DT_DEV void attend_tile_rows(const AttendArgs &a, long long grp, long long sub, int QT,
                             long long *begin, long long *end) {
  long long b0 = grp * a.group_size + sub * QT;
  long long e0 = (grp + 1) * a.group_size < a.Nq ? (grp + 1) * a.group_size : a.Nq;
  if (b0 + QT < e0) e0 = b0 + QT;
  *begin = b0 > a.q_lo ? b0 : a.q_lo;
  *end = e0 < a.q_hi ? e0 : a.q_hi;
}

/* KVs[c][0..DMAX) = row c of the tile (zeros past D and for masked keys). */
template <typename T, int DMAX, int KT, int NT>
DT_DEV void load_key_rows(float (*KVs)[DMAX + 1], const void *const *rows, const int *level,
                          int D) {
  for (int e = threadIdx.x; e < KT * DMAX; e += NT) {
    const int c = e / DMAX, d = e % DMAX, lvl = level[c];
    float val = 0.0f;
    if (d < D && lvl == 0) val = to_f32(((const T *)rows[c])[d]);
    if (d < D && lvl > 0) val = ((const float *)rows[c])[d];
    KVs[c][d] = val;
  }
}

template <typename T, int DMAX, typename Keys>
__global__ void __launch_bounds__(kAttendThreads)
    attend_kernel(View<const T> q, View<const T> k, View<const T> v, View<T> out, AttendArgs a,
                  Keys keys) {
  const int QT = kAttendQT, KT = AttendTile<DMAX>::KT, NT = kAttendThreads;
  const int OPT = QT * DMAX / NT; /* output elements per thread */
  __shared__ float Qs[QT][DMAX];
  __shared__ float KVs[KT][DMAX + 1]; /* +1: the S loop reads columns of it */
  __shared__ float Ps[QT][KT];
  __shared__ float row_m[QT], row_l[QT], row_alpha[QT];
  __shared__ int key_level[KT];
  __shared__ const void *key_k[KT], *key_v[KT]; /* row pointers: T (level 0) or f32 */
  __shared__ float key_lnw[KT];

  const long long bh = a.bh0 + blockIdx.y;
  const long long g = a.group0 + blockIdx.x / a.tiles_per_group;
  const long long sub = blockIdx.x % a.tiles_per_group;
  long long q_begin, q_end;
  attend_tile_rows(a, g, sub, QT, &q_begin, &q_end);
  if (q_begin >= q_end) return; /* uniform over the block */
  const int nrows = (int)(q_end - q_begin);
  const int D = a.D, tid = threadIdx.x, lane = tid % DT_WARP, warp = tid / DT_WARP;
  const int nwarps = NT / DT_WARP;
  keys.begin(bh, g);

  for (int e = tid; e < QT * DMAX; e += NT) {
    int r = e / DMAX, d = e % DMAX;
    Qs[r][d] = (r < nrows && d < D) ? to_f32(q.row(bh, q_begin + r)[d]) : 0.0f;
  }
  if (tid < QT) {
    row_m[tid] = -INFINITY;
    row_l[tid] = 0.0f;
  }
  float o[OPT];
#pragma unroll
  for (int j = 0; j < OPT; j++) o[j] = 0.0f;

  const long long M = keys.count();
  for (long long kt0 = 0; kt0 < M; kt0 += KT) {
    if (tid < KT) {
      KeyRef kr = {-1, 0, 0.0f};
      if (kt0 + tid < M) kr = keys.resolve(kt0 + tid);
      const void *kp = nullptr, *vp = nullptr;
      if (kr.level == 0) kp = k.row(bh, kr.row), vp = v.row(bh, kr.row);
      if (kr.level > 0)
        kp = keys.pooled_k(kr.level, bh, kr.row), vp = keys.pooled_v(kr.level, bh, kr.row);
      key_level[tid] = kr.level;
      key_k[tid] = kp;
      key_v[tid] = vp;
      key_lnw[tid] = kr.lnw;
    }
    __syncthreads(); /* also: the previous tile's P·V reads of KVs are done */
    load_key_rows<T, DMAX, KT, NT>(KVs, key_k, key_level, D);
    __syncthreads();
    for (int e = tid; e < QT * KT; e += NT) {
      int r = e / KT, c = e % KT;
      float z = -INFINITY;
      if (key_level[c] >= 0) {
        float s = 0.0f;
        for (int d = 0; d < D; d++) s = fmaf(Qs[r][d], KVs[c][d], s);
        z = s * a.scale + key_lnw[c];
      }
      Ps[r][c] = z;
    }
    __syncthreads();
    for (int r = warp; r < QT; r += nwarps) {
      const float m_old = row_m[r];
      float tmax = -INFINITY;
      for (int c = lane; c < KT; c += DT_WARP) tmax = dt_wa_max(tmax, Ps[r][c]);
      const float m_new = dt_wa_max(m_old, warp_max(tmax));
      float sum = 0.0f;
      for (int c = lane; c < KT; c += DT_WARP) {
        float p = dt_wa_prob(Ps[r][c], m_new);
        Ps[r][c] = p;
        sum += p;
      }
      sum = warp_sum(sum); /* every lane has read row_m[r] before this point */
      if (lane == 0) {
        float alpha = dt_wa_rescale(m_old, m_new);
        row_alpha[r] = alpha;
        row_l[r] = row_l[r] * alpha + sum;
        row_m[r] = m_new;
      }
    }
    __syncthreads(); /* K no longer read: V may replace it */
    load_key_rows<T, DMAX, KT, NT>(KVs, key_v, key_level, D);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < OPT; j++) {
      const int e = tid + j * NT, r = e / DMAX, d = e % DMAX;
      float acc = o[j] * row_alpha[r];
      for (int c = 0; c < KT; c++) acc = fmaf(Ps[r][c], KVs[c][d], acc);
      o[j] = acc;
    }
    __syncthreads(); /* before the next tile rewrites key_* and KVs */
  }

#pragma unroll
  for (int j = 0; j < OPT; j++) {
    const int e = tid + j * NT, r = e / DMAX, d = e % DMAX;
    if (r < nrows && d < D) out.row(bh, q_begin - a.q_lo + r)[d] = from_f32<T>(o[j] / row_l[r]);
  }
  if (a.lse && tid < nrows)
    a.lse[bh * (a.q_hi - a.q_lo) + q_begin - a.q_lo + tid] = row_m[tid] + logf(row_l[tid]);
}

/* Launches attend_kernel over all (b, h) for `groups` query groups. */
template <typename T, int DMAX, typename Keys>
static int attend_launch(const ditattn_tensor *q, const ditattn_tensor *k, const ditattn_tensor *v,
                         const ditattn_tensor *out, AttendArgs a, long long groups, Keys keys,
                         gpuStream_t s) {
  const long long BH = attend_bh_end(q, a);
  for (long long bh0 = a.bh_lo; bh0 < BH; bh0 += kMaxGridY) {
    long long nbh = BH - bh0 < kMaxGridY ? BH - bh0 : kMaxGridY;
    a.bh0 = bh0;
    dim3 grid((unsigned)(groups * a.tiles_per_group), (unsigned)nbh);
    attend_kernel<T, DMAX, Keys>
        <<<grid, kAttendThreads, 0, s>>>(make_view<const T>(q), make_view<const T>(k),
                                         make_view<const T>(v), make_view<T>(out), a, keys);
    int st = launch_status();
    if (st) return st;
  }
  return 0;
}

/* Picks the head-dimension class and element type. */
template <typename Keys> struct AttendLaunch {
  const ditattn_tensor *q, *k, *v, *out;
  AttendArgs a;
  long long groups;
  Keys keys;
  gpuStream_t s;
  template <typename T, int DMAX> int run() const {
    return attend_launch<T, DMAX>(q, k, v, out, a, groups, keys, s);
  }
};
template <typename Keys>
static int attend_dispatch(const ditattn_tensor *q, const ditattn_tensor *k,
                           const ditattn_tensor *v, const ditattn_tensor *out, AttendArgs a,
                           long long groups, Keys keys, gpuStream_t s) {
  const AttendLaunch<Keys> f = {q, k, v, out, a, groups, keys, s};
  return dispatch_dtype_dmax(q->dtype, a.D, f);
}

} // namespace DT_GPU_NS

#endif /* DITATTN_GPU_ATTEND_CUH */
