/* Every bad-argument path of the dense, merge, pool, RoPE and order entry
 * points: the status code AND a last-error message naming the argument.
 * Validation happens before any data access, so fake pointers are safe. */
#include "test_util.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SLOTS 8

/* One entry point with valid arguments; each test breaks exactly one thing. */
typedef struct op_case op_case;
struct op_case {
  const char *op;
  int nslots;
  const char *name[MAX_SLOTS];
  int is_output[MAX_SLOTS];
  unsigned free_dims[MAX_SLOTS]; /* bit i: shape[i] of this slot is not tied to slot 0 */
  ditattn_tensor t[MAX_SLOTS];
  ditattn_tensor *arg[MAX_SLOTS]; /* what the call passes: &t[i], or NULL */
  tu_tensor own[MAX_SLOTS];
  float *lse_a, *lse_b; /* dense: lse; merge: lse_acc, lse_part */
  float scale;
  int64_t block;
  ditattn_rope_params rope;
  int32_t *pos;
  ditattn_direction direction;
  ditattn_order_params order;
  ditattn_status (*call)(ditattn_context *ctx, op_case *c);
};

static ditattn_status call_dense_fwd(ditattn_context *ctx, op_case *c) {
  return ditattn_dense_forward(ctx, c->arg[0], c->arg[1], c->arg[2], c->scale, c->arg[3], c->lse_a);
}
static ditattn_status call_dense_bwd(ditattn_context *ctx, op_case *c) {
  return ditattn_dense_backward(ctx, c->arg[0], c->arg[1], c->arg[2], c->arg[3], c->lse_a,
                                c->arg[4], c->scale, c->arg[5], c->arg[6], c->arg[7]);
}
static ditattn_status call_merge(ditattn_context *ctx, op_case *c) {
  return ditattn_lse_merge(ctx, c->arg[0], c->lse_a, c->arg[1], c->lse_b);
}
static ditattn_status call_pool(ditattn_context *ctx, op_case *c) {
  return ditattn_pool_mean(ctx, c->arg[0], c->block, c->arg[1]);
}
static ditattn_status call_rope(ditattn_context *ctx, op_case *c) {
  return ditattn_rope_apply(ctx, &c->rope, c->pos, c->direction, c->arg[0], c->arg[1]);
}
static ditattn_status call_order(ditattn_context *ctx, op_case *c) {
  return ditattn_order_apply(ctx, &c->order, c->direction, c->arg[0], c->arg[1]);
}

enum { DENSE_FWD, DENSE_BWD, MERGE, POOL, ROPE, ORDER, OP_COUNT };

static void add_slot(op_case *c, const char *name, int is_output, unsigned free_dims, int64_t B,
                     int64_t H, int64_t N, int64_t D) {
  const int s = c->nslots++;
  c->name[s] = name;
  c->is_output[s] = is_output;
  c->free_dims[s] = free_dims;
  /* Room for 32 tokens whatever N (<= 24) is, viewed as N: a tensor shifted
   * into another's buffer (the overlap tests) stays inside that buffer and
   * never reaches a neighbouring allocation. */
  c->own[s] = tu_tensor_new(B, H, 32, D, s % 2, s % 3 == 1);
  tu_fill_uniform(&c->own[s]);
  c->own[s].t.shape[2] = N;
}

static float *floats(size_t n) {
  float *x = malloc(n * sizeof *x);
  assert_non_null(x);
  for (size_t i = 0; i < n; i++) x[i] = (float)tu_uniform(-1, 1);
  return x;
}

/* B = 2, H = 3, Nq = 3, Nk = 5, D = 4: every extent >= 2, all different. */
/* Fills *out in place: arg[] points into it, so it must not be copied. */
static void make_case(op_case *out, int op) {
  op_case c;
  memset(&c, 0, sizeof c);
  const int64_t B = 2, H = 3, Nq = 3, Nk = 5, D = 4;
  c.direction = DITATTN_FORWARD;
  switch (op) {
  case DENSE_FWD:
    c.op = "dense_forward";
    c.call = call_dense_fwd;
    add_slot(&c, "q", 0, 0, B, H, Nq, D);
    add_slot(&c, "k", 0, 1u << 2, B, H, Nk, D);
    add_slot(&c, "v", 0, 0, B, H, Nk, D);
    add_slot(&c, "out", 1, 0, B, H, Nq, D);
    c.lse_a = floats((size_t)(B * H * Nq));
    break;
  case DENSE_BWD:
    c.op = "dense_backward";
    c.call = call_dense_bwd;
    add_slot(&c, "q", 0, 0, B, H, Nq, D);
    add_slot(&c, "k", 0, 1u << 2, B, H, Nk, D);
    add_slot(&c, "v", 0, 0, B, H, Nk, D);
    add_slot(&c, "out", 0, 0, B, H, Nq, D);
    add_slot(&c, "dout", 0, 0, B, H, Nq, D);
    add_slot(&c, "dq", 1, 0, B, H, Nq, D);
    add_slot(&c, "dk", 1, 0, B, H, Nk, D);
    add_slot(&c, "dv", 1, 0, B, H, Nk, D);
    c.lse_a = floats((size_t)(B * H * Nq));
    break;
  case MERGE:
    c.op = "lse_merge";
    c.call = call_merge;
    add_slot(&c, "out_acc", 1, 0, B, H, Nq, D);
    add_slot(&c, "out_part", 0, 0, B, H, Nq, D);
    c.lse_a = floats((size_t)(B * H * Nq));
    c.lse_b = floats((size_t)(B * H * Nq));
    break;
  case POOL:
    c.op = "pool_mean";
    c.call = call_pool;
    c.block = 2;
    add_slot(&c, "x", 0, 0, B, H, Nk, D);
    add_slot(&c, "y", 1, 0, B, H, 3, D); /* ceil(5 / 2) */
    break;
  case ROPE: {
    c.op = "rope_apply";
    c.call = call_rope;
    ditattn_rope_params p = {{2, 3, 4}, {2, 2, 0}, 100.0, DITATTN_ROPE_HALF_SPLIT};
    c.rope = p;
    add_slot(&c, "x", 0, 0, B, H, Nk, D);
    add_slot(&c, "y", 1, 0, B, H, Nk, D);
    c.pos = malloc((size_t)Nk * 3 * sizeof(int32_t));
    assert_non_null(c.pos);
    for (int64_t i = 0; i < Nk; i++)
      for (int a = 0; a < 3; a++) c.pos[3 * i + a] = (int32_t)tu_rand_int(0, p.grid[a] - 1);
    break;
  }
  case ORDER: {
    c.op = "order_apply";
    c.call = call_order;
    ditattn_order_params p = {DITATTN_ORDER_TILE, {2, 3, 4}, {1, 2, 3}};
    c.order = p;
    add_slot(&c, "x", 0, 0, B, H, 24, D);
    add_slot(&c, "y", 1, 0, B, H, 24, D);
    break;
  }
  default: fail();
  }
  *out = c;
  for (int s = 0; s < out->nslots; s++) {
    out->t[s] = out->own[s].t;
    out->arg[s] = &out->t[s];
  }
}

static void free_case(op_case *c) {
  for (int s = 0; s < c->nslots; s++) tu_tensor_free(&c->own[s]);
  free(c->lse_a);
  free(c->lse_b);
  free(c->pos);
}

/* Restores slot s (and every argument) to the valid fixture. */
static void reset(op_case *c) {
  for (int s = 0; s < c->nslots; s++) {
    c->t[s] = c->own[s].t;
    c->arg[s] = &c->t[s];
  }
}

/* `name` occurs in msg as a whole word (not inside "output" or "out_acc"). */
static int names_word(const char *msg, const char *name) {
  const size_t len = strlen(name);
  for (const char *p = strstr(msg, name); p; p = strstr(p + 1, name)) {
    const int before_ok = p == msg || !(isalnum((unsigned char)p[-1]) || p[-1] == '_');
    const int after_ok = !(isalnum((unsigned char)p[len]) || p[len] == '_');
    if (before_ok && after_ok) return 1;
  }
  return 0;
}

static int failures, checks;

static void expect_status(ditattn_context *ctx, const char *what, int line, ditattn_status got,
                          ditattn_status want, const char *needle, const char *needle2) {
  const char *msg = ctx ? ditattn_last_error(ctx) : "";
  int ok = got == want;
  if (ok && ctx && needle) ok = names_word(msg, needle);
  if (ok && ctx && needle2) ok = names_word(msg, needle2);
  checks++;
  if (getenv("DITATTN_TEST_VERBOSE")) fprintf(stderr, "%s -> %d \"%s\"\n", what, (int)got, msg);
  if (!ok) {
    fprintf(stderr, "line %d: %s: got %d (\"%s\"), want %d naming '%s'%s%s\n", line, what, (int)got,
            msg, (int)want, needle ? needle : "", needle2 ? " and " : "", needle2 ? needle2 : "");
    failures++;
  }
}

#define EXPECT(c, what, want, needle)                                                              \
  expect_status(ctx, (what), __LINE__, (c)->call(ctx, (c)), (want), (needle), NULL)
#define EXPECT2(c, what, want, needle, needle2)                                                    \
  expect_status(ctx, (what), __LINE__, (c)->call(ctx, (c)), (want), (needle), (needle2))

static ditattn_context *ref_context(void) {
  failures = 0; /* every test starts here */
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  return ctx;
}

/* The fixture is valid, succeeds, and leaves no error message. */
static void fixtures_are_valid(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  for (int op = 0; op < OP_COUNT; op++) {
    op_case c;
    make_case(&c, op);
    EXPECT(&c, c.op, DITATTN_OK, NULL);
    assert_string_equal(ditattn_last_error(ctx), "");
    free_case(&c);
  }
  assert_int_equal(failures, 0);
  ditattn_context_destroy(ctx);
}

static void null_context_is_rejected(void **state) {
  (void)state;
  for (int op = 0; op < OP_COUNT; op++) {
    op_case c;
    make_case(&c, op);
    assert_int_equal(c.call(NULL, &c), DITATTN_ERR_NULL_POINTER);
    free_case(&c);
  }
}

/* Defects of a single tensor argument, for every tensor of every entry. */
static void every_tensor_defect_is_named(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  char what[128], field[64];
  for (int op = 0; op < OP_COUNT; op++) {
    op_case c;
    make_case(&c, op);
    for (int s = 0; s < c.nslots; s++) {
      const char *name = c.name[s];
      ditattn_tensor *t = &c.t[s];
      snprintf(what, sizeof what, "%s: %s NULL", c.op, name);
      c.arg[s] = NULL;
      EXPECT(&c, what, DITATTN_ERR_NULL_POINTER, name);
      reset(&c);

      snprintf(what, sizeof what, "%s: %s.data NULL", c.op, name);
      t->data = NULL;
      EXPECT(&c, what, DITATTN_ERR_NULL_POINTER, name);
      reset(&c);

      snprintf(what, sizeof what, "%s: %s unknown dtype", c.op, name);
      t->dtype = (ditattn_dtype)9;
      EXPECT(&c, what, DITATTN_ERR_DTYPE, name);
      reset(&c);

      for (int i = 0; i < 4; i++) {
        const int64_t bad[2] = {0, -3};
        for (int k = 0; k < 2; k++) {
          snprintf(what, sizeof what, "%s: %s.shape[%d] = %lld", c.op, name, i, (long long)bad[k]);
          snprintf(field, sizeof field, "%s.shape[%d]", name, i);
          t->shape[i] = bad[k];
          EXPECT(&c, what, DITATTN_ERR_SHAPE_MISMATCH, field);
          reset(&c);
        }
      }
      for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "%s: %s.stride[%d] negative", c.op, name, i);
        snprintf(field, sizeof field, "%s.stride[%d]", name, i);
        t->stride[i] = -1;
        EXPECT(&c, what, DITATTN_ERR_BAD_STRIDE, field);
        reset(&c);
      }
      /* Byte size overflow: 2^62 tokens of 4 floats (never touched). */
      snprintf(what, sizeof what, "%s: %s byte size overflow", c.op, name);
      t->shape[2] = INT64_C(1) << 62;
      EXPECT(&c, what, DITATTN_ERR_OVERFLOW, name);
      reset(&c);
      t->shape[0] = INT64_C(1) << 40;
      t->stride[0] = INT64_C(1) << 40;
      EXPECT(&c, what, DITATTN_ERR_OVERFLOW, name);
      reset(&c);

      if (c.is_output[s]) {
        snprintf(what, sizeof what, "%s: output %s rows overlap", c.op, name);
        t->stride[2] = t->shape[3] - 1;
        EXPECT(&c, what, DITATTN_ERR_BAD_STRIDE, name);
        reset(&c);
        snprintf(what, sizeof what, "%s: output %s heads share memory", c.op, name);
        t->stride[1] = 0;
        EXPECT(&c, what, DITATTN_ERR_BAD_STRIDE, name);
        reset(&c);
        /* An output overlapping any other tensor argument (partially). */
        for (int j = 0; j < c.nslots; j++) {
          if (j == s) continue;
          snprintf(what, sizeof what, "%s: %s overlaps %s", c.op, name, c.name[j]);
          t->data = (float *)c.t[j].data + 1;
          EXPECT2(&c, what, DITATTN_ERR_INVALID_ARGUMENT, name, c.name[j]);
          reset(&c);
        }
      }
      if (s > 0) {
        snprintf(what, sizeof what, "%s: %s dtype differs from %s", c.op, name, c.name[0]);
        t->dtype = DITATTN_BF16;
        EXPECT(&c, what, DITATTN_ERR_DTYPE, name);
        reset(&c);
        /* Shapes tied to the first tensor: one smaller in each dimension. */
        for (int i = 0; i < 4; i++) {
          if (c.free_dims[s] & (1u << i)) continue;
          snprintf(what, sizeof what, "%s: %s.shape[%d] mismatch", c.op, name, i);
          snprintf(field, sizeof field, "%s.shape[%d]", name, i);
          t->shape[i] -= 1;
          EXPECT(&c, what, DITATTN_ERR_SHAPE_MISMATCH, field);
          reset(&c);
        }
      }
    }
    /* A dtype the backend does not take, consistent across all tensors. */
    snprintf(what, sizeof what, "%s: all bf16 on ref", c.op);
    for (int s = 0; s < c.nslots; s++) c.t[s].dtype = DITATTN_BF16;
    EXPECT(&c, what, DITATTN_ERR_DTYPE, c.name[0]);
    assert_non_null(strstr(ditattn_last_error(ctx), "ref"));
    reset(&c);
    free_case(&c);
  }
  assert_int_equal(failures, 0);
  ditattn_context_destroy(ctx);
}

static void dense_scalar_and_lse_arguments(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  for (int op = DENSE_FWD; op <= DENSE_BWD; op++) {
    op_case c;
    make_case(&c, op);
    const float bad_scales[3] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
      c.scale = bad_scales[i];
      EXPECT(&c, "non-finite scale", DITATTN_ERR_INVALID_ARGUMENT, "scale");
    }
    c.scale = -1.0f; /* <= 0: the default 1/sqrt(D) */
    EXPECT(&c, "negative scale means default", DITATTN_OK, NULL);
    c.scale = 0.0f;
    float *lse = c.lse_a;
    if (op == DENSE_FWD) {
      c.lse_a = NULL; /* optional */
      EXPECT(&c, "forward without lse", DITATTN_OK, NULL);
      for (int j = 0; j < 4; j++) { /* lse is an output: it must not overlap q, k, v, out */
        c.lse_a = (float *)c.t[j].data + 2;
        EXPECT2(&c, "forward lse overlaps a tensor", DITATTN_ERR_INVALID_ARGUMENT, "lse",
                c.name[j]);
      }
    } else {
      c.lse_a = NULL;
      EXPECT(&c, "backward without lse", DITATTN_ERR_NULL_POINTER, "lse");
      for (int j = 5; j < 8; j++) { /* lse is an input: outputs must not overwrite it */
        c.lse_a = (float *)c.t[j].data + 2;
        EXPECT2(&c, "backward lse overlaps a gradient", DITATTN_ERR_INVALID_ARGUMENT, "lse",
                c.name[j]);
      }
    }
    c.lse_a = lse;
    free_case(&c);
  }
  assert_int_equal(failures, 0);
  ditattn_context_destroy(ctx);
}

static void merge_lse_arguments(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  op_case c;
  make_case(&c, MERGE);
  float *lse_acc = c.lse_a, *lse_part = c.lse_b;
  c.lse_a = NULL;
  EXPECT(&c, "lse_acc NULL", DITATTN_ERR_NULL_POINTER, "lse_acc");
  c.lse_a = lse_acc;
  c.lse_b = NULL;
  EXPECT(&c, "lse_part NULL", DITATTN_ERR_NULL_POINTER, "lse_part");
  c.lse_b = lse_part;
  c.lse_a = (float *)c.t[0].data + 1;
  EXPECT2(&c, "lse_acc overlaps out_acc", DITATTN_ERR_INVALID_ARGUMENT, "lse_acc", "out_acc");
  c.lse_a = (float *)c.t[1].data + 1;
  EXPECT2(&c, "lse_acc overlaps out_part", DITATTN_ERR_INVALID_ARGUMENT, "lse_acc", "out_part");
  c.lse_a = lse_acc;
  c.lse_b = (float *)c.t[0].data + 1;
  EXPECT2(&c, "lse_part overlaps out_acc", DITATTN_ERR_INVALID_ARGUMENT, "lse_part", "out_acc");
  c.lse_b = lse_acc + 1;
  EXPECT2(&c, "lse_part overlaps lse_acc", DITATTN_ERR_INVALID_ARGUMENT, "lse_acc", "lse_part");
  c.lse_b = lse_part;
  EXPECT(&c, "merge restored", DITATTN_OK, NULL);
  free_case(&c);
  assert_int_equal(failures, 0);
  ditattn_context_destroy(ctx);
}

static void pool_block_argument(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  op_case c;
  make_case(&c, POOL);
  const int64_t bad[3] = {0, -1, INT64_MIN};
  for (int i = 0; i < 3; i++) {
    c.block = bad[i];
    EXPECT(&c, "block < 1", DITATTN_ERR_INVALID_ARGUMENT, "block");
  }
  c.block = 3; /* y has ceil(5/2) = 3 rows, but ceil(5/3) = 2 are needed */
  EXPECT(&c, "y rows do not match the block", DITATTN_ERR_SHAPE_MISMATCH, "y.shape[2]");
  c.block = INT64_MAX; /* one partial block */
  c.t[1].shape[2] = 1;
  EXPECT(&c, "huge block", DITATTN_OK, NULL);
  free_case(&c);
  assert_int_equal(failures, 0);
  ditattn_context_destroy(ctx);
}

static void rope_parameter_arguments(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  op_case c;
  make_case(&c, ROPE);
  const ditattn_rope_params good = c.rope;
  int32_t *pos = c.pos;

  ditattn_rope_params *null_params = NULL;
  expect_status(ctx, "params NULL", __LINE__,
                ditattn_rope_apply(ctx, null_params, c.pos, c.direction, c.arg[0], c.arg[1]),
                DITATTN_ERR_NULL_POINTER, "params", NULL);
  const int64_t bad_extent[3] = {0, -2, (INT64_C(1) << 21) + 1};
  for (int a = 0; a < 3; a++)
    for (int k = 0; k < 3; k++) {
      c.rope.grid[a] = bad_extent[k];
      EXPECT(&c, "bad rope grid extent", DITATTN_ERR_INVALID_ARGUMENT, "grid");
      c.rope = good;
    }
  for (int a = 0; a < 3; a++) {
    c.rope.grid[a] = INT64_C(1) << 21;
  }
  EXPECT(&c, "rope grid with 2^63 tokens", DITATTN_ERR_OVERFLOW, "grid");
  c.rope = good;
  const int64_t bad_dim[3] = {1, -2, 6}; /* odd, negative, > D = 4 */
  for (int a = 0; a < 3; a++)
    for (int k = 0; k < 3; k++) {
      char field[16];
      snprintf(field, sizeof field, "dims[%d]", a);
      c.rope.dims[a] = bad_dim[k];
      EXPECT(&c, "bad rope dims", DITATTN_ERR_INVALID_ARGUMENT, field);
      c.rope = good;
    }
  c.rope.dims[2] = 2; /* 2 + 2 + 2 > D = 4 */
  EXPECT(&c, "rope dims sum > D", DITATTN_ERR_INVALID_ARGUMENT, "dims");
  c.rope = good;
  const double bad_theta[4] = {0.0, -10.0, NAN, INFINITY};
  for (int k = 0; k < 4; k++) {
    c.rope.theta = bad_theta[k];
    EXPECT(&c, "bad rope theta", DITATTN_ERR_INVALID_ARGUMENT, "theta");
  }
  c.rope = good;
  c.rope.pairing = (ditattn_rope_pairing)7;
  EXPECT(&c, "bad rope pairing", DITATTN_ERR_INVALID_ARGUMENT, "pairing");
  c.rope = good;
  c.direction = (ditattn_direction)5;
  EXPECT(&c, "bad rope direction", DITATTN_ERR_INVALID_ARGUMENT, "direction");
  c.direction = DITATTN_FORWARD;
  /* Positions outside the grid, on each axis, below and above. */
  for (int64_t i = 0; i < 5; i += 4)
    for (int a = 0; a < 3; a++) {
      const int32_t keep = pos[3 * i + a];
      const int32_t bad_pos[2] = {-1, (int32_t)good.grid[a]};
      for (int k = 0; k < 2; k++) {
        char field[16];
        snprintf(field, sizeof field, "pos[%lld]", (long long)i);
        pos[3 * i + a] = bad_pos[k];
        EXPECT(&c, "position outside the grid", DITATTN_ERR_INVALID_ARGUMENT, field);
      }
      pos[3 * i + a] = keep;
    }
  /* Without positions, N must equal T·H·W (here 24 != 5). */
  c.pos = NULL;
  EXPECT(&c, "raster rope with N != grid", DITATTN_ERR_SHAPE_MISMATCH, "grid");
  c.pos = (int32_t *)c.t[1].data + 1;
  EXPECT2(&c, "pos overlaps y", DITATTN_ERR_INVALID_ARGUMENT, "pos", "y");
  c.pos = pos;
  /* Exactly the same view is in place (allowed); a shifted one is not. */
  c.t[1] = c.t[0];
  EXPECT(&c, "rope in place", DITATTN_OK, NULL);
  reset(&c);
  EXPECT(&c, "rope restored", DITATTN_OK, NULL);
  free_case(&c);
  assert_int_equal(failures, 0);
  ditattn_context_destroy(ctx);
}

static void order_parameter_arguments(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  op_case c;
  make_case(&c, ORDER);
  const ditattn_order_params good = c.order;
  ditattn_order_params *null_params = NULL;
  expect_status(ctx, "order params NULL", __LINE__,
                ditattn_order_apply(ctx, null_params, c.direction, c.arg[0], c.arg[1]),
                DITATTN_ERR_NULL_POINTER, "params", NULL);
  c.order.kind = (ditattn_order_kind)9;
  EXPECT(&c, "bad order kind", DITATTN_ERR_INVALID_ARGUMENT, "kind");
  c.order = good;
  const int64_t bad_extent[3] = {0, -1, (INT64_C(1) << 21) + 1};
  for (int a = 0; a < 3; a++)
    for (int k = 0; k < 3; k++) {
      c.order.grid[a] = bad_extent[k];
      EXPECT(&c, "bad order grid", DITATTN_ERR_INVALID_ARGUMENT, "grid");
      c.order = good;
    }
  for (int a = 0; a < 3; a++) c.order.grid[a] = INT64_C(1) << 21;
  EXPECT(&c, "order grid with 2^63 tokens", DITATTN_ERR_OVERFLOW, "grid");
  c.order = good;
  for (int a = 0; a < 3; a++) {
    char field[16];
    snprintf(field, sizeof field, "tile[%d]", a);
    c.order.tile[a] = 0;
    EXPECT(&c, "tile extent 0", DITATTN_ERR_INVALID_ARGUMENT, field);
    c.order.tile[a] = -4;
    EXPECT(&c, "tile extent negative", DITATTN_ERR_INVALID_ARGUMENT, field);
    c.order = good;
  }
  c.order.kind = DITATTN_ORDER_MORTON; /* tile is ignored outside TILE */
  c.order.tile[0] = 0;
  EXPECT(&c, "tile ignored for morton", DITATTN_OK, NULL);
  c.order = good;
  c.direction = (ditattn_direction)3;
  EXPECT(&c, "bad order direction", DITATTN_ERR_INVALID_ARGUMENT, "direction");
  c.direction = DITATTN_FORWARD;
  c.order.grid[2] = 5; /* 2·3·5 = 30 != 24 tokens */
  EXPECT2(&c, "order N != grid", DITATTN_ERR_SHAPE_MISMATCH, "x", "grid");
  c.order = good;
  /* In place is not allowed for a gather. */
  c.t[1] = c.t[0];
  EXPECT2(&c, "order in place", DITATTN_ERR_INVALID_ARGUMENT, "y", "x");
  reset(&c);
  free_case(&c);
  assert_int_equal(failures, 0);
  ditattn_context_destroy(ctx);
}

/* The context-free index functions: status only. */
static void order_index_functions(void **state) {
  (void)state;
  ditattn_order_params p = {DITATTN_ORDER_TILE, {2, 3, 4}, {1, 2, 3}};
  int64_t perm[24];
  int32_t pos[72];
  assert_int_equal(ditattn_order_permutation(&p, NULL), DITATTN_ERR_NULL_POINTER);
  assert_int_equal(ditattn_order_positions(&p, NULL), DITATTN_ERR_NULL_POINTER);
  assert_int_equal(ditattn_order_permutation(NULL, perm), DITATTN_ERR_NULL_POINTER);
  assert_int_equal(ditattn_order_positions(NULL, pos), DITATTN_ERR_NULL_POINTER);
  ditattn_order_params bad = p;
  bad.kind = (ditattn_order_kind)-1;
  assert_int_equal(ditattn_order_permutation(&bad, perm), DITATTN_ERR_INVALID_ARGUMENT);
  assert_int_equal(ditattn_order_positions(&bad, pos), DITATTN_ERR_INVALID_ARGUMENT);
  bad = p;
  bad.grid[1] = 0;
  assert_int_equal(ditattn_order_permutation(&bad, perm), DITATTN_ERR_INVALID_ARGUMENT);
  assert_int_equal(ditattn_order_positions(&bad, pos), DITATTN_ERR_INVALID_ARGUMENT);
  bad = p;
  bad.tile[2] = 0;
  assert_int_equal(ditattn_order_permutation(&bad, perm), DITATTN_ERR_INVALID_ARGUMENT);
  assert_int_equal(ditattn_order_positions(&bad, pos), DITATTN_ERR_INVALID_ARGUMENT);
  bad = p;
  bad.grid[0] = bad.grid[1] = bad.grid[2] = INT64_C(1) << 21;
  assert_int_equal(ditattn_order_permutation(&bad, perm), DITATTN_ERR_OVERFLOW);
  assert_int_equal(ditattn_order_permutation(&p, perm), DITATTN_OK);
  assert_int_equal(ditattn_order_positions(&p, pos), DITATTN_OK);
}

/* A failure's message is replaced by "" after the next successful call. */
static void success_clears_the_last_error(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  op_case c;
  make_case(&c, POOL);
  c.block = 0;
  assert_int_equal(c.call(ctx, &c), DITATTN_ERR_INVALID_ARGUMENT);
  assert_true(strlen(ditattn_last_error(ctx)) > 0);
  c.block = 2;
  assert_int_equal(c.call(ctx, &c), DITATTN_OK);
  assert_string_equal(ditattn_last_error(ctx), "");
  free_case(&c);
  ditattn_context_destroy(ctx);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fixtures_are_valid),
      cmocka_unit_test(null_context_is_rejected),
      cmocka_unit_test(every_tensor_defect_is_named),
      cmocka_unit_test(dense_scalar_and_lse_arguments),
      cmocka_unit_test(merge_lse_arguments),
      cmocka_unit_test(pool_block_argument),
      cmocka_unit_test(rope_parameter_arguments),
      cmocka_unit_test(order_parameter_arguments),
      cmocka_unit_test(order_index_functions),
      cmocka_unit_test(success_clears_the_last_error),
  };
  const int rc = cmocka_run_group_tests(tests, NULL, NULL);
  fprintf(stderr, "%d argument checks\n", checks);
  return rc;
}
