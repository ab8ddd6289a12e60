/* `ditattn bench`: times dense attention against the sparse algorithms on
 * video-like inputs and reports ms, GFLOP/s (with FLOPs per branch),
 * speedup and error vs dense. */
#include "algos.h"
#include "bench_inputs.h"
#include "cli_args.h"
#include "cli_device.h"
#include "commands.h"
#include "npy.h"

#ifdef DITATTN_HAVE_DIST
#include "dist/dist_bench.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ALGOS = 16, MAX_REPEAT = 1000 };

static const int64_t default_grid[3] = {8, 32, 32};
/* The ref backend is scalar double-precision C: 8192 tokens would take
 * minutes of dense attention, so its default is 2x32x32 (2048 tokens,
 * about 20 s on one core). */
static const int64_t default_grid_ref[3] = {2, 32, 32};

static void bench_help(void) {
  printf("usage: ditattn bench [options]\n"
         "\n"
         "Times dense attention against sparse attention on synthetic video-like inputs\n"
         "(smooth functions of (t,y,x) plus noise, 3D RoPE, Morton token order) and prints\n"
         "per algorithm: its FLOPs (spec cost model, also per branch), median ms, GFLOP/s,\n"
         "speedup vs dense and relative error ||o - o_dense|| / ||o_dense||. Dense always\n"
         "runs as the baseline (unless --no-baseline). Progress goes to stderr.\n"
         "\n"
         "options:\n"
         "  --grid TxHxW        video token grid (default 8x32x32 = 8192 tokens; 2x32x32\n"
         "                      with the ref backend, which is slow)\n"
         "  --heads H           heads (default 2)\n"
         "  --dim D             head dimension (default 64)\n"
         "  --batch B           batch (default 1)\n"
         "  --backend NAME      ref|cpu|cuda|hip (default %s)\n"
         "  --algo A,B,...      algorithms, from %s (default dense,llsa,ropeslr);\n"
         "                      dense is added as the baseline when not listed, and\n"
         "                      llsa when ropeslr is (dense vs LLSA vs RoPeSLR)\n"
         "  --no-baseline       only the listed algorithms, nothing compared: speedup and\n"
         "                      rel.err print '-'\n"
         "  --repeat R          timed runs per algorithm; the median is reported\n"
         "                      (default 5; 3 with ref)\n"
         "  --threads T         CPU backend threads (default: OpenMP's)\n"
         "  --seed S            input seed (default 1)\n"
         "  --json              machine-readable results on stdout instead of the table\n"
         "  --save-inputs P     also write the inputs to Pq.npy, Pk.npy, Pv.npy [B,H,N,D]\n"
         "  --dist ...          distributed (MPI) benchmark: the rest goes to the dist bench\n"
         "\n"
         "An option of several selected algorithms (--block, --topk) goes to each one that\n"
         "accepts its value (a note names those that do not).\n",
         ditattn_backend_name(cli_default_backend()), dt_algo_names());
  for (int i = 0; dt_algos[i]; i++) {
    if (!dt_algos[i]->options_help[0]) continue;
    printf("\n%s options (%s):\n%s", dt_algos[i]->name, dt_algos[i]->summary,
           dt_algos[i]->options_help);
  }
}

typedef struct algo_result {
  const dt_algo *algo;
  void *state;
  char params[128];
  char note[512]; /* the algorithm's note on its inputs, "" if none */
  dt_algo_branch branches[DT_ALGO_MAX_BRANCHES];
  int nbranches;
  double flops, ms_median, ms_min;
  double rel_err; /* NAN when dense did not run */
  int ok;
  char error[512];
} algo_result;

typedef struct bench_options {
  bench_shape shape;
  int grid_given;
  ditattn_backend backend;
  int repeat, threads, json;
  int no_baseline;         /* --no-baseline: dense is not added, nothing is compared */
  const char *save_inputs; /* prefix, or NULL */
  uint64_t seed;
} bench_options;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double rel_err(const float *a, const float *ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)ref[i];
    num += d * d;
    den += (double)ref[i] * (double)ref[i];
  }
  double e = sqrt(num / (den > 0 ? den : 1));
  return isfinite(e) ? e : INFINITY;
}

/* Selected algorithms in table order (dense first, as the reference). Unless
 * no_baseline, dense is added when not listed, and LLSA when RoPeSLR is. */
static int parse_algo_list(const char *list, int no_baseline, algo_result *res, int *count) {
  int want[MAX_ALGOS] = {0};
  char buf[256];
  if (strlen(list) >= sizeof buf) return 0;
  strcpy(buf, list);
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    int found = 0;
    for (int i = 0; dt_algos[i] && i < MAX_ALGOS; i++)
      if (strcmp(dt_algos[i]->name, tok) == 0) want[i] = found = 1;
    if (!found)
      return cli_usage_error("--algo: unknown algorithm '%s' (%s)", tok, dt_algo_names()), 0;
  }
  /* RoPeSLR's comparison is dense vs LLSA vs RoPeSLR (issue 3), so LLSA
   * joins it as the sparse baseline. */
  int with_ropeslr = 0;
  for (int i = 0; dt_algos[i] && i < MAX_ALGOS; i++)
    if (want[i] && strcmp(dt_algos[i]->name, "ropeslr") == 0) with_ropeslr = 1;
  for (int i = 0; dt_algos[i] && i < MAX_ALGOS && !no_baseline; i++)
    if (strcmp(dt_algos[i]->name, "dense") == 0 ||
        (with_ropeslr && strcmp(dt_algos[i]->name, "llsa") == 0))
      want[i] = 1;
  *count = 0;
  for (int i = 0; dt_algos[i] && i < MAX_ALGOS; i++)
    if (want[i]) res[(*count)++].algo = dt_algos[i];
  return *count > 0;
}

/* Parses an integer option's value; -2 (after printing why) when it is bad. */
static int int_value(int got, const char *name, const char *value, int64_t lo, int64_t hi,
                     int64_t *n) {
  if (got <= 0) return got;
  if (cli_parse_i64(value, lo, hi, n)) return 1;
  cli_usage_error("%s '%s': expected an integer in [%lld, %lld]", name, value, (long long)lo,
                  (long long)hi);
  return -2;
}

static int parse_bench_options(int argc, char **argv, bench_options *o, algo_result *res,
                               int *nres) {
  char err[512] = "";
  const char *algo_list = "dense,llsa,ropeslr";
  for (int i = 1; i < argc; i++) {
    const char *value;
    if (cli_opt(argc, argv, &i, "--algo", &value, err, sizeof err) > 0) algo_list = value;
    if (strcmp(argv[i], "--no-baseline") == 0) o->no_baseline = 1;
  }
  if (!parse_algo_list(algo_list, o->no_baseline, res, nres)) return 0;
  for (int a = 0; a < *nres; a++) {
    res[a].state = calloc(1, res[a].algo->state_size);
    if (!res[a].state) return cli_runtime_error("out of memory"), 0;
    if (res[a].algo->init) res[a].algo->init(res[a].state);
  }
  for (int i = 1; i < argc; i++) {
    const char *value = NULL;
    int got;
    int64_t n;
#define OPTION(name) ((got = cli_opt(argc, argv, &i, name, &value, err, sizeof err)) != 0)
    if (OPTION("--algo")) {
    } else if (OPTION("--grid")) {
      if (got > 0 && !cli_parse_grid(value, o->shape.grid))
        return cli_usage_error("--grid '%s': expected TxHxW, e.g. 8x32x32", value), 0;
      o->grid_given = 1;
    } else if (OPTION("--heads")) {
      if ((got = int_value(got, "--heads", value, 1, 4096, &n)) > 0) o->shape.H = n;
    } else if (OPTION("--dim")) {
      if ((got = int_value(got, "--dim", value, 2, 4096, &n)) > 0) o->shape.D = n;
    } else if (OPTION("--batch")) {
      if ((got = int_value(got, "--batch", value, 1, 4096, &n)) > 0) o->shape.B = n;
    } else if (OPTION("--repeat")) {
      if ((got = int_value(got, "--repeat", value, 1, MAX_REPEAT, &n)) > 0) o->repeat = (int)n;
    } else if (OPTION("--threads")) {
      if ((got = int_value(got, "--threads", value, 0, 4096, &n)) > 0) o->threads = (int)n;
    } else if (OPTION("--seed")) {
      if ((got = int_value(got, "--seed", value, 0, INT64_MAX, &n)) > 0) o->seed = (uint64_t)n;
    } else if (OPTION("--backend")) {
      if (got > 0 && ditattn_backend_parse(value, &o->backend) != DITATTN_OK)
        return cli_usage_error("--backend '%s': expected ref, cpu, cuda or hip", value), 0;
    } else if (OPTION("--save-inputs")) {
      o->save_inputs = value;
    } else if (strcmp(argv[i], "--json") == 0) {
      o->json = 1;
      got = 1;
    } else if (strcmp(argv[i], "--no-baseline") == 0) {
      got = 1;
    } else {
      /* Offered to every selected algorithm (they may share a name, e.g.
       * --block). A value one rejects but another takes (--topk 8,8 is
       * LLSA's, --topk 8 both's) is only a note; rejected by all, an error. */
      int last = i, rejected = 0;
      char why[MAX_ALGOS][512];
      const dt_algo *rejecter[MAX_ALGOS];
      got = 0;
      for (int a = 0; a < *nres; a++) {
        if (!res[a].algo->parse_option) continue;
        int j = i;
        int r = res[a].algo->parse_option(res[a].state, argc, argv, &j, why[rejected],
                                          sizeof why[rejected]);
        if (r < 0) rejecter[rejected++] = res[a].algo;
        if (r > 0) {
          got = 1;
          if (j > last) last = j;
        }
      }
      if (rejected && !got) return cli_usage_error("%s", why[0]), 0;
      for (int a = 0; a < rejected; a++)
        fprintf(stderr, "bench: note: %s keeps its default (%s)\n", rejecter[a]->name, why[a]);
      if (!got)
        return cli_usage_error("bench: unknown option '%s' (not a bench option, nor one of the "
                               "selected algorithms'; see ditattn bench --help)",
                               argv[i]),
               0;
      i = last;
    }
#undef OPTION
    if (got == -2) return 0;
    if (got < 0) return cli_usage_error("%s", err), 0;
  }
  return 1;
}

/* Runs one algorithm `repeat` times (after a warm-up unless ref); leaves its
 * output in out_host. */
static void time_algo(const bench_options *o, const dt_algo_problem *p, ditattn_context *ctx,
                      const float *q, const float *k, const float *v, float *out_host,
                      algo_result *r) {
  cli_tensors t;
  char err[512] = "";
  if (r->algo->prepare && r->algo->prepare(r->state, p, ctx, err, sizeof err) != DITATTN_OK) {
    snprintf(r->error, sizeof r->error, "%s", err);
    return;
  }
  if (r->algo->describe) r->algo->describe(r->state, r->params, sizeof r->params);
  if (r->algo->note) r->algo->note(r->state, r->note, sizeof r->note);
  r->flops = r->algo->flops(r->state, p); /* after prepare: options resolved */
  r->nbranches = r->algo->branch_flops ? r->algo->branch_flops(r->state, p, r->branches) : 0;
  if (cli_tensors_upload(ctx, p->B, p->H, p->N, p->N, p->D, q, k, v, 0, &t) != DITATTN_OK) {
    snprintf(r->error, sizeof r->error, "upload failed: %s", ditattn_last_error(ctx));
    return;
  }
  dt_algo_io io = {ctx, &t.q, &t.k, &t.v, &t.out, NULL};
  double ms[MAX_REPEAT];
  ditattn_status st = cli_tensors_poison(&t);
  const int warmup = o->backend != DITATTN_BACKEND_REF;
  for (int rep = -warmup; rep < o->repeat && st == DITATTN_OK; rep++) {
    double t0 = cli_now();
    st = r->algo->run(r->state, p, &io);
    if (st == DITATTN_OK) st = ditattn_synchronize(ctx);
    double elapsed = (cli_now() - t0) * 1e3;
    if (st != DITATTN_OK) break;
    if (rep >= 0) ms[rep] = elapsed;
    fprintf(stderr, "bench: %s %s %d/%d: %.2f ms\n", r->algo->name, rep < 0 ? "warm-up" : "run",
            rep < 0 ? 1 : rep + 1, rep < 0 ? 1 : o->repeat, elapsed);
  }
  if (st != DITATTN_OK) {
    snprintf(r->error, sizeof r->error, "%s", cli_lib_error(ctx, st));
  } else if (cli_tensors_download(&t, out_host, NULL) != DITATTN_OK) {
    snprintf(r->error, sizeof r->error, "download failed");
  } else {
    qsort(ms, (size_t)o->repeat, sizeof ms[0], cmp_double);
    r->ms_min = ms[0];
    r->ms_median =
        o->repeat % 2 ? ms[o->repeat / 2] : 0.5 * (ms[o->repeat / 2 - 1] + ms[o->repeat / 2]);
    r->ok = 1;
  }
  cli_tensors_free(&t);
}

static void print_json_string(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      printf("\\%c", c);
    else if (c < 0x20)
      printf("\\u%04x", c);
    else
      putchar(c);
  }
  putchar('"');
}

static void print_json_number(double x) {
  if (isfinite(x))
    printf("%.12g", x);
  else
    printf("null");
}

static void report_json(const bench_options *o, const dt_algo_problem *p, const char *note,
                        const algo_result *res, int nres, const algo_result *dense) {
  printf("{\n  \"tool\": \"ditattn bench\",\n  \"version\": \"%s\",\n", ditattn_version());
  printf("  \"backend\": \"%s\",\n  \"threads\": %d,\n", ditattn_backend_name(o->backend),
         o->threads);
  printf("  \"grid\": [%lld, %lld, %lld],\n", (long long)p->grid[0], (long long)p->grid[1],
         (long long)p->grid[2]);
  printf("  \"batch\": %lld,\n  \"heads\": %lld,\n  \"tokens\": %lld,\n  \"dim\": %lld,\n",
         (long long)p->B, (long long)p->H, (long long)p->N, (long long)p->D);
  printf("  \"repeat\": %d,\n  \"seed\": %llu,\n  \"inputs\": ", o->repeat,
         (unsigned long long)o->seed);
  print_json_string(note);
  printf(",\n  \"results\": [\n");
  for (int a = 0; a < nres; a++) {
    const algo_result *r = &res[a];
    printf("    {\"algo\": \"%s\", \"params\": ", r->algo->name);
    print_json_string(r->params);
    printf(", \"ok\": %s, \"ms\": ", r->ok ? "true" : "false");
    print_json_number(r->ok ? r->ms_median : NAN);
    printf(", \"ms_min\": ");
    print_json_number(r->ok ? r->ms_min : NAN);
    printf(", \"flops\": ");
    print_json_number(r->flops);
    printf(", \"flops_branches\": ");
    if (r->nbranches == 0) printf("null");
    for (int b = 0; b < r->nbranches; b++) {
      printf("%s\"%s\": ", b ? ", " : "{", r->branches[b].name);
      print_json_number(r->branches[b].flops);
    }
    if (r->nbranches > 0) printf("}");
    printf(", \"note\": ");
    if (r->note[0])
      print_json_string(r->note);
    else
      printf("null");
    printf(", \"gflops\": ");
    print_json_number(r->ok ? r->flops / (r->ms_median * 1e6) : NAN);
    printf(", \"speedup\": ");
    print_json_number(r->ok && dense && dense->ok ? dense->ms_median / r->ms_median : NAN);
    printf(", \"rel_err\": ");
    print_json_number(r->rel_err);
    printf(", \"error\": ");
    if (r->ok)
      printf("null");
    else
      print_json_string(r->error);
    printf("}%s\n", a + 1 < nres ? "," : "");
  }
  printf("  ]\n}\n");
}

static void report_table(const bench_options *o, const dt_algo_problem *p, const char *note,
                         const algo_result *res, int nres, const algo_result *dense) {
  printf("ditattn bench — backend %s", ditattn_backend_name(o->backend));
  if (o->threads > 0) printf(", %d threads", o->threads);
  printf("\nproblem: B=%lld H=%lld N=%lld (grid %lldx%lldx%lld) D=%lld, f32, median of %d\n",
         (long long)p->B, (long long)p->H, (long long)p->N, (long long)p->grid[0],
         (long long)p->grid[1], (long long)p->grid[2], (long long)p->D, o->repeat);
  printf("inputs: %s\n", note);
  if (o->backend == DITATTN_BACKEND_REF && !o->grid_given)
    printf("note: ref backend (scalar reference code): smaller default grid 2x32x32; pass "
           "--grid to change it\n");
  if (!dense) printf("note: no dense baseline (--no-baseline): no speedup, no rel.err\n");
  printf("\n%-8s %-24s %10s %12s %10s %9s %11s\n", "algo", "params", "GFLOP", "ms", "GFLOP/s",
         "speedup", "rel.err");
  for (int a = 0; a < nres; a++) {
    const algo_result *r = &res[a];
    if (!r->ok) {
      printf("%-8s %-24s FAILED: %s\n", r->algo->name, r->params[0] ? r->params : "-", r->error);
      continue;
    }
    char speedup[32] = "-", err[32] = "-";
    if (dense && dense->ok)
      snprintf(speedup, sizeof speedup, "%.2fx", dense->ms_median / r->ms_median);
    if (!isnan(r->rel_err)) snprintf(err, sizeof err, "%.3e", r->rel_err);
    printf("%-8s %-24s %10.3f %12.3f %10.2f %9s %11s\n", r->algo->name,
           r->params[0] ? r->params : "-", r->flops * 1e-9, r->ms_median,
           r->flops / (r->ms_median * 1e6), speedup, err);
    /* One branch is the whole count: rows only for a real split. */
    for (int b = 0; r->nbranches > 1 && b < r->nbranches; b++)
      printf("  %-31s %10.3f\n", r->branches[b].name, r->branches[b].flops * 1e-9);
  }
  for (int a = 0; a < nres; a++)
    if (res[a].ok && res[a].note[0]) printf("\nnote: %s: %s", res[a].algo->name, res[a].note);
  printf("\n\nGFLOP: the spec's FLOP count of one forward (llsa.md §6, ropeslr.md §6 plus 2ND^2\n"
         "for the W projection) over all heads, indented rows per branch; GFLOP/s divides it\n"
         "by the median time. speedup = dense ms / algo ms; rel.err = ||o - o_dense|| / "
         "||o_dense||.\n");
}

static int save_inputs(const bench_options *o, const float *q, const float *k, const float *v) {
  const float *data[3] = {q, k, v};
  const int64_t shape[4] = {o->shape.B, o->shape.H,
                            o->shape.grid[0] * o->shape.grid[1] * o->shape.grid[2], o->shape.D};
  for (int i = 0; i < 3; i++) {
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s%c.npy", o->save_inputs, "qkv"[i]);
    if (dt_npy_write_f32(path, 4, shape, data[i], err, sizeof err) != DITATTN_OK)
      return cli_runtime_error("--save-inputs: %s", err);
    fprintf(stderr, "bench: wrote %s\n", path);
  }
  return 0;
}

static int bench_dist(int argc, char **argv) {
#ifdef DITATTN_HAVE_DIST
  /* The dist bench gets the bench arguments without --dist. */
  char **args = malloc((size_t)(argc + 1) * sizeof *args);
  if (!args) return cli_runtime_error("out of memory");
  int n = 0;
  for (int i = 0; i < argc; i++)
    if (strcmp(argv[i], "--dist") != 0) args[n++] = argv[i];
  args[n] = NULL;
  int rc = dt_dist_bench_main(n, args);
  free(args);
  return rc;
#else
  (void)argc;
  (void)argv;
  return cli_runtime_error("bench --dist: this build has no MPI layer (configure with MPI "
                           "found and DITATTN_WITH_MPI=ON)");
#endif
}

int cmd_bench(int argc, char **argv) {
  /* --dist first: `bench --dist --help` is the dist bench's help. */
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--dist") == 0) return bench_dist(argc, argv);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      bench_help();
      return 0;
    }
  }

  bench_options o = {
      .shape = {.B = 1, .H = 2, .D = 64}, .backend = cli_default_backend(), .repeat = 0, .seed = 1};
  algo_result res[MAX_ALGOS];
  memset(res, 0, sizeof res);
  int nres = 0, rc = 0;
  ditattn_context *ctx = NULL;
  float *q = NULL, *k = NULL, *v = NULL, *out = NULL, *dense_out = NULL;
  int32_t *pos = NULL;
  if (!parse_bench_options(argc, argv, &o, res, &nres)) {
    rc = 2;
    goto done;
  }
  if (!o.grid_given)
    memcpy(o.shape.grid, o.backend == DITATTN_BACKEND_REF ? default_grid_ref : default_grid,
           sizeof o.shape.grid);
  if (o.repeat == 0) o.repeat = o.backend == DITATTN_BACKEND_REF ? 3 : 5;
  if (o.backend == DITATTN_BACKEND_REF && !o.grid_given)
    fprintf(stderr, "bench: note: ref backend: default grid 2x32x32 (the ref code is slow; "
                    "pass --grid to change it)\n");

  /* The context first: an unusable backend fails before inputs are made. */
  if (cli_open_context(o.backend, o.threads, &ctx) != DITATTN_OK) {
    rc = 1;
    goto done;
  }
  const int64_t N = o.shape.grid[0] * o.shape.grid[1] * o.shape.grid[2];
  const double elems = (double)o.shape.B * (double)o.shape.H * (double)N * (double)o.shape.D;
  if (N > (INT64_C(1) << 31) || elems > 4e9) {
    rc = cli_usage_error("bench: problem too large (%lld tokens, %.3g elements)", (long long)N,
                         elems);
    goto done;
  }
  const size_t count = (size_t)elems;
  q = malloc(count * sizeof *q);
  k = malloc(count * sizeof *k);
  v = malloc(count * sizeof *v);
  out = malloc(count * sizeof *out);
  dense_out = malloc(count * sizeof *dense_out);
  pos = malloc((size_t)N * 3 * sizeof *pos);
  if (!q || !k || !v || !out || !dense_out || !pos) {
    rc = cli_runtime_error("out of memory for %zu floats per tensor", count);
    goto done;
  }
  char note[600];
  fprintf(stderr, "bench: generating inputs B=%lld H=%lld grid %lldx%lldx%lld D=%lld...\n",
          (long long)o.shape.B, (long long)o.shape.H, (long long)o.shape.grid[0],
          (long long)o.shape.grid[1], (long long)o.shape.grid[2], (long long)o.shape.D);
  if (bench_make_inputs(&o.shape, o.seed, q, k, v, pos, note, sizeof note) != DITATTN_OK) {
    rc = cli_runtime_error("generating inputs: %s", note);
    goto done;
  }
  if (o.save_inputs && save_inputs(&o, q, k, v) != 0) {
    rc = 1;
    goto done;
  }
  dt_algo_problem p = {.B = o.shape.B,
                       .H = o.shape.H,
                       .N = N,
                       .D = o.shape.D,
                       .grid = {o.shape.grid[0], o.shape.grid[1], o.shape.grid[2]},
                       .pos = pos,
                       .scale = 0.0f,
                       .input_rank = 4,
                       .is_bench = 1};
  const algo_result *dense = NULL;
  for (int a = 0; a < nres; a++) {
    algo_result *r = &res[a];
    r->rel_err = NAN;
    fprintf(stderr, "bench: %s on %s...\n", r->algo->name, ditattn_backend_name(o.backend));
    int is_dense = strcmp(r->algo->name, "dense") == 0;
    time_algo(&o, &p, ctx, q, k, v, is_dense ? dense_out : out, r);
    if (!r->ok) {
      fprintf(stderr, "ditattn: error: bench: %s: %s\n", r->algo->name, r->error);
      rc = 1;
      continue;
    }
    if (is_dense && !o.no_baseline) {
      dense = r;
      r->rel_err = 0.0;
    } else if (dense && dense->ok) {
      r->rel_err = rel_err(out, dense_out, count);
    }
  }
  if (o.json)
    report_json(&o, &p, note, res, nres, dense);
  else
    report_table(&o, &p, note, res, nres, dense);
done:
  for (int a = 0; a < nres; a++) {
    if (res[a].state && res[a].algo->release) res[a].algo->release(res[a].state, ctx);
    free(res[a].state);
  }
  ditattn_context_destroy(ctx);
  free(q);
  free(k);
  free(v);
  free(out);
  free(dense_out);
  free(pos);
  return rc;
}
