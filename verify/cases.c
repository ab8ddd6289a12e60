/* One library call per case; see cases.h. */
#include "cases.h"

#include "verify_tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ lists */
int64_t vc_count(const vc_array *a) {
  int64_t c = 1;
  for (int i = 0; i < a->ndim; i++) c *= a->shape[i];
  return c;
}

const vc_array *vc_find(const vc_list *l, const char *name) {
  for (int i = 0; l && i < l->n; i++)
    if (strcmp(l->a[i].name, name) == 0) return &l->a[i];
  return NULL;
}

int vc_append(vc_list *l, const char *name, int is_int, int ndim, const int64_t *shape,
              const void *data) {
  if (l->n == VC_MAX_ARRAYS) return 1;
  vc_array *a = &l->a[l->n];
  memset(a, 0, sizeof *a);
  snprintf(a->name, sizeof a->name, "%s", name);
  a->is_int = is_int;
  a->ndim = ndim;
  memcpy(a->shape, shape, (size_t)ndim * sizeof *shape);
  size_t bytes = (size_t)vc_count(a) * 4u;
  a->data = malloc(bytes ? bytes : 1);
  if (!a->data) return 1;
  memcpy(a->data, data, bytes);
  l->n++;
  return 0;
}

void vc_list_free(vc_list *l) {
  for (int i = 0; i < l->n; i++) free(l->a[i].data);
  l->n = 0;
}

double vc_rel_err(const vc_array *got, const vc_array *want) {
  if (got->ndim != want->ndim || got->is_int != want->is_int) return INFINITY;
  for (int i = 0; i < got->ndim; i++)
    if (got->shape[i] != want->shape[i]) return INFINITY;
  const int64_t n = vc_count(want);
  if (want->is_int) return memcmp(got->data, want->data, (size_t)n * 4u) == 0 ? 0.0 : INFINITY;
  const float *g = got->data, *w = want->data;
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(w[i])) {
      if (g[i] != w[i]) return INFINITY; /* -inf lse of empty rows must stay -inf */
      continue;
    }
    if (!isfinite(g[i])) return INFINITY;
    const double d = (double)g[i] - (double)w[i];
    num += d * d;
    den += (double)w[i] * (double)w[i];
  }
  /* RMS floor 1e-2: outputs that are ~0 by cancellation (e.g. a gradient
   * that vanishes for r = 1) are compared absolutely, not relative to noise. */
  const double floor = 1e-4 * (double)n;
  return sqrt(num / (den > floor ? den : floor));
}

/* ------------------------------------------------------------------ one run's memory */
#define MAX_TENSORS 24
#define MAX_BUFS    24

/* A strided host tensor and, on device backends, its device mirror; `view`
 * is what the library sees. */
typedef struct vc_tensor {
  vt_tensor host;
  ditattn_tensor view;
  void *dev;
} vc_tensor;

typedef struct run {
  ditattn_context *ctx;
  int device; /* CUDA/HIP: tensors and lse live in device memory */
  const va_args *args;
  vc_source *src;
  vc_list *in, *out;
  int64_t pad;
  int bnhd;
  int failed; /* a usage or memory problem was printed */
  vc_tensor *tensors[MAX_TENSORS];
  int n_tensors;
  void *host_bufs[MAX_BUFS], *dev_bufs[MAX_BUFS];
  int n_host, n_dev;
} run;

static int fail(run *r, const char *fmt, const char *what) {
  fprintf(stderr, "verify: ");
  fprintf(stderr, fmt, what);
  fprintf(stderr, "\n");
  r->failed = 1;
  return 1;
}

static void *host_alloc(run *r, size_t bytes) {
  if (r->failed || r->n_host == MAX_BUFS)
    return r->failed ? NULL : (fail(r, "%s", "too many buffers"), NULL);
  void *p = malloc(bytes ? bytes : 1);
  if (!p) {
    fail(r, "%s", "out of host memory");
    return NULL;
  }
  r->host_bufs[r->n_host++] = p;
  return p;
}

/* Device copy of host bytes (the host pointer itself on host backends). */
static void *to_backend(run *r, void *host, size_t bytes) {
  if (r->failed) return NULL;
  if (!r->device) return host;
  void *dev = NULL;
  if (r->n_dev == MAX_BUFS || ditattn_malloc(r->ctx, bytes, &dev) != DITATTN_OK ||
      ditattn_copy_to_backend(r->ctx, dev, host, bytes) != DITATTN_OK) {
    if (dev) ditattn_free(r->ctx, dev);
    fail(r, "device upload failed: %s", ditattn_last_error(r->ctx));
    return NULL;
  }
  r->dev_bufs[r->n_dev++] = dev;
  return dev;
}

static int to_host(run *r, void *host, const void *dev, size_t bytes) {
  if (!r->device || host == dev) return 0;
  if (ditattn_copy_to_host(r->ctx, host, dev, bytes) != DITATTN_OK)
    return fail(r, "device download failed: %s", ditattn_last_error(r->ctx));
  return 0;
}

/* A NaN-poisoned host tensor; upload() gives it its backend view. */
static vc_tensor *new_host(run *r, int64_t B, int64_t H, int64_t N, int64_t D, int64_t pad,
                           int bnhd) {
  if (r->failed) return NULL;
  if (r->n_tensors == MAX_TENSORS) return fail(r, "%s", "too many tensors"), NULL;
  vc_tensor *t = calloc(1, sizeof *t);
  if (!t) return fail(r, "%s", "out of host memory"), NULL;
  r->tensors[r->n_tensors++] = t;
  t->host = vt_new(B, H, N, D, pad, bnhd);
  if (!t->host.buf) return fail(r, "%s", "out of host memory"), NULL;
  t->view = t->host.t;
  return t;
}

static vc_tensor *upload(run *r, vc_tensor *t) {
  if (!t) return NULL;
  t->dev = to_backend(r, t->host.buf, t->host.count * sizeof(float));
  t->view.data = t->dev;
  return t->dev ? t : NULL;
}

/* Input data for `name` from the source, contiguous, appended to the inputs. */
static float *source_f32(run *r, const char *name, int ndim, const int64_t *shape, double amp) {
  if (r->failed) return NULL;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  float *x = host_alloc(r, (size_t)n * sizeof *x);
  if (!x) return NULL;
  if (r->src->random) {
    for (int64_t i = 0; i < n; i++)
      x[i] = r->src->quant ? (float)(0.5 * amp * (double)vt_rand_int(-2, 2))
                           : (float)vt_uniform(-amp, amp);
  } else {
    const vc_array *a = vc_find(r->src->loaded, name);
    int ok = a && !a->is_int && a->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = a->shape[i] == shape[i];
    if (!ok) {
      snprintf(r->src->error, sizeof r->src->error, "input %s missing or of the wrong shape", name);
      fail(r, "%s", r->src->error);
      return NULL;
    }
    memcpy(x, a->data, (size_t)n * sizeof *x);
  }
  if (vc_append(r->in, name, 0, ndim, shape, x)) fail(r, "%s", "input list full");
  return r->failed ? NULL : x;
}

/* An input tensor in the case's layout (pad, bnhd), filled from the source. */
static vc_tensor *in_tensor(run *r, const char *name, int64_t B, int64_t H, int64_t N, int64_t D,
                            double amp) {
  int64_t shape[4] = {B, H, N, D};
  float *x = source_f32(r, name, 4, shape, amp);
  vc_tensor *t = x ? new_host(r, B, H, N, D, r->pad, r->bnhd) : NULL;
  if (!t) return NULL;
  vt_load(&t->host, x);
  return upload(r, t);
}

static vc_tensor *out_tensor(run *r, int64_t B, int64_t H, int64_t N, int64_t D) {
  return upload(r, new_host(r, B, H, N, D, r->pad, r->bnhd));
}

/* Per-head weights: contiguous (1, H, rows, cols). */
static vc_tensor *weight(run *r, const char *name, int64_t H, int64_t rows, int64_t cols) {
  int64_t shape[4] = {1, H, rows, cols};
  float *x = source_f32(r, name, 4, shape, va_num(r->args, "wamp", 1.0));
  vc_tensor *t = x ? new_host(r, 1, H, rows, cols, 0, 0) : NULL;
  if (!t) return NULL;
  vt_load(&t->host, x);
  return upload(r, t);
}

/* Output tensor -> contiguous array in the outputs. */
static void collect(run *r, const char *name, vc_tensor *t) {
  if (r->failed || to_host(r, t->host.buf, t->dev, t->host.count * sizeof(float))) return;
  float *flat = vt_contiguous(&t->host);
  if (!flat || vc_append(r->out, name, 0, 4, t->host.t.shape, flat)) fail(r, "%s", "output list");
  free(flat);
}

/* Float array (lse) of n entries on the backend, NaN-poisoned. */
static float *out_floats(run *r, int64_t n, float **host) {
  *host = host_alloc(r, (size_t)n * sizeof(float));
  if (!*host) return NULL;
  for (int64_t i = 0; i < n; i++) (*host)[i] = NAN;
  return to_backend(r, *host, (size_t)n * sizeof(float));
}

static void collect_floats(run *r, const char *name, float *host, const float *dev, int ndim,
                           const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  if (r->failed || to_host(r, host, dev, (size_t)n * sizeof(float))) return;
  if (vc_append(r->out, name, 0, ndim, shape, host)) fail(r, "%s", "output list");
}

static void collect_i32(run *r, const char *name, const int32_t *x, int ndim,
                        const int64_t *shape) {
  if (!r->failed && vc_append(r->out, name, 1, ndim, shape, x)) fail(r, "%s", "output list");
}

/* Token positions: random inside the grid (randpos=1, from the source), or
 * raster order (N = T·H·W). Recorded as input "pos" either way. */
static int32_t *positions(run *r, const int64_t grid[3], int64_t N, int from_source) {
  int32_t *pos = host_alloc(r, (size_t)N * 3 * sizeof *pos);
  if (!pos) return NULL;
  const int64_t shape[2] = {N, 3};
  if (from_source && r->src->random) {
    for (int64_t i = 0; i < 3 * N; i++) pos[i] = (int32_t)vt_rand_int(0, grid[i % 3] - 1);
  } else if (from_source) {
    const vc_array *a = vc_find(r->src->loaded, "pos");
    if (!a || !a->is_int || a->ndim != 2 || a->shape[0] != N || a->shape[1] != 3)
      return fail(r, "%s", "input pos missing or of the wrong shape"), NULL;
    memcpy(pos, a->data, (size_t)N * 3 * sizeof *pos);
  } else {
    for (int64_t s = 0; s < N; s++) {
      pos[3 * s] = (int32_t)(s / (grid[1] * grid[2]));
      pos[3 * s + 1] = (int32_t)(s / grid[2] % grid[1]);
      pos[3 * s + 2] = (int32_t)(s % grid[2]);
    }
  }
  if (vc_append(r->in, "pos", 1, 2, shape, pos)) fail(r, "%s", "input list full");
  return r->failed ? NULL : pos;
}

/* ------------------------------------------------------------------ ops */
#define ARG(name, def) va_int(r->args, name, def)
#define NUM(name, def) va_num(r->args, name, def)
#define CALL(expr)                                                                                 \
  do {                                                                                             \
    if (r->failed) return DITATTN_OK;                                                              \
    ditattn_status st_ = (expr);                                                                   \
    if (st_ != DITATTN_OK) return st_;                                                             \
  } while (0)

static int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

static ditattn_status op_dense(run *r, int backward) {
  const int64_t B = ARG("B", 1), H = ARG("H", 1), N = ARG("N", 8), Nk = ARG("Nk", N),
                D = ARG("D", 4);
  const double amp = NUM("amp", 1.0);
  const float scale = (float)NUM("scale", 0.0);
  vc_tensor *q = in_tensor(r, "q", B, H, N, D, amp), *k = in_tensor(r, "k", B, H, Nk, D, amp),
            *v = in_tensor(r, "v", B, H, Nk, D, amp);
  vc_tensor *dout = backward ? in_tensor(r, "dout", B, H, N, D, 1.0) : NULL;
  vc_tensor *out = out_tensor(r, B, H, N, D);
  float *lse_host, *lse = out_floats(r, B * H * N, &lse_host);
  CALL(ditattn_dense_forward(r->ctx, &q->view, &k->view, &v->view, scale, &out->view, lse));
  if (!backward) {
    const int64_t lse_shape[3] = {B, H, N};
    collect(r, "out", out);
    collect_floats(r, "lse", lse_host, lse, 3, lse_shape);
    return DITATTN_OK;
  }
  vc_tensor *dq = out_tensor(r, B, H, N, D), *dk = out_tensor(r, B, H, Nk, D),
            *dv = out_tensor(r, B, H, Nk, D);
  CALL(ditattn_dense_backward(r->ctx, &q->view, &k->view, &v->view, &out->view, lse, &dout->view,
                              scale, &dq->view, &dk->view, &dv->view));
  collect(r, "dq", dq), collect(r, "dk", dk), collect(r, "dv", dv);
  return DITATTN_OK;
}

static ditattn_status op_rope(run *r) {
  ditattn_rope_params p = {{ARG("T", 2), ARG("Hg", 2), ARG("W", 2)},
                           {ARG("dt", 2), ARG("dh", 0), ARG("dw", 0)},
                           NUM("theta", 10000.0),
                           (ditattn_rope_pairing)ARG("pairing", 0)};
  const int random_pos = (int)ARG("randpos", 0);
  const int64_t B = ARG("B", 1), H = ARG("H", 1), D = ARG("D", 4);
  const int64_t N = random_pos ? ARG("N", 8) : p.grid[0] * p.grid[1] * p.grid[2];
  const ditattn_direction dir = ARG("inverse", 0) ? DITATTN_INVERSE : DITATTN_FORWARD;
  const int in_place = (int)ARG("inplace", 0);
  vc_tensor *x = in_tensor(r, "x", B, H, N, D, NUM("amp", 1.0));
  int32_t *pos = positions(r, p.grid, N, random_pos);
  vc_tensor *y = in_place ? x : out_tensor(r, B, H, N, D);
  CALL(ditattn_rope_apply(r->ctx, &p, random_pos ? pos : NULL, dir, &x->view, &y->view));
  collect(r, "y", y);
  return DITATTN_OK;
}

static ditattn_status op_order(run *r) {
  ditattn_order_params p = {(ditattn_order_kind)ARG("kind", 1),
                            {ARG("T", 2), ARG("Hg", 2), ARG("W", 2)},
                            {ARG("tt", 1), ARG("th", 1), ARG("tw", 1)}};
  const int64_t B = ARG("B", 1), H = ARG("H", 1), D = ARG("D", 3);
  const int64_t N = p.grid[0] * p.grid[1] * p.grid[2];
  vc_tensor *x = in_tensor(r, "x", B, H, N, D, NUM("amp", 1.0));
  vc_tensor *fwd = out_tensor(r, B, H, N, D), *inv = out_tensor(r, B, H, N, D);
  int64_t *perm = host_alloc(r, (size_t)N * sizeof *perm);
  int32_t *perm32 = host_alloc(r, (size_t)N * sizeof *perm32);
  int32_t *pos = host_alloc(r, (size_t)N * 3 * sizeof *pos);
  CALL(ditattn_order_permutation(&p, perm));
  CALL(ditattn_order_positions(&p, pos));
  CALL(ditattn_order_apply(r->ctx, &p, DITATTN_FORWARD, &x->view, &fwd->view));
  CALL(ditattn_order_apply(r->ctx, &p, DITATTN_INVERSE, &x->view, &inv->view));
  for (int64_t s = 0; s < N; s++) perm32[s] = (int32_t)perm[s];
  const int64_t n_shape[1] = {N}, pos_shape[2] = {N, 3};
  collect(r, "fwd", fwd), collect(r, "inv", inv);
  collect_i32(r, "perm", perm32, 1, n_shape);
  collect_i32(r, "pos", pos, 2, pos_shape);
  return DITATTN_OK;
}

static ditattn_status op_pool(run *r) {
  const int64_t B = ARG("B", 1), H = ARG("H", 1), N = ARG("N", 8), D = ARG("D", 3),
                block = ARG("block", 2);
  vc_tensor *x = in_tensor(r, "x", B, H, N, D, NUM("amp", 1.0));
  vc_tensor *y = block > 0 ? out_tensor(r, B, H, ceil_div(N, block), D) : NULL;
  if (!y && !r->failed) return DITATTN_ERR_INVALID_ARGUMENT;
  CALL(ditattn_pool_mean(r->ctx, &x->view, block, &y->view));
  collect(r, "y", y);
  return DITATTN_OK;
}

/* Random sources mark a fraction `empty` of the accumulator rows -inf. */
static ditattn_status op_merge(run *r) {
  const int64_t B = ARG("B", 1), H = ARG("H", 1), N = ARG("N", 8), D = ARG("D", 3);
  const int64_t lse_shape[3] = {B, H, N};
  vc_tensor *acc = in_tensor(r, "out_acc", B, H, N, D, NUM("amp", 1.0));
  float *lse_acc = source_f32(r, "lse_acc", 3, lse_shape, 3.0);
  if (lse_acc && r->src->random) {
    for (int64_t i = 0; i < B * H * N; i++)
      if (vt_uniform(0.0, 1.0) < NUM("empty", 0.2)) lse_acc[i] = -INFINITY;
    memcpy(r->in->a[r->in->n - 1].data, lse_acc, (size_t)(B * H * N) * sizeof(float));
  }
  vc_tensor *part = in_tensor(r, "out_part", B, H, N, D, NUM("amp", 1.0));
  float *lse_part = source_f32(r, "lse_part", 3, lse_shape, 3.0);
  float *dacc = lse_acc ? to_backend(r, lse_acc, (size_t)(B * H * N) * sizeof(float)) : NULL;
  float *dpart = lse_part ? to_backend(r, lse_part, (size_t)(B * H * N) * sizeof(float)) : NULL;
  CALL(ditattn_lse_merge(r->ctx, &acc->view, dacc, &part->view, dpart));
  collect(r, "out", acc);
  collect_floats(r, "lse", lse_acc, dacc, 3, lse_shape);
  return DITATTN_OK;
}

static ditattn_status op_llsa(run *r, int backward) {
  const int64_t B = ARG("B", 1), H = ARG("H", 1), N = ARG("N", 8), D = ARG("D", 3);
  ditattn_llsa_params p = ditattn_llsa_params_default();
  p.block = ARG("b", 2);
  p.levels = va_int_list(r->args, "K", p.topk, DITATTN_LLSA_MAX_LEVELS);
  p.scale = (float)NUM("scale", 0.0);
  if (p.levels < 1 && !r->failed) fail(r, "%s", "llsa needs K=K1[,K2...]");
  const double amp = NUM("amp", 1.0);
  vc_tensor *q = in_tensor(r, "q", B, H, N, D, amp), *k = in_tensor(r, "k", B, H, N, D, amp),
            *v = in_tensor(r, "v", B, H, N, D, amp);
  vc_tensor *dout = backward ? in_tensor(r, "dout", B, H, N, D, 1.0) : NULL;
  vc_tensor *out = out_tensor(r, B, H, N, D);
  float *lse_host, *lse = out_floats(r, B * H * N, &lse_host);
  ditattn_llsa_selection sel;
  memset(&sel, 0, sizeof sel);
  int64_t sel_shape[DITATTN_LLSA_MAX_LEVELS][4];
  for (int l = 0; l < p.levels && !r->failed; l++) {
    const int64_t count = ditattn_llsa_selection_count(&p, B, H, N, l + 1);
    if (count < 1) return DITATTN_ERR_INVALID_ARGUMENT;
    sel.sel[l] = host_alloc(r, (size_t)count * sizeof(int32_t));
    if (sel.sel[l]) memset(sel.sel[l], 0x7f, (size_t)count * sizeof(int32_t)); /* poison */
    sel_shape[l][0] = B, sel_shape[l][1] = H, sel_shape[l][3] = p.topk[l];
    sel_shape[l][2] = count / (B * H * p.topk[l]);
  }
  CALL(ditattn_llsa_forward(r->ctx, &p, &q->view, &k->view, &v->view, &out->view, lse,
                            backward ? NULL : &sel));
  if (!backward) {
    const int64_t lse_shape[3] = {B, H, N};
    collect(r, "out", out);
    collect_floats(r, "lse", lse_host, lse, 3, lse_shape);
    for (int l = 0; l < p.levels; l++) {
      char name[16];
      snprintf(name, sizeof name, "sel%d", l + 1);
      collect_i32(r, name, sel.sel[l], 4, sel_shape[l]);
    }
    return DITATTN_OK;
  }
  vc_tensor *dq = out_tensor(r, B, H, N, D), *dk = out_tensor(r, B, H, N, D),
            *dv = out_tensor(r, B, H, N, D);
  CALL(ditattn_llsa_backward(r->ctx, &p, &q->view, &k->view, &v->view, &out->view, lse, &dout->view,
                             &dq->view, &dk->view, &dv->view));
  collect(r, "dq", dq), collect(r, "dk", dk), collect(r, "dv", dv);
  return DITATTN_OK;
}

static ditattn_status op_ropeslr(run *r, int backward) {
  ditattn_ropeslr_params p = ditattn_ropeslr_params_default();
  p.grid[0] = ARG("T", 2), p.grid[1] = ARG("Hg", 2), p.grid[2] = ARG("W", 2);
  p.block = ARG("b", 2);
  p.policy = (ditattn_slr_policy)ARG("policy", 1);
  p.rho = NUM("rho", 0.1);
  p.topk = ARG("topk", 1);
  p.sqrt_c = NUM("sqrt_c", 1.0);
  p.force_own_block = (int)ARG("own", 1);
  p.rank = ARG("r", 3);
  p.feature = (ditattn_slr_feature)ARG("feature", 0);
  p.scale = (float)NUM("scale", 0.0);
  const int random_pos = (int)ARG("randpos", 0);
  const int64_t B = ARG("B", 1), H = ARG("H", 1), D = ARG("D", 3);
  const int64_t N = random_pos ? ARG("N", 8) : p.grid[0] * p.grid[1] * p.grid[2];
  const int64_t R = p.rank, K = ditattn_ropeslr_topk(&p, N);
  if (K < 1 || p.block < 1) return DITATTN_ERR_INVALID_ARGUMENT;
  const double amp = NUM("amp", 1.0);
  vc_tensor *q = in_tensor(r, "q", B, H, N, D, amp), *k = in_tensor(r, "k", B, H, N, D, amp),
            *v = in_tensor(r, "v", B, H, N, D, amp);
  static const char *const names[6] = {"A", "Bk", "Et", "Ey", "Ex", "W"};
  const int64_t rows[6] = {D, D, p.grid[0], p.grid[1], p.grid[2], D};
  const int64_t cols[6] = {R, R, R, R, R, D};
  vc_tensor *w[6];
  for (int i = 0; i < 6; i++) w[i] = weight(r, names[i], H, rows[i], cols[i]);
  int32_t *pos = positions(r, p.grid, N, random_pos);
  if (r->failed) return DITATTN_OK;
  ditattn_ropeslr_weights wts = {w[0]->view, w[1]->view, w[2]->view,
                                 w[3]->view, w[4]->view, w[5]->view};
  if (backward) {
    vc_tensor *dout = in_tensor(r, "dout", B, H, N, D, 1.0);
    vc_tensor *dq = out_tensor(r, B, H, N, D), *dk = out_tensor(r, B, H, N, D),
              *dv = out_tensor(r, B, H, N, D), *dw[6];
    for (int i = 0; i < 6; i++) dw[i] = upload(r, new_host(r, 1, H, rows[i], cols[i], 0, 0));
    if (r->failed) return DITATTN_OK;
    ditattn_ropeslr_weights dwts = {dw[0]->view, dw[1]->view, dw[2]->view,
                                    dw[3]->view, dw[4]->view, dw[5]->view};
    CALL(ditattn_ropeslr_backward(r->ctx, &p, &wts, random_pos ? pos : NULL, &q->view, &k->view,
                                  &v->view, &dout->view, &dq->view, &dk->view, &dv->view, &dwts));
    collect(r, "dq", dq), collect(r, "dk", dk), collect(r, "dv", dv);
    for (int i = 0; i < 6; i++) {
      char name[8];
      snprintf(name, sizeof name, "d%s", names[i]);
      collect(r, name, dw[i]);
    }
    return DITATTN_OK;
  }
  vc_tensor *out = out_tensor(r, B, H, N, D);
  float *lse_host, *lse = out_floats(r, B * H * N, &lse_host);
  const int64_t n = ceil_div(N, p.block);
  int32_t *sel = host_alloc(r, (size_t)(B * H * n * K) * sizeof *sel);
  CALL(ditattn_ropeslr_forward(r->ctx, &p, &wts, random_pos ? pos : NULL, &q->view, &k->view,
                               &v->view, &out->view, lse, sel));
  const int64_t lse_shape[3] = {B, H, N}, sel_shape[4] = {B, H, n, K};
  collect(r, "out", out);
  collect_floats(r, "lse", lse_host, lse, 3, lse_shape);
  collect_i32(r, "sel", sel, 4, sel_shape);
  return DITATTN_OK;
}

int vc_run(ditattn_context *ctx, const char *op, const va_args *args, vc_source *src,
           vc_list *inputs, vc_list *outputs, ditattn_status *status) {
  run r;
  memset(&r, 0, sizeof r);
  r.ctx = ctx;
  const ditattn_backend be = ditattn_context_backend(ctx);
  r.device = be == DITATTN_BACKEND_CUDA || be == DITATTN_BACKEND_HIP;
  r.args = args, r.src = src, r.in = inputs, r.out = outputs;
  r.pad = va_int(args, "pad", 0);
  r.bnhd = (int)va_int(args, "bnhd", 0);
  ditattn_status st = DITATTN_ERR_INVALID_ARGUMENT;
  if (strcmp(op, "dense") == 0)
    st = op_dense(&r, 0);
  else if (strcmp(op, "dense_bwd") == 0)
    st = op_dense(&r, 1);
  else if (strcmp(op, "rope") == 0)
    st = op_rope(&r);
  else if (strcmp(op, "order") == 0)
    st = op_order(&r);
  else if (strcmp(op, "pool") == 0)
    st = op_pool(&r);
  else if (strcmp(op, "merge") == 0)
    st = op_merge(&r);
  else if (strcmp(op, "llsa") == 0)
    st = op_llsa(&r, 0);
  else if (strcmp(op, "llsa_bwd") == 0)
    st = op_llsa(&r, 1);
  else if (strcmp(op, "ropeslr") == 0)
    st = op_ropeslr(&r, 0);
  else if (strcmp(op, "ropeslr_bwd") == 0)
    st = op_ropeslr(&r, 1);
  else
    fail(&r, "unknown op %s", op);
  /* Keep the library's message: freeing device memory below starts a new call. */
  if (st != DITATTN_OK) snprintf(src->error, sizeof src->error, "%s", ditattn_last_error(ctx));
  for (int i = 0; i < r.n_tensors; i++) {
    vt_free(&r.tensors[i]->host);
    free(r.tensors[i]);
  }
  for (int i = 0; i < r.n_host; i++) free(r.host_bufs[i]);
  for (int i = 0; i < r.n_dev; i++) ditattn_free(ctx, r.dev_bufs[i]);
  *status = st;
  if (r.failed) return VC_USAGE;
  return st == DITATTN_OK ? VC_OK : VC_STATUS;
}
