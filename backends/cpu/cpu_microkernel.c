/* Own register-blocked kernels for the forward tile (S = Q·Kᵀ and
 * O += P·V), written with GCC/Clang vector extensions: one 16-float vector
 * type that the AVX-512 clone maps to one zmm register and the AVX2 /
 * baseline clones split. Chosen over OpenBLAS when faster (see
 * dt_cpu_attend_tile); the numbers are in bench/RESULTS.md. */
#include "cpu_internal.h"

#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));

#define MR 6 /* rows per register block */

/* Macros, not functions: vector-typed parameters would change the ABI. */
#define load16(p)     (*(const v16u *)(p))
#define store16(p, x) (*(v16u *)(p) = (x))

void dt_cpu_pack_keys(int64_t n, int64_t D, const float *k, int64_t k_ld, float *kp) {
  /* Panels of 16 keys: kp[p·D·16 + d·16 + j] = k[(16p + j)·k_ld + d], zero past n. */
  const int64_t panels = (n + 15) / 16;
  for (int64_t p = 0; p < panels; p++) {
    float *dst = kp + p * D * 16;
    const int64_t j1 = n - 16 * p < 16 ? n - 16 * p : 16;
    for (int64_t j = 0; j < j1; j++) {
      const float *src = k + (16 * p + j) * k_ld;
      for (int64_t d = 0; d < D; d++) dst[d * 16 + j] = src[d];
    }
    for (int64_t j = j1; j < 16; j++)
      for (int64_t d = 0; d < D; d++) dst[d * 16 + j] = 0.0f;
  }
}

void dt_cpu_pack_key_rows(int64_t n, int64_t D, const float *const *rows, float *kp) {
  const int64_t panels = (n + 15) / 16;
  for (int64_t p = 0; p < panels; p++) {
    float *dst = kp + p * D * 16;
    const int64_t j1 = n - 16 * p < 16 ? n - 16 * p : 16;
    for (int64_t j = 0; j < j1; j++) {
      const float *src = rows[16 * p + j];
      for (int64_t d = 0; d < D; d++) dst[d * 16 + j] = src[d];
    }
    for (int64_t j = j1; j < 16; j++)
      for (int64_t d = 0; d < D; d++) dst[d * 16 + j] = 0.0f;
  }
}

/* mr (≤ MR) rows × 32 keys of S from two packed panels. */
static inline __attribute__((always_inline)) void qk_block(int mr, int64_t D, const float *q,
                                                           int64_t ldq, const float *p0,
                                                           const float *p1, v16 acc[MR][2]) {
  for (int r = 0; r < mr; r++) acc[r][0] = acc[r][1] = (v16){0};
  for (int64_t d = 0; d < D; d++) {
    const v16 b0 = load16(p0 + d * 16), b1 = load16(p1 + d * 16);
    for (int r = 0; r < mr; r++) {
      const float a = q[r * ldq + d];
      acc[r][0] += a * b0;
      acc[r][1] += a * b1;
    }
  }
}

DT_CLONES void dt_cpu_qk_packed(int64_t m, int64_t n, int64_t D, const float *q, int64_t ldq,
                                const float *kp, float *s, int64_t lds) {
  const int64_t panels = (n + 15) / 16;
  for (int64_t p = 0; p < panels; p += 2) {
    const float *p0 = kp + p * D * 16;
    const float *p1 = p + 1 < panels ? p0 + D * 16 : p0; /* lone last panel: computed twice */
    const int64_t j0 = 16 * p, cols = n - j0 < 32 ? n - j0 : 32;
    for (int64_t i0 = 0; i0 < m; i0 += MR) {
      const int mr = m - i0 < MR ? (int)(m - i0) : MR;
      v16 acc[MR][2] = {{{0}}};
      switch (mr) {
      case 6: qk_block(6, D, q + i0 * ldq, ldq, p0, p1, acc); break;
      case 5: qk_block(5, D, q + i0 * ldq, ldq, p0, p1, acc); break;
      case 4: qk_block(4, D, q + i0 * ldq, ldq, p0, p1, acc); break;
      case 3: qk_block(3, D, q + i0 * ldq, ldq, p0, p1, acc); break;
      case 2: qk_block(2, D, q + i0 * ldq, ldq, p0, p1, acc); break;
      default: qk_block(1, D, q + i0 * ldq, ldq, p0, p1, acc); break;
      }
      for (int r = 0; r < mr; r++) {
        float *dst = s + (i0 + r) * lds + j0;
        if (cols == 32) {
          store16(dst, acc[r][0]);
          store16(dst + 16, acc[r][1]);
        } else {
          float tmp[32];
          store16(tmp, acc[r][0]);
          store16(tmp + 16, acc[r][1]);
          memcpy(dst, tmp, (size_t)cols * sizeof(float));
        }
      }
    }
  }
}

/* o[mr rows × 64 columns] += P[mr × n] · V[n × 64 columns], P(r, j) = pm[r·rs + j·cs]. */
static inline __attribute__((always_inline)) void pv_block(int mr, int64_t n, const float *pm,
                                                           int64_t rs, int64_t cs, const float *v,
                                                           int64_t ldv, float *o, int64_t ldo) {
  v16 acc[MR][4];
  for (int r = 0; r < mr; r++)
    for (int c = 0; c < 4; c++) acc[r][c] = load16(o + r * ldo + 16 * c);
  for (int64_t j = 0; j < n; j++) {
    const float *vj = v + j * ldv;
    const v16 b0 = load16(vj), b1 = load16(vj + 16), b2 = load16(vj + 32), b3 = load16(vj + 48);
    for (int r = 0; r < mr; r++) {
      const float a = pm[r * rs + j * cs];
      acc[r][0] += a * b0;
      acc[r][1] += a * b1;
      acc[r][2] += a * b2;
      acc[r][3] += a * b3;
    }
  }
  for (int r = 0; r < mr; r++)
    for (int c = 0; c < 4; c++) store16(o + r * ldo + 16 * c, acc[r][c]);
}

/* o[m × D] += P[m × n] · v[n × D], P(r, j) = pm[r·rs + j·cs]; D a multiple of 64. */
DT_CLONES void dt_cpu_pv_own(int64_t m, int64_t n, int64_t D, const float *pm, int64_t rs,
                             int64_t cs, const float *v, int64_t ldv, float *o, int64_t ldo) {
  for (int64_t c0 = 0; c0 < D; c0 += 64)
    for (int64_t i0 = 0; i0 < m; i0 += MR) {
      const int mr = m - i0 < MR ? (int)(m - i0) : MR;
      const float *pr = pm + i0 * rs;
      float *orow = o + i0 * ldo + c0;
      switch (mr) {
      case 6: pv_block(6, n, pr, rs, cs, v + c0, ldv, orow, ldo); break;
      case 5: pv_block(5, n, pr, rs, cs, v + c0, ldv, orow, ldo); break;
      case 4: pv_block(4, n, pr, rs, cs, v + c0, ldv, orow, ldo); break;
      case 3: pv_block(3, n, pr, rs, cs, v + c0, ldv, orow, ldo); break;
      case 2: pv_block(2, n, pr, rs, cs, v + c0, ldv, orow, ldo); break;
      default: pv_block(1, n, pr, rs, cs, v + c0, ldv, orow, ldo); break;
      }
    }
}
