/* RoPeSLR forward on the CPU (spec ropeslr.md §2-4), one head at a time,
 * one query block per work item: the sparse branch through the tile kernel
 * over the selected key blocks (read straight from the tensors), the
 * low-rank branch from the block factors in O(N·r·D + n·K·r·D), then
 * o = o_s + Wᵀ o_lr as one GEMM per tile. */
#include "cpu_ropeslr_head.h"

#include <string.h>

/* One thread's buffers; T = query tile rows. */
typedef struct fwd_bufs {
  double *Sbg, *zbg, *den;
  float *Sbg_f, *qs, *acc, *mx, *sum, *os, *olr, *lse, *scratch, *kbuf, *vbuf;
  unsigned char *in_sel;
} fwd_bufs;

static size_t fwd_layout(char *base, const dt_slr_shape *s, int64_t T, fwd_bufs *t) {
  const size_t D = (size_t)s->D, r = (size_t)s->r, TD = (size_t)T * D;
  dt_cpu_slr_arena a = {base, 0};
  t->Sbg = dt_cpu_slr_take(&a, r * D, sizeof(double));
  t->zbg = dt_cpu_slr_take(&a, r, sizeof(double));
  t->den = dt_cpu_slr_take(&a, (size_t)T, sizeof(double));
  t->Sbg_f = dt_cpu_slr_take(&a, r * D, sizeof(float));
  t->qs = dt_cpu_slr_take(&a, TD, sizeof(float));
  t->acc = dt_cpu_slr_take(&a, TD, sizeof(float));
  t->os = dt_cpu_slr_take(&a, TD, sizeof(float));
  t->olr = dt_cpu_slr_take(&a, TD, sizeof(float));
  t->mx = dt_cpu_slr_take(&a, (size_t)T, sizeof(float));
  t->sum = dt_cpu_slr_take(&a, (size_t)T, sizeof(float));
  t->lse = dt_cpu_slr_take(&a, (size_t)T, sizeof(float));
  t->scratch = dt_cpu_slr_take(&a, DT_CPU_ATTEND_SCRATCH(T, D), sizeof(float));
  t->kbuf = dt_cpu_slr_take(&a, (DT_CPU_KEY_CHUNK + 16) * D, sizeof(float));
  t->vbuf = dt_cpu_slr_take(&a, DT_CPU_KEY_CHUNK * D, sizeof(float));
  t->in_sel = dt_cpu_slr_take(&a, (size_t)s->n, 1);
  return a.used;
}

ditattn_status dt_cpu_slr_forward(ditattn_context *ctx, const dt_ropeslr_fwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1], N = p->q->shape[2], D = p->q->shape[3];
  const int64_t block = p->params.block, n = N / block + (N % block != 0);
  const dt_slr_shape s = {N, D, p->params.rank, block, n, p->topk};
  const int dt_nt = dt_cpu_num_threads(ctx);
  const int64_t T = block < DT_CPU_QUERY_TILE ? block : DT_CPU_QUERY_TILE;
  const dt_cpu_slr_problem pr = {&p->params, p->weights, p->pos, p->q, p->k, p->v};
  fwd_bufs probe;
  const size_t per_thread = fwd_layout(NULL, &s, T, &probe);
  size_t arena_bytes;
  if (!dt_mul_size(per_thread, (size_t)dt_nt, &arena_bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "ropeslr forward (cpu): thread buffers overflow");
  dt_cpu_slr_head hd;
  TRY_CPU(dt_cpu_slr_head_alloc(ctx, &s, dt_nt, &hd));
  char *arena = dt_malloc(arena_bytes);
  if (!arena) {
    dt_cpu_slr_head_free(&hd);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "ropeslr forward (cpu): %d thread buffers",
                   dt_nt);
  }
  const ditattn_tensor *W = &p->weights->W;
  const int blas = dt_cpu_blas_enter();
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++) {
      const int64_t head = b * H + h;
      dt_cpu_slr_head_prepare(&hd, &pr, b, h);
      DT_OMP_PARALLEL_FOR
      for (int64_t G = 0; G < n; G++) {
        fwd_bufs t;
        fwd_layout(arena + (size_t)dt_cpu_thread_id() * per_thread, &s, T, &t);
        const dt_cpu_softmax_state sm = {t.mx, t.sum, t.acc};
        const int64_t kept = dt_cpu_slr_background(&hd, G, t.in_sel, t.Sbg, t.Sbg_f, t.zbg);
        int64_t first, count;
        dt_cpu_slr_block_rows(&s, G, &first, &count);
        for (int64_t t0 = 0; t0 < count; t0 += T) {
          const int64_t rows = count - t0 < T ? count - t0 : T, q0 = first + t0;
          dt_cpu_load_rows(p->q, b, h, q0, rows, p->params.scale, t.qs);
          dt_cpu_slr_sparse_rows(&hd, &pr, G, rows, t.qs, &sm, t.scratch, t.kbuf, t.vbuf, t.os,
                                 t.lse);
          dt_cpu_slr_lowrank_rows(&hd, kept, t.Sbg_f, t.zbg, q0, rows, t.olr, t.den);
          /* o = o_s + o_lr W (o[e] += Σ_d W[d][e] o_lr[d]) */
          dt_cpu_gemm(0, 0, rows, D, D, 1.0f, t.olr, D, dt_f32_at(W, 0, h, 0, 0), W->stride[2],
                      1.0f, t.os, D);
          dt_cpu_store_rows(p->out, b, h, q0, rows, t.os);
          if (p->lse_sparse)
            memcpy(p->lse_sparse + head * N + q0, t.lse, (size_t)rows * sizeof(float));
        }
      }
      if (p->sel) memcpy(p->sel + head * n * s.K, hd.sel, (size_t)(n * s.K) * sizeof(int32_t));
    }
  dt_cpu_blas_leave(blas);
  dt_free(arena);
  dt_cpu_slr_head_free(&hd);
  return DITATTN_OK;
}
