/* Tensor-core version of the gathered-key attention (attend.cuh's
 * attend_kernel) for bf16/f16 inputs with D in {64, 128}: mma.sync m16n8k16,
 * fp32 accumulate, online softmax in registers in the exp2 domain (as
 * dense_mma_kernel).
 *
 * One warp per 16-query tile (an LLSA block at b = 16 is one tile; larger
 * groups span several tiles), kMmaAttendWarps warps per block, all of one
 * (b, h). Keys come from the same Keys policies as attend_kernel, through
 * const members only (the policy stays in kernel parameter space,
 * __grid_constant__, instead of a per-thread local copy):
 *   resolve_in(bh, g, p)    resolve(p) of query group g of bh, without begin;
 *   shared_from(one_group)  the first key position from which every tile of
 *                           the block sees the same keys (one_group: the
 *                           block's tiles all belong to one query group);
 *                           the same value for every tile of a block.
 * Positions [0, shared_from) are walked by each warp alone in tiles of KT
 * keys (rows resolved by its lanes, gathered into the warp's own shared
 * buffer, __syncwarp only). Positions [shared_from, count) are gathered once
 * per block, kMmaAttendWarps·KT keys at a time into all the warps' buffers,
 * and every warp then runs over all of them: LLSA's coarsest level (the same
 * n_L pooled tokens for every query of a (b, h)) and a RoPeSLR group of
 * several tiles cost one gather per block instead of one per warp.
 *
 * Gathered rows are stored as T: token rows as they are, pooled f32 rows
 * rounded to T. Masked keys get zero rows and a -inf score bias. Rows are
 * read in 16-byte vectors when q, k, v and out allow it (vec), else element
 * by element. */
#ifndef DITATTN_GPU_ATTEND_MMA_CUH
#define DITATTN_GPU_ATTEND_MMA_CUH

#include "attend.cuh"
#include "mma_common.cuh"

#include <stdlib.h>
#include <string.h>

namespace DT_GPU_NS {

#if defined(DT_GPU_HOST_HAS_MMA)
static const int kMmaAttendWarps = 4;
static const int kMmaAttendThreads = kMmaAttendWarps * 32;

/* Keys per warp tile: static shared memory under 48 KiB for 4 warps
 * (D = 64: 41 KiB, D = 128: 42.5 KiB). */
template <int D> struct MmaAttendTile {
  static const int KT = D == 64 ? 32 : 16;
  static const int KS = D + 8;  /* K row stride (halves): conflict-free B reads */
  static const int VS = KT + 8; /* V transposed, [channel][key] stride */
};

/* Shared memory of one block: per warp one tile of keys and its row table. */
template <int D> struct MmaAttendSmem {
  typedef MmaAttendTile<D> Tile;
  unsigned short Ks[kMmaAttendWarps][Tile::KT * Tile::KS];
  unsigned short Vt[kMmaAttendWarps][D * Tile::VS];
  const void *key_k[kMmaAttendWarps][Tile::KT], *key_v[kMmaAttendWarps][Tile::KT];
  int key_level[kMmaAttendWarps][Tile::KT];  /* -1 masked, 0 token (T), 1 pooled (f32) */
  float key_bias[kMmaAttendWarps][Tile::KT]; /* log2(e)·lnw, -inf when masked */
};

/* Row table entry (buffer w, slot c) for key position pos (masked if >= M). */
template <typename T, int D, typename Keys>
DT_DEV void mma_resolve_key(MmaAttendSmem<D> &sm, const Keys &keys, const View<const T> &k,
                            const View<const T> &v, long long bh, long long grp, long long pos,
                            long long M, int w, int c) {
  KeyRef kr = {-1, 0, 0.0f};
  if (pos < M) kr = keys.resolve_in(bh, grp, pos);
  const void *kp = nullptr, *vp = nullptr;
  if (kr.level == 0) kp = k.row(bh, kr.row), vp = v.row(bh, kr.row);
  if (kr.level > 0)
    kp = keys.pooled_k(kr.level, bh, kr.row), vp = keys.pooled_v(kr.level, bh, kr.row);
  sm.key_k[w][c] = kp;
  sm.key_v[w][c] = vp;
  sm.key_level[w][c] = kr.level > 0 ? 1 : kr.level;
  sm.key_bias[w][c] = kr.level < 0 ? -INFINITY : kr.lnw * 1.4426950408889634f;
}

/* Eight f32 values rounded to T, packed as one 16-byte vector. */
template <typename T> DT_DEV uint4 pack8(const float *x) {
  const float4 a = __ldg((const float4 *)x), b = __ldg((const float4 *)(x + 4));
  return make_uint4(pack2<T>(a.x, a.y), pack2<T>(a.z, a.w), pack2<T>(b.x, b.y), pack2<T>(b.z, b.w));
}

/* Vectors in flight per thread: 4 keeps 128 / 168 registers (D = 64 / 128)
 * without spills; the full 8 took 168 / 222 and spilled. */
static constexpr int kGatherUnroll = 4;

/* Gathers the rows of buffers [w0, w0 + nbuf) named by their row tables;
 * threads `idx` = 0 .. nthreads-1 share the work, nthreads = 32·nbuf (a warp
 * per buffer's worth), so each thread moves a fixed number of vectors: the
 * unrolled loop and the global-only loads (__ldg: k, v and the pooled rows
 * are read-only here) let the loads be issued ahead of the shared stores. */
template <typename T, int D>
DT_DEV void mma_gather(MmaAttendSmem<D> &sm, int w0, int nbuf, int idx, int nthreads, int vec) {
  typedef MmaAttendTile<D> Tile;
  const int KT = Tile::KT, KS = Tile::KS, VS = Tile::VS;
  if (vec) {
    const int per_row = D / 8, per_thread = KT * per_row / 32;
#pragma unroll kGatherUnroll
    for (int it = 0; it < per_thread; it++) {
      const int e = idx + it * nthreads;
      const int r = e / per_row, w = w0 + r / KT, c = r % KT, d8 = (e % per_row) * 8;
      const int lvl = sm.key_level[w][c];
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (lvl == 0) {
        kv = __ldg((const uint4 *)((const T *)sm.key_k[w][c] + d8));
        vv = __ldg((const uint4 *)((const T *)sm.key_v[w][c] + d8));
      } else if (lvl > 0) {
        kv = pack8<T>((const float *)sm.key_k[w][c] + d8);
        vv = pack8<T>((const float *)sm.key_v[w][c] + d8);
      }
      *(uint4 *)&sm.Ks[w][c * KS + d8] = kv;
      const unsigned words[4] = {vv.x, vv.y, vv.z, vv.w};
      unsigned short *vt = &sm.Vt[w][d8 * VS + c];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        vt[(2 * i) * VS] = (unsigned short)(words[i] & 0xffffu);
        vt[(2 * i + 1) * VS] = (unsigned short)(words[i] >> 16);
      }
    }
  } else {
    for (int e = idx; e < nbuf * KT * D; e += nthreads) {
      const int r = e / D, w = w0 + r / KT, c = r % KT, d = e % D;
      const int lvl = sm.key_level[w][c];
      unsigned short kb = 0, vb = 0;
      if (lvl == 0) {
        kb = ((const unsigned short *)sm.key_k[w][c])[d];
        vb = ((const unsigned short *)sm.key_v[w][c])[d];
      } else if (lvl > 0) {
        kb = from_f32<T>(((const float *)sm.key_k[w][c])[d]).bits;
        vb = from_f32<T>(((const float *)sm.key_v[w][c])[d]).bits;
      }
      sm.Ks[w][c * KS + d] = kb;
      sm.Vt[w][d * VS + c] = vb;
    }
  }
}

/* Online-softmax state of one warp's 16 queries: lane (g, t) holds rows g
 * (h = 0) and g + 8 (h = 1); o in the mma C layout over D / 8 column tiles;
 * m, l in the exp2 domain (m = -inf: no key seen yet). */
template <int D> struct MmaAttendState {
  float o[D / 8][4];
  float m[2], l[2];
};

/* Folds the KT keys of buffer w into the state (as dense_mma_kernel's loop
 * body, with the per-key bias added to the scaled score). */
template <typename T, int D>
DT_DEV void mma_attend_tile(const MmaAttendSmem<D> &sm, int w, const unsigned (&qa)[D / 16][4],
                            MmaAttendState<D> &st, float scale_log2, int g, int t) {
  typedef MmaAttendTile<D> Tile;
  const int KT = Tile::KT, KS = Tile::KS, VS = Tile::VS;
  float s[KT / 8][4];
#pragma unroll
  for (int nt = 0; nt < KT / 8; nt++) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      const unsigned short *kr = &sm.Ks[w][(nt * 8 + g) * KS + ks * 16 + 2 * t];
      mma16816<T>(s[nt], qa[ks], *(const unsigned *)kr, *(const unsigned *)(kr + 8));
    }
  }
  float mx[2] = {st.m[0], st.m[1]};
#pragma unroll
  for (int nt = 0; nt < KT / 8; nt++) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      s[nt][i] = fmaf(s[nt][i], scale_log2, sm.key_bias[w][nt * 8 + 2 * t + (i & 1)]);
      mx[i >> 1] = dt_wa_max(mx[i >> 1], s[nt][i]);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; h++) { /* the 4 lanes of a quad share rows */
    mx[h] = dt_wa_max(mx[h], shfl_xor(mx[h], 1));
    mx[h] = dt_wa_max(mx[h], shfl_xor(mx[h], 2));
    const float alpha = mx[h] == -INFINITY ? 1.0f : exp2f(st.m[h] - mx[h]);
    st.m[h] = mx[h];
    st.l[h] *= alpha;
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
      st.o[nd][2 * h] *= alpha;
      st.o[nd][2 * h + 1] *= alpha;
    }
  }
#pragma unroll
  for (int nt = 0; nt < KT / 8; nt++) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const float mh = st.m[i >> 1];
      const float p = mh == -INFINITY ? 0.0f : exp2f(s[nt][i] - mh);
      s[nt][i] = p;
      st.l[i >> 1] += p;
    }
  }
#pragma unroll
  for (int kk = 0; kk < KT / 16; kk++) {
    const unsigned pa[4] = {
        pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
        pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
      const unsigned short *vr = &sm.Vt[w][(nd * 8 + g) * VS + kk * 16 + 2 * t];
      mma16816<T>(st.o[nd], pa, *(const unsigned *)vr, *(const unsigned *)(vr + 8));
    }
  }
}

/* Elements d, d + 1 of a 16-bit row (0 for a missing row), vector or not. */
DT_DEV unsigned ld_pair_any(const unsigned short *row, int d, int vec) {
  if (!row) return 0u;
  if (vec) return *(const unsigned *)(row + d);
  return (unsigned)row[d] | ((unsigned)row[d + 1] << 16);
}

/* Lane roles: g = lane / 4 picks query rows g and g + 8 of the warp's tile
 * (and key/channel g of a B tile), t = lane % 4 picks columns 2t, 2t + 1
 * (and 2t + 8, 2t + 9 of A). A warp past the last tile still takes part in
 * the block's shared gathers, without computing. */
template <typename T, int D, typename Keys>
__global__ void __launch_bounds__(kMmaAttendThreads)
    attend_mma_kernel(View<const T> q, View<const T> k, View<const T> v, View<T> out, AttendArgs a,
                      const __grid_constant__ Keys keys, long long tiles, float scale_log2,
                      int vec) {
  typedef MmaAttendTile<D> Tile;
  const int KT = Tile::KT, W = kMmaAttendWarps;
  __shared__ __align__(16) MmaAttendSmem<D> sm;
  const long long bh = a.bh0 + blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
  const long long tile = blockIdx.x * (long long)W + warp;
  const bool active = tile < tiles; /* uniform over the warp */
  const long long my_tile = active ? tile : tiles - 1;
  const long long grp = a.group0 + my_tile / a.tiles_per_group;
  const long long sub = my_tile % a.tiles_per_group;
  long long q_begin, q_end;
  attend_tile_rows(a, grp, sub, 16, &q_begin, &q_end);
  const long long M = keys.count();
  const long long shared_from = keys.shared_from(a.tiles_per_group % W == 0);

  const long long r0 = q_begin + g, r1 = r0 + 8;
  const unsigned short *q0 = r0 < q_end ? (const unsigned short *)q.row(bh, r0) : nullptr;
  const unsigned short *q1 = r1 < q_end ? (const unsigned short *)q.row(bh, r1) : nullptr;
  unsigned qa[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++) {
    qa[ks][0] = ld_pair_any(q0, ks * 16 + 2 * t, vec);
    qa[ks][1] = ld_pair_any(q1, ks * 16 + 2 * t, vec);
    qa[ks][2] = ld_pair_any(q0, ks * 16 + 2 * t + 8, vec);
    qa[ks][3] = ld_pair_any(q1, ks * 16 + 2 * t + 8, vec);
  }
  MmaAttendState<D> st;
#pragma unroll
  for (int nd = 0; nd < D / 8; nd++) st.o[nd][0] = st.o[nd][1] = st.o[nd][2] = st.o[nd][3] = 0.0f;
  st.m[0] = st.m[1] = -INFINITY;
  st.l[0] = st.l[1] = 0.0f;

  /* This warp's own keys. */
  if (active) {
    for (long long kt0 = 0; kt0 < shared_from; kt0 += KT) {
      if (lane < KT)
        mma_resolve_key<T, D>(sm, keys, k, v, bh, grp, kt0 + lane, shared_from, warp, lane);
      __syncwarp();
      mma_gather<T, D>(sm, warp, 1, lane, 32, vec);
      __syncwarp();
      mma_attend_tile<T, D>(sm, warp, qa, st, scale_log2, g, t);
      __syncwarp(); /* before the next tile overwrites the buffer */
    }
  }
  /* The keys every warp of the block shares (shared_from, M uniform). */
  for (long long kt0 = shared_from; kt0 < M; kt0 += W * KT) {
    __syncthreads(); /* the previous round's buffers are no longer read */
    if (tid < W * KT)
      mma_resolve_key<T, D>(sm, keys, k, v, bh, grp, kt0 + tid, M, tid / KT, tid % KT);
    __syncthreads();
    mma_gather<T, D>(sm, 0, W, tid, kMmaAttendThreads, vec);
    __syncthreads();
    if (active) {
      const int nbuf = (int)((M - kt0 + KT - 1) / KT);
      for (int w = 0; w < W && w < nbuf; w++)
        mma_attend_tile<T, D>(sm, w, qa, st, scale_log2, g, t);
    }
  }

  if (!active) return;
#pragma unroll
  for (int h = 0; h < 2; h++) {
    st.l[h] += shfl_xor(st.l[h], 1);
    st.l[h] += shfl_xor(st.l[h], 2);
    const long long r = h ? r1 : r0;
    if (r >= q_end) continue;
    const float inv = 1.0f / st.l[h]; /* no key: 0 · inf = NaN, as attend_kernel's 0 / 0 */
    unsigned short *orow = (unsigned short *)out.row(bh, r - a.q_lo);
#pragma unroll
    for (int nd = 0; nd < D / 8; nd++) {
      const unsigned pr = pack2<T>(st.o[nd][2 * h] * inv, st.o[nd][2 * h + 1] * inv);
      if (vec) {
        *(unsigned *)(orow + nd * 8 + 2 * t) = pr;
      } else {
        orow[nd * 8 + 2 * t] = (unsigned short)(pr & 0xffffu);
        orow[nd * 8 + 2 * t + 1] = (unsigned short)(pr >> 16);
      }
    }
    if (a.lse && t == 0)
      a.lse[bh * (a.q_hi - a.q_lo) + r - a.q_lo] =
          (st.m[h] + log2f(st.l[h])) * 0.69314718055994531f;
  }
}

template <typename T, int D, typename Keys>
static int attend_mma_launch(const ditattn_tensor *q, const ditattn_tensor *k,
                             const ditattn_tensor *v, const ditattn_tensor *out, AttendArgs a,
                             long long groups, Keys keys, gpuStream_t s) {
  const long long BH = attend_bh_end(q, a), tiles = groups * a.tiles_per_group;
  const int vec =
      rows_aligned16(q) && rows_aligned16(k) && rows_aligned16(v) && rows_aligned16(out);
  const float scale_log2 = a.scale * 1.4426950408889634f;
  for (long long bh0 = a.bh_lo; bh0 < BH; bh0 += kMaxGridY) {
    long long nbh = BH - bh0 < kMaxGridY ? BH - bh0 : kMaxGridY;
    a.bh0 = bh0;
    dim3 grid((unsigned)((tiles + kMmaAttendWarps - 1) / kMmaAttendWarps), (unsigned)nbh);
    attend_mma_kernel<T, D, Keys><<<grid, kMmaAttendThreads, 0, s>>>(
        make_view<const T>(q), make_view<const T>(k), make_view<const T>(v), make_view<T>(out), a,
        keys, tiles, scale_log2, vec);
    int st = launch_status();
    if (st) return st;
  }
  return 0;
}

/* The tensor-core path applies: 16-bit inputs, D in {64, 128}, and the
 * environment does not ask for the fp32 kernel (DITATTN_GPU_ATTEND=simt,
 * read on every call so that one process can time and check both). */
static inline int attend_mma_applies(ditattn_dtype dtype, int D) {
  if (dtype == DITATTN_F32 || (D != 64 && D != 128)) return 0;
  const char *force = getenv("DITATTN_GPU_ATTEND");
  return !(force && strcmp(force, "simt") == 0);
}
#endif /* DT_GPU_HOST_HAS_MMA */

/* attend_dispatch, with the tensor-core kernel where it applies. Needs a
 * Keys policy with shared_from (see the top of this file). */
template <typename Keys>
static int attend_dispatch_mma_or_simt(const ditattn_tensor *q, const ditattn_tensor *k,
                                       const ditattn_tensor *v, const ditattn_tensor *out,
                                       AttendArgs a, long long groups, Keys keys, gpuStream_t s) {
#if defined(DT_GPU_HOST_HAS_MMA)
  if (attend_mma_applies(q->dtype, a.D)) {
    if (q->dtype == DITATTN_BF16)
      return a.D == 64 ? attend_mma_launch<bf16_t, 64>(q, k, v, out, a, groups, keys, s)
                       : attend_mma_launch<bf16_t, 128>(q, k, v, out, a, groups, keys, s);
    return a.D == 64 ? attend_mma_launch<f16_t, 64>(q, k, v, out, a, groups, keys, s)
                     : attend_mma_launch<f16_t, 128>(q, k, v, out, a, groups, keys, s);
  }
#endif
  return attend_dispatch(q, k, v, out, a, groups, keys, s);
}

} // namespace DT_GPU_NS

#endif /* DITATTN_GPU_ATTEND_MMA_CUH */
