/* The one hot kernel shape: "attend this query tile to this key tile with
 * these ln-weights, update the online-softmax state" (forward), and its
 * backward counterpart. Dense, LLSA and the rest are loops around these. */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

void dt_cpu_state_reset(const dt_cpu_softmax_state *st, int64_t rows, int64_t D) {
  for (int64_t r = 0; r < rows; r++) {
    st->row_max[r] = -INFINITY;
    st->row_sum[r] = 0.0f;
  }
  memset(st->acc, 0, (size_t)rows * (size_t)D * sizeof(float));
}

/* Online-softmax update from the raw scores in scratch (rows × n), then acc += P·V. */
static void softmax_update_pv(int64_t rows, int64_t n, int64_t D, const float *v, int64_t v_ld,
                              const float *lnw, float *scratch, const dt_cpu_softmax_state *st) {
  for (int64_t r = 0; r < rows; r++) {
    float *s = scratch + r * n;
    const float tile_max = dt_cpu_max_plus(s, lnw, n);
    const float old_max = st->row_max[r];
    const float new_max = tile_max > old_max ? tile_max : old_max;
    const float corr = expf(old_max - new_max); /* 0 for the first tile (old = -inf) */
    const float sum = dt_cpu_exp_rows(s, lnw, n, new_max);
    st->row_sum[r] = st->row_sum[r] * corr + sum;
    st->row_max[r] = new_max;
    if (corr != 1.0f) dt_cpu_scale(st->acc + r * D, D, corr);
  }
  dt_cpu_acc_pv(0, rows, n, D, scratch, n, v, v_ld, st->acc, D);
}

void dt_cpu_attend_tile(int64_t rows, int64_t n, int64_t D, const float *q, const float *k,
                        int64_t k_ld, const float *v, int64_t v_ld, const float *lnw,
                        float *scratch, const dt_cpu_softmax_state *st) {
  if (rows <= 0 || n <= 0) return;
  if (dt_cpu_use_own_kernel) {
    float *kp = scratch + (size_t)rows * (size_t)n;
    dt_cpu_pack_keys(n, D, k, k_ld, kp);
    dt_cpu_qk_packed(rows, n, D, q, D, kp, scratch, n);
  } else {
    dt_cpu_gemm(0, 1, rows, n, D, 1.0f, q, D, k, k_ld, 0.0f, scratch, n);
  }
  softmax_update_pv(rows, n, D, v, v_ld, lnw, scratch, st);
}

void dt_cpu_attend_tile_packed(int64_t rows, int64_t n, int64_t D, const float *q, const float *kp,
                               const float *v, int64_t v_ld, const float *lnw, float *scratch,
                               const dt_cpu_softmax_state *st) {
  if (rows <= 0 || n <= 0) return;
  dt_cpu_qk_packed(rows, n, D, q, D, kp, scratch, n);
  softmax_update_pv(rows, n, D, v, v_ld, lnw, scratch, st);
}

void dt_cpu_acc_pv(int trans_p, int64_t m, int64_t n, int64_t D, const float *pm, int64_t ldp,
                   const float *v, int64_t ldv, float *o, int64_t ldo) {
  if (m <= 0 || n <= 0) return;
  if (dt_cpu_use_own_kernel && D % 64 == 0)
    dt_cpu_pv_own(m, n, D, pm, trans_p ? 1 : ldp, trans_p ? ldp : 1, v, ldv, o, ldo);
  else
    dt_cpu_gemm(trans_p, 0, m, D, n, 1.0f, pm, ldp, v, ldv, 1.0f, o, ldo);
}

void dt_cpu_state_finish(const dt_cpu_softmax_state *st, int64_t rows, int64_t D, float *out,
                         int64_t out_ld, float *lse) {
  for (int64_t r = 0; r < rows; r++) {
    const float inv = 1.0f / st->row_sum[r];
    const float *a = st->acc + r * D;
    float *o = out + r * out_ld;
    for (int64_t d = 0; d < D; d++) o[d] = a[d] * inv;
    if (lse) lse[r] = st->row_max[r] + logf(st->row_sum[r]);
  }
}

void dt_cpu_backward_tile(int64_t rows, int64_t n, int64_t D, float scale, const float *q,
                          const float *dout, const float *lse, const float *delta, const float *k,
                          int64_t k_ld, const float *v, int64_t v_ld, const float *lnw, float *p,
                          float *ds, float *kpack) {
  if (rows <= 0 || n <= 0) return;
  float c = 1.0f; /* multiplies the raw scores */
  if (dt_cpu_use_own_kernel) {
    dt_cpu_pack_keys(n, D, k, k_ld, kpack);
    dt_cpu_qk_packed(rows, n, D, q, D, kpack, p, n);
    dt_cpu_pack_keys(n, D, v, v_ld, kpack);
    dt_cpu_qk_packed(rows, n, D, dout, D, kpack, ds, n);
    c = scale;
  } else {
    dt_cpu_gemm(0, 1, rows, n, D, scale, q, D, k, k_ld, 0.0f, p, n);
    dt_cpu_gemm(0, 1, rows, n, D, 1.0f, dout, D, v, v_ld, 0.0f, ds, n);
  }
  for (int64_t r = 0; r < rows; r++) {
    dt_cpu_exp_shift(p + r * n, p + r * n, lnw, n, lse[r], c);
    dt_cpu_ds(ds + r * n, p + r * n, n, delta[r], scale);
  }
}

void dt_cpu_load_rows(const ditattn_tensor *t, int64_t b, int64_t h, int64_t n0, int64_t rows,
                      float mul, float *dst) {
  const int64_t D = t->shape[3];
  for (int64_t r = 0; r < rows; r++) {
    const float *src = dt_f32_at(t, b, h, n0 + r, 0);
    float *d = dst + r * D;
    if (mul == 1.0f)
      memcpy(d, src, (size_t)D * sizeof(float));
    else
      for (int64_t i = 0; i < D; i++) d[i] = src[i] * mul;
  }
}

void dt_cpu_store_rows(ditattn_tensor *t, int64_t b, int64_t h, int64_t n0, int64_t rows,
                       const float *src) {
  const int64_t D = t->shape[3];
  for (int64_t r = 0; r < rows; r++)
    memcpy(dt_f32_at(t, b, h, n0 + r, 0), src + r * D, (size_t)D * sizeof(float));
}
