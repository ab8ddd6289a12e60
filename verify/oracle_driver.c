/* Drives one library call for the NumPy oracle (verify/oracle/compare.py):
 *
 *   ditattn_oracle_driver OP OUTDIR [key=value ...]
 *
 * draws seeded random inputs in a strided layout (pad, bnhd), runs OP on a
 * backend (backend=ref by default), and writes every input and output as a
 * contiguous .npy file into OUTDIR, so that the oracle recomputes the result
 * from the very same inputs. Exit 0 on success; 3 when the library returns a
 * status (its name and message are printed, "UNSUPPORTED" among them); 2 on
 * a usage or I/O error. OPs: dense, rope, order, pool, merge, llsa, ropeslr. */
#include "verify_args.h"
#include "verify_tensor.h"

#include "ditattn/ditattn.h"
#include "tools/npy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_outdir;
static ditattn_context *g_ctx;

static int save_f32(const char *name, int ndim, const int64_t *shape, const float *data) {
  char path[4096], err[512];
  snprintf(path, sizeof path, "%s/%s.npy", g_outdir, name);
  if (dt_npy_write_f32(path, ndim, shape, data, err, sizeof err) != DITATTN_OK) {
    fprintf(stderr, "oracle_driver: %s\n", err);
    return 2;
  }
  return 0;
}

static int save_i32(const char *name, int ndim, const int64_t *shape, const int32_t *data) {
  char path[4096], err[512];
  snprintf(path, sizeof path, "%s/%s.npy", g_outdir, name);
  if (dt_npy_write_i32(path, ndim, shape, data, err, sizeof err) != DITATTN_OK) {
    fprintf(stderr, "oracle_driver: %s\n", err);
    return 2;
  }
  return 0;
}

/* Contiguous copy of a strided view, saved as (B, H, N, D). */
static int save_tensor(const char *name, const vt_tensor *t) {
  float *flat = vt_contiguous(t);
  if (!flat) return 2;
  int rc = save_f32(name, 4, t->t.shape, flat);
  free(flat);
  return rc;
}

static int report(ditattn_status st, const char *what) {
  if (st == DITATTN_OK) return 0;
  fprintf(stderr, "oracle_driver: %s: %s%s: %s\n", what, ditattn_strerror(st),
          st == DITATTN_ERR_UNSUPPORTED ? " (UNSUPPORTED)" : "", ditattn_last_error(g_ctx));
  return 3;
}

#define CHECK(expr)                                                                                \
  do {                                                                                             \
    int rc_ = (expr);                                                                              \
    if (rc_) {                                                                                     \
      rc = rc_;                                                                                    \
      goto done;                                                                                   \
    }                                                                                              \
  } while (0)

/* Shared layout arguments: pad (extra floats per token row) and bnhd.
 * quant=1 draws from {-1, -0.5, 0, 0.5, 1}·amp instead: pooled scores then
 * tie exactly, which exercises the selection's tie rule. */
static vt_tensor new_input(const va_args *a, int64_t B, int64_t H, int64_t N, int64_t D) {
  vt_tensor t = vt_new(B, H, N, D, va_int(a, "pad", 0), (int)va_int(a, "bnhd", 0));
  vt_fill_uniform(&t, va_num(a, "amp", 1.0));
  if (va_int(a, "quant", 0) && t.buf)
    for (size_t i = 0; i < t.count; i++)
      if (!isnan(t.buf[i]))
        t.buf[i] = (float)(0.5 * (double)vt_rand_int(-2, 2) * va_num(a, "amp", 1.0));
  return t;
}

static vt_tensor new_output(const va_args *a, int64_t B, int64_t H, int64_t N, int64_t D) {
  return vt_new(B, H, N, D, va_int(a, "pad", 0), (int)va_int(a, "bnhd", 0));
}

static int run_dense(const va_args *a) {
  int64_t B = va_int(a, "B", 1), H = va_int(a, "H", 1), Nq = va_int(a, "N", 8),
          Nk = va_int(a, "Nk", Nq), D = va_int(a, "D", 4);
  int rc = 0;
  vt_tensor q = new_input(a, B, H, Nq, D), k = new_input(a, B, H, Nk, D),
            v = new_input(a, B, H, Nk, D), out = new_output(a, B, H, Nq, D);
  float *lse = vt_floats((size_t)(B * H * Nq));
  CHECK(!q.buf || !k.buf || !v.buf || !out.buf || !lse ? 2 : 0);
  CHECK(report(
      ditattn_dense_forward(g_ctx, &q.t, &k.t, &v.t, (float)va_num(a, "scale", 0), &out.t, lse),
      "dense_forward"));
  int64_t lse_shape[3] = {B, H, Nq};
  CHECK(save_tensor("q", &q) || save_tensor("k", &k) || save_tensor("v", &v) ||
        save_tensor("out", &out) || save_f32("lse", 3, lse_shape, lse));
done:
  vt_free(&q), vt_free(&k), vt_free(&v), vt_free(&out), free(lse);
  return rc;
}

/* Positions: raster (pos=NULL), or random triples inside the grid (pos=1). */
static int run_rope(const va_args *a) {
  ditattn_rope_params p = {{va_int(a, "T", 2), va_int(a, "Hg", 2), va_int(a, "W", 2)},
                           {va_int(a, "dt", 2), va_int(a, "dh", 0), va_int(a, "dw", 0)},
                           va_num(a, "theta", 10000.0),
                           (ditattn_rope_pairing)va_int(a, "pairing", 0)};
  const int random_pos = (int)va_int(a, "randpos", 0);
  const int64_t B = va_int(a, "B", 1), H = va_int(a, "H", 1), D = va_int(a, "D", 4);
  const int64_t N = random_pos ? va_int(a, "N", 8) : p.grid[0] * p.grid[1] * p.grid[2];
  const ditattn_direction dir = va_int(a, "inverse", 0) ? DITATTN_INVERSE : DITATTN_FORWARD;
  const int in_place = (int)va_int(a, "inplace", 0);
  int rc = 0;
  vt_tensor x = new_input(a, B, H, N, D), y = new_output(a, B, H, N, D);
  int32_t *pos = malloc((size_t)N * 3 * sizeof *pos);
  CHECK(!x.buf || !y.buf || !pos ? 2 : 0);
  if (random_pos) {
    for (int64_t i = 0; i < N; i++)
      for (int ax = 0; ax < 3; ax++) pos[3 * i + ax] = (int32_t)vt_rand_int(0, p.grid[ax] - 1);
  } else {
    for (int64_t s = 0; s < N; s++) {
      pos[3 * s] = (int32_t)(s / (p.grid[1] * p.grid[2]));
      pos[3 * s + 1] = (int32_t)(s / p.grid[2] % p.grid[1]);
      pos[3 * s + 2] = (int32_t)(s % p.grid[2]);
    }
  }
  int64_t pos_shape[2] = {N, 3};
  CHECK(save_tensor("x", &x) || save_i32("pos", 2, pos_shape, pos));
  ditattn_tensor *dst = in_place ? &x.t : &y.t;
  CHECK(report(ditattn_rope_apply(g_ctx, &p, random_pos ? pos : NULL, dir, &x.t, dst), "rope"));
  CHECK(save_tensor("y", in_place ? &x : &y));
done:
  vt_free(&x), vt_free(&y), free(pos);
  return rc;
}

static int run_order(const va_args *a) {
  ditattn_order_params p = {(ditattn_order_kind)va_int(a, "kind", 1),
                            {va_int(a, "T", 2), va_int(a, "Hg", 2), va_int(a, "W", 2)},
                            {va_int(a, "tt", 1), va_int(a, "th", 1), va_int(a, "tw", 1)}};
  const int64_t B = va_int(a, "B", 1), H = va_int(a, "H", 1), D = va_int(a, "D", 3);
  const int64_t N = p.grid[0] * p.grid[1] * p.grid[2];
  int rc = 0;
  vt_tensor x = new_input(a, B, H, N, D), fwd = new_output(a, B, H, N, D),
            inv = new_output(a, B, H, N, D);
  int64_t *perm = malloc((size_t)N * sizeof *perm);
  int32_t *perm32 = malloc((size_t)N * sizeof *perm32), *pos = malloc((size_t)N * 12);
  CHECK(!x.buf || !fwd.buf || !inv.buf || !perm || !perm32 || !pos ? 2 : 0);
  CHECK(report(ditattn_order_permutation(&p, perm), "order_permutation"));
  CHECK(report(ditattn_order_positions(&p, pos), "order_positions"));
  CHECK(report(ditattn_order_apply(g_ctx, &p, DITATTN_FORWARD, &x.t, &fwd.t), "order fwd"));
  CHECK(report(ditattn_order_apply(g_ctx, &p, DITATTN_INVERSE, &x.t, &inv.t), "order inv"));
  for (int64_t s = 0; s < N; s++) perm32[s] = (int32_t)perm[s];
  int64_t n_shape[1] = {N}, pos_shape[2] = {N, 3};
  CHECK(save_tensor("x", &x) || save_tensor("fwd", &fwd) || save_tensor("inv", &inv) ||
        save_i32("perm", 1, n_shape, perm32) || save_i32("pos", 2, pos_shape, pos));
done:
  vt_free(&x), vt_free(&fwd), vt_free(&inv), free(perm), free(perm32), free(pos);
  return rc;
}

static int run_pool(const va_args *a) {
  const int64_t B = va_int(a, "B", 1), H = va_int(a, "H", 1), N = va_int(a, "N", 8),
                D = va_int(a, "D", 3), block = va_int(a, "block", 2);
  const int64_t n = (N + block - 1) / block;
  int rc = 0;
  vt_tensor x = new_input(a, B, H, N, D), y = new_output(a, B, H, n, D);
  CHECK(!x.buf || !y.buf ? 2 : 0);
  CHECK(report(ditattn_pool_mean(g_ctx, &x.t, block, &y.t), "pool_mean"));
  CHECK(save_tensor("x", &x) || save_tensor("y", &y));
done:
  vt_free(&x), vt_free(&y);
  return rc;
}

/* Accumulator lse entries are -inf with probability `empty` (empty partials). */
static int run_merge(const va_args *a) {
  const int64_t B = va_int(a, "B", 1), H = va_int(a, "H", 1), N = va_int(a, "N", 8),
                D = va_int(a, "D", 3);
  const size_t n = (size_t)(B * H * N);
  int rc = 0;
  vt_tensor acc = new_input(a, B, H, N, D), part = new_input(a, B, H, N, D);
  float *lse_acc = vt_floats(n), *lse_part = vt_floats(n);
  CHECK(!acc.buf || !part.buf || !lse_acc || !lse_part ? 2 : 0);
  for (size_t i = 0; i < n; i++) {
    lse_acc[i] =
        vt_uniform(0.0, 1.0) < va_num(a, "empty", 0.2) ? -INFINITY : (float)vt_uniform(-3, 3);
    lse_part[i] = (float)vt_uniform(-3, 3);
  }
  int64_t lse_shape[3] = {B, H, N};
  CHECK(save_tensor("out_acc", &acc) || save_tensor("out_part", &part) ||
        save_f32("lse_acc", 3, lse_shape, lse_acc) || save_f32("lse_part", 3, lse_shape, lse_part));
  CHECK(report(ditattn_lse_merge(g_ctx, &acc.t, lse_acc, &part.t, lse_part), "lse_merge"));
  CHECK(save_tensor("out", &acc) || save_f32("lse", 3, lse_shape, lse_acc));
done:
  vt_free(&acc), vt_free(&part), free(lse_acc), free(lse_part);
  return rc;
}

static int run_llsa(const va_args *a) {
  const int64_t B = va_int(a, "B", 1), H = va_int(a, "H", 1), N = va_int(a, "N", 8),
                D = va_int(a, "D", 3);
  ditattn_llsa_params p = ditattn_llsa_params_default();
  p.block = va_int(a, "b", 2);
  p.levels = (int)va_int_list(a, "K", p.topk, DITATTN_LLSA_MAX_LEVELS);
  p.scale = (float)va_num(a, "scale", 0);
  int rc = 0;
  vt_tensor q = new_input(a, B, H, N, D), k = new_input(a, B, H, N, D),
            v = new_input(a, B, H, N, D), out = new_output(a, B, H, N, D);
  float *lse = vt_floats((size_t)(B * H * N));
  ditattn_llsa_selection sel = {{NULL}};
  CHECK(!q.buf || !k.buf || !v.buf || !out.buf || !lse || p.levels < 1 ? 2 : 0);
  for (int l = 0; l < p.levels; l++) {
    int64_t count = ditattn_llsa_selection_count(&p, B, H, N, l + 1);
    CHECK(count < 1 ? 2 : 0);
    sel.sel[l] = malloc((size_t)count * sizeof(int32_t));
    CHECK(!sel.sel[l] ? 2 : 0);
    memset(sel.sel[l], 0x7f, (size_t)count * sizeof(int32_t)); /* poison */
  }
  CHECK(
      report(ditattn_llsa_forward(g_ctx, &p, &q.t, &k.t, &v.t, &out.t, lse, &sel), "llsa_forward"));
  int64_t lse_shape[3] = {B, H, N};
  CHECK(save_tensor("q", &q) || save_tensor("k", &k) || save_tensor("v", &v) ||
        save_tensor("out", &out) || save_f32("lse", 3, lse_shape, lse));
  for (int l = 0; l < p.levels; l++) {
    char name[16];
    int64_t bl = 1;
    for (int i = 0; i <= l && bl < N; i++) bl *= p.block;
    int64_t shape[4] = {B, H, (N + bl - 1) / bl, p.topk[l]};
    snprintf(name, sizeof name, "sel%d", l + 1);
    CHECK(save_i32(name, 4, shape, sel.sel[l]));
  }
done:
  vt_free(&q), vt_free(&k), vt_free(&v), vt_free(&out), free(lse);
  for (int l = 0; l < DITATTN_LLSA_MAX_LEVELS; l++) free(sel.sel[l]);
  return rc;
}

/* Weights are (1, H, rows, cols) contiguous. */
static vt_tensor new_weight(const va_args *a, int64_t H, int64_t rows, int64_t cols) {
  vt_tensor t = vt_new(1, H, rows, cols, 0, 0);
  vt_fill_uniform(&t, va_num(a, "wamp", 1.0));
  return t;
}

#ifdef DT_VERIFY_HAVE_ROPESLR
static int run_ropeslr(const va_args *a) {
  ditattn_ropeslr_params p = ditattn_ropeslr_params_default();
  p.grid[0] = va_int(a, "T", 2), p.grid[1] = va_int(a, "Hg", 2), p.grid[2] = va_int(a, "W", 2);
  p.block = va_int(a, "b", 2);
  p.policy = (ditattn_slr_policy)va_int(a, "policy", 1);
  p.rho = va_num(a, "rho", 0.1);
  p.topk = va_int(a, "topk", 1);
  p.sqrt_c = va_num(a, "sqrt_c", 1.0);
  p.force_own_block = (int)va_int(a, "own", 1);
  p.rank = va_int(a, "r", 3);
  p.feature = (ditattn_slr_feature)va_int(a, "feature", 0);
  p.scale = (float)va_num(a, "scale", 0);
  const int random_pos = (int)va_int(a, "randpos", 0);
  const int64_t B = va_int(a, "B", 1), H = va_int(a, "H", 1), D = va_int(a, "D", 3);
  const int64_t N = random_pos ? va_int(a, "N", 8) : p.grid[0] * p.grid[1] * p.grid[2];
  const int64_t r = p.rank, K = ditattn_ropeslr_topk(&p, N);
  const int64_t n = (N + p.block - 1) / p.block;
  int rc = 0;
  vt_tensor q = new_input(a, B, H, N, D), k = new_input(a, B, H, N, D),
            v = new_input(a, B, H, N, D), out = new_output(a, B, H, N, D);
  vt_tensor A = new_weight(a, H, D, r), Bk = new_weight(a, H, D, r),
            Et = new_weight(a, H, p.grid[0], r), Ey = new_weight(a, H, p.grid[1], r),
            Ex = new_weight(a, H, p.grid[2], r), W = new_weight(a, H, D, D);
  float *lse = vt_floats((size_t)(B * H * N));
  int32_t *pos = malloc((size_t)N * 3 * sizeof *pos);
  int32_t *sel = malloc((size_t)(B * H * n * (K > 0 ? K : 1)) * sizeof *sel);
  CHECK(!q.buf || !k.buf || !v.buf || !out.buf || !A.buf || !Bk.buf || !Et.buf || !Ey.buf ||
                !Ex.buf || !W.buf || !lse || !pos || !sel || K < 1
            ? 2
            : 0);
  for (int64_t i = 0; i < N; i++)
    for (int ax = 0; ax < 3; ax++) {
      int64_t rest = ax == 0 ? i / (p.grid[1] * p.grid[2]) : ax == 1 ? i / p.grid[2] : i;
      pos[3 * i + ax] = (int32_t)(random_pos ? vt_rand_int(0, p.grid[ax] - 1) : rest % p.grid[ax]);
    }
  ditattn_ropeslr_weights w = {A.t, Bk.t, Et.t, Ey.t, Ex.t, W.t};
  CHECK(report(ditattn_ropeslr_forward(g_ctx, &p, &w, random_pos ? pos : NULL, &q.t, &k.t, &v.t,
                                       &out.t, lse, sel),
               "ropeslr_forward"));
  int64_t lse_shape[3] = {B, H, N}, pos_shape[2] = {N, 3}, sel_shape[4] = {B, H, n, K};
  CHECK(save_tensor("q", &q) || save_tensor("k", &k) || save_tensor("v", &v) ||
        save_tensor("A", &A) || save_tensor("Bk", &Bk) || save_tensor("Et", &Et) ||
        save_tensor("Ey", &Ey) || save_tensor("Ex", &Ex) || save_tensor("W", &W) ||
        save_tensor("out", &out) || save_f32("lse", 3, lse_shape, lse) ||
        save_i32("pos", 2, pos_shape, pos) || save_i32("sel", 4, sel_shape, sel));
done:
  vt_free(&q), vt_free(&k), vt_free(&v), vt_free(&out), vt_free(&A), vt_free(&Bk);
  vt_free(&Et), vt_free(&Ey), vt_free(&Ex), vt_free(&W), free(lse), free(pos), free(sel);
  return rc;
}
#else
static int run_ropeslr(const va_args *a) {
  (void)a;
  fprintf(stderr, "oracle_driver: ropeslr: not built into this library (UNSUPPORTED)\n");
  return 3;
}
#endif

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s OP OUTDIR [key=value ...]\n", argv[0]);
    return 2;
  }
  va_args args;
  if (va_parse(&args, argc - 3, argv + 3) != 0) return 2;
  g_outdir = argv[2];
  vt_srand((uint64_t)va_int(&args, "seed", 1));
  ditattn_backend backend;
  if (ditattn_backend_parse(va_str(&args, "backend", "ref"), &backend) != DITATTN_OK) {
    fprintf(stderr, "oracle_driver: unknown backend %s\n", va_str(&args, "backend", "ref"));
    return 2;
  }
  ditattn_status st = ditattn_context_create(backend, &g_ctx);
  if (st != DITATTN_OK) {
    fprintf(stderr, "oracle_driver: backend %s: %s\n", ditattn_backend_name(backend),
            ditattn_strerror(st));
    return 3;
  }
  static const struct {
    const char *name;
    int (*run)(const va_args *);
  } ops[] = {{"dense", run_dense}, {"rope", run_rope}, {"order", run_order},    {"pool", run_pool},
             {"merge", run_merge}, {"llsa", run_llsa}, {"ropeslr", run_ropeslr}};
  int rc = 2;
  size_t i = 0;
  for (; i < sizeof ops / sizeof ops[0]; i++)
    if (strcmp(argv[1], ops[i].name) == 0) break;
  if (i == sizeof ops / sizeof ops[0])
    fprintf(stderr, "oracle_driver: unknown op %s\n", argv[1]);
  else
    rc = ops[i].run(&args);
  const char *unused = va_unused(&args);
  if (unused && rc == 0) {
    fprintf(stderr, "oracle_driver: unknown argument %s\n", unused);
    rc = 2;
  }
  ditattn_context_destroy(g_ctx);
  return rc;
}
