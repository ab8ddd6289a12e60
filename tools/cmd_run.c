/* `ditattn run`: one forward pass of an algorithm on .npy inputs. */
#include "algos.h"
#include "cli_args.h"
#include "cli_device.h"
#include "commands.h"
#include "npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void run_help(void) {
  printf("usage: ditattn run --algo %s --q Q.npy --k K.npy --v V.npy -o OUT.npy [options]\n"
         "\n"
         "Runs one attention forward pass. Inputs: float32 ('<f4', or '<f8' converted) C-order\n"
         "arrays [B,H,N,D] or [N,D] (then B = H = 1); OUT has the same rank as Q.\n"
         "\n"
         "options:\n"
         "  --algo NAME         algorithm: %s\n"
         "  --q, --k, --v FILE  inputs (k and v share a shape; q's B, H, D match)\n"
         "  -o, --out FILE      output, float32\n"
         "  --lse FILE          also write the log-sum-exp, [B,H,N] (or [N]), natural log\n"
         "  --scale S           softmax scale (default 1/sqrt(D))\n"
         "  --backend NAME      ref|cpu|cuda|hip (default %s)\n"
         "  --threads T         CPU backend threads (default: OpenMP's)\n"
         "  --grid TxHxW        token grid, for algorithms that use positions (default 1x1xN)\n"
         "  --pos FILE          int32/int64 [N,3]: (t,y,x) of each token in sequence order\n"
         "                      (needs --grid; default: raster order)\n",
         dt_algo_names(), dt_algo_names(), ditattn_backend_name(cli_default_backend()));
  for (int i = 0; dt_algos[i]; i++) {
    if (!dt_algos[i]->options_help[0]) continue;
    printf("\n%s options (%s):\n%s", dt_algos[i]->name, dt_algos[i]->summary,
           dt_algos[i]->options_help);
  }
}

typedef struct run_options {
  const char *q, *k, *v, *out, *lse;
  float scale;
  ditattn_backend backend;
  int threads;
  int64_t grid[3];
  int grid_given;
  const char *pos;
} run_options;

/* Everything that needs freeing, so each exit path is one call. */
typedef struct run_resources {
  dt_npy_array q, k, v, pos;
  float *out, *lse;
  void *algo_state;
  const dt_algo *algo;
  ditattn_context *ctx;
  cli_tensors tensors;
} run_resources;

static void run_release(run_resources *r) {
  if (r->algo && r->algo_state && r->algo->release) r->algo->release(r->algo_state, r->ctx);
  free(r->algo_state);
  cli_tensors_free(&r->tensors);
  ditattn_context_destroy(r->ctx);
  dt_npy_array_free(&r->q);
  dt_npy_array_free(&r->k);
  dt_npy_array_free(&r->v);
  dt_npy_array_free(&r->pos);
  free(r->out);
  free(r->lse);
}

/* [B,H,N,D] of an input file (rank 2 means B = H = 1). */
static int input_shape(const dt_npy_array *a, const char *what, const char *path, int64_t s[4]) {
  if (a->ndim == 4) {
    memcpy(s, a->shape, 4 * sizeof s[0]);
    return 1;
  }
  if (a->ndim == 2) {
    s[0] = s[1] = 1;
    s[2] = a->shape[0];
    s[3] = a->shape[1];
    return 1;
  }
  cli_usage_error("--%s %s: %d dimensions; expected [B,H,N,D] or [N,D]", what, path, a->ndim);
  return 0;
}

static int parse_run_options(int argc, char **argv, run_options *o, run_resources *r) {
  char err[512] = "";
  const char *algo_name = NULL;
  /* The algorithm first: its options may come before --algo. */
  for (int i = 1; i < argc; i++) {
    const char *value;
    if (cli_opt(argc, argv, &i, "--algo", &value, err, sizeof err) > 0) algo_name = value;
  }
  if (!algo_name) return cli_usage_error("run: --algo is required (%s)", dt_algo_names()), 0;
  r->algo = dt_algo_find(algo_name);
  if (!r->algo)
    return cli_usage_error("run: unknown --algo '%s' (%s)", algo_name, dt_algo_names()), 0;
  r->algo_state = calloc(1, r->algo->state_size);
  if (!r->algo_state) return cli_runtime_error("out of memory"), 0;
  if (r->algo->init) r->algo->init(r->algo_state);

  for (int i = 1; i < argc; i++) {
    const char *value = NULL;
    int got;
#define OPTION(name) ((got = cli_opt(argc, argv, &i, name, &value, err, sizeof err)) != 0)
    if (OPTION("--algo")) {
    } else if (OPTION("--q")) {
      o->q = value;
    } else if (OPTION("--k")) {
      o->k = value;
    } else if (OPTION("--v")) {
      o->v = value;
    } else if (OPTION("-o") || OPTION("--out")) {
      o->out = value;
    } else if (OPTION("--lse")) {
      o->lse = value;
    } else if (OPTION("--scale")) {
      if (got > 0 && (!cli_parse_float(value, &o->scale) || o->scale <= 0))
        return cli_usage_error("--scale '%s': expected a number > 0", value), 0;
    } else if (OPTION("--backend")) {
      if (got > 0 && ditattn_backend_parse(value, &o->backend) != DITATTN_OK)
        return cli_usage_error("--backend '%s': expected ref, cpu, cuda or hip", value), 0;
    } else if (OPTION("--threads")) {
      int64_t t;
      if (got > 0 && !cli_parse_i64(value, 0, 4096, &t))
        return cli_usage_error("--threads '%s': expected an integer in [0, 4096]", value), 0;
      if (got > 0) o->threads = (int)t;
    } else if (OPTION("--pos")) {
      o->pos = value;
    } else if (OPTION("--grid")) {
      if (got > 0 && !cli_parse_grid(value, o->grid))
        return cli_usage_error("--grid '%s': expected TxHxW, e.g. 8x32x32", value), 0;
      o->grid_given = 1;
    } else {
      got = r->algo->parse_option
                ? r->algo->parse_option(r->algo_state, argc, argv, &i, err, sizeof err)
                : 0;
      if (got == 0)
        return cli_usage_error("run: unknown option '%s' for --algo %s (see ditattn run --help)",
                               argv[i], r->algo->name),
               0;
    }
#undef OPTION
    if (got < 0) return cli_usage_error("%s", err), 0;
  }
  if (!o->q || !o->k || !o->v) return cli_usage_error("run: --q, --k and --v are required"), 0;
  if (!o->out) return cli_usage_error("run: -o OUT.npy is required"), 0;
  return 1;
}

static int run_main(int argc, char **argv, run_resources *r) {
  run_options o = {0};
  o.backend = cli_default_backend();
  if (!parse_run_options(argc, argv, &o, r)) return 2;

  char err[512];
  const char *paths[3] = {o.q, o.k, o.v};
  dt_npy_array *arrays[3] = {&r->q, &r->k, &r->v};
  int64_t shapes[3][4];
  static const char *const names[3] = {"q", "k", "v"};
  for (int i = 0; i < 3; i++) {
    ditattn_status st = dt_npy_read_f32(paths[i], arrays[i], err, sizeof err);
    if (st != DITATTN_OK)
      return cli_runtime_error("--%s: %s (%s)", names[i], err, ditattn_strerror(st));
    if (!input_shape(arrays[i], names[i], paths[i], shapes[i])) return 2;
  }
  if (r->q.ndim != r->k.ndim || r->q.ndim != r->v.ndim)
    return cli_usage_error("q, k, v have %d, %d, %d dimensions; they must have the same rank",
                           r->q.ndim, r->k.ndim, r->v.ndim);
  if (memcmp(shapes[1], shapes[2], sizeof shapes[1]) != 0)
    return cli_usage_error("k [%lld,%lld,%lld,%lld] and v [%lld,%lld,%lld,%lld] differ in shape",
                           (long long)shapes[1][0], (long long)shapes[1][1],
                           (long long)shapes[1][2], (long long)shapes[1][3],
                           (long long)shapes[2][0], (long long)shapes[2][1],
                           (long long)shapes[2][2], (long long)shapes[2][3]);
  if (shapes[0][0] != shapes[1][0] || shapes[0][1] != shapes[1][1] || shapes[0][3] != shapes[1][3])
    return cli_usage_error(
        "q [%lld,%lld,%lld,%lld] and k [%lld,%lld,%lld,%lld] differ in B, H or D",
        (long long)shapes[0][0], (long long)shapes[0][1], (long long)shapes[0][2],
        (long long)shapes[0][3], (long long)shapes[1][0], (long long)shapes[1][1],
        (long long)shapes[1][2], (long long)shapes[1][3]);
  const int64_t B = shapes[0][0], H = shapes[0][1], N = shapes[0][2], Nk = shapes[1][2],
                D = shapes[0][3];

  dt_algo_problem p = {.B = B, .H = H, .N = N, .D = D, .scale = o.scale, .input_rank = r->q.ndim};
  if (o.grid_given) {
    if (o.grid[0] * o.grid[1] * o.grid[2] != N)
      return cli_usage_error("--grid %lldx%lldx%lld has %lld tokens but N = %lld",
                             (long long)o.grid[0], (long long)o.grid[1], (long long)o.grid[2],
                             (long long)(o.grid[0] * o.grid[1] * o.grid[2]), (long long)N);
    memcpy(p.grid, o.grid, sizeof p.grid);
  } else {
    p.grid[0] = p.grid[1] = 1;
    p.grid[2] = N;
  }
  if (o.pos) {
    if (!o.grid_given) return cli_usage_error("--pos needs --grid TxHxW");
    ditattn_status st = dt_npy_read_i32(o.pos, &r->pos, err, sizeof err);
    if (st != DITATTN_OK) return cli_runtime_error("--pos: %s", err);
    if (r->pos.ndim != 2 || r->pos.shape[0] != N || r->pos.shape[1] != 3)
      return cli_usage_error("--pos %s: expected shape [%lld, 3]", o.pos, (long long)N);
    const int32_t *pos = r->pos.data;
    for (int64_t i = 0; i < 3 * N; i++)
      if (pos[i] < 0 || pos[i] >= p.grid[i % 3])
        return cli_usage_error("--pos %s: token %lld has coordinate %d outside the grid", o.pos,
                               (long long)(i / 3), (int)pos[i]);
    p.pos = pos;
  }

  if (cli_open_context(o.backend, o.threads, &r->ctx) != DITATTN_OK) return 1;
  if (r->algo->prepare) {
    ditattn_status st = r->algo->prepare(r->algo_state, &p, r->ctx, err, sizeof err);
    if (st != DITATTN_OK) return cli_usage_error("--algo %s: %s", r->algo->name, err);
  }
  if (cli_tensors_upload(r->ctx, B, H, N, Nk, D, r->q.data, r->k.data, r->v.data, o.lse != NULL,
                         &r->tensors) != DITATTN_OK ||
      cli_tensors_poison(&r->tensors) != DITATTN_OK)
    return 1;
  dt_algo_io io = {r->ctx,        &r->tensors.q,   &r->tensors.k,
                   &r->tensors.v, &r->tensors.out, r->tensors.lse_mem};
  ditattn_status st = r->algo->run(r->algo_state, &p, &io);
  if (st != DITATTN_OK)
    return cli_runtime_error("%s forward on backend %s failed: %s", r->algo->name,
                             ditattn_backend_name(o.backend), cli_lib_error(r->ctx, st));
  r->out = malloc(r->tensors.q_bytes);
  r->lse = o.lse ? malloc(r->tensors.lse_bytes) : NULL;
  if (!r->out || (o.lse && !r->lse)) return cli_runtime_error("out of memory");
  if (cli_tensors_download(&r->tensors, r->out, r->lse) != DITATTN_OK) return 1;

  int64_t out_shape[4] = {B, H, N, D};
  int rank4 = r->q.ndim == 4;
  st = dt_npy_write_f32(o.out, rank4 ? 4 : 2, rank4 ? out_shape : out_shape + 2, r->out, err,
                        sizeof err);
  if (st != DITATTN_OK) return cli_runtime_error("-o: %s", err);
  if (o.lse) {
    st = dt_npy_write_f32(o.lse, rank4 ? 3 : 1, rank4 ? out_shape : out_shape + 2, r->lse, err,
                          sizeof err);
    if (st != DITATTN_OK) return cli_runtime_error("--lse: %s", err);
  }
  if (r->algo->write_extras) {
    st = r->algo->write_extras(r->algo_state, &p, err, sizeof err);
    if (st != DITATTN_OK) return cli_runtime_error("--algo %s: %s", r->algo->name, err);
  }
  return 0;
}

int cmd_run(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      run_help();
      return 0;
    }
  run_resources r;
  memset(&r, 0, sizeof r);
  int rc = run_main(argc, argv, &r);
  run_release(&r);
  return rc;
}
