/* `ditattn verify`; see verify_cmd.h and verify/README.md. */
#include "verify_cmd.h"

#include "cases.h"
#include "verify_args.h"
#include "verify_tensor.h"
#include "vjson.h"

#include "tools/npy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SETS 16

typedef struct options {
  const char *golden, *filter, *backend;
  const char *sets[MAX_SETS];
  int n_sets, require_all;
  double tol_scale;
  long sweep, only;
  uint64_t seed;
} options;

static void usage(FILE *f) {
  fprintf(f, "usage: ditattn verify --golden DIR [--backend NAME] [--filter SUBSTR]\n"
             "                      [--tol-scale X] [--set key=value ...] [--require-all]\n"
             "       ditattn verify --sweep N [--seed S] [--only I] [--backend NAME]\n"
             "--golden: run every case of DIR/manifest.json on the backend (default ref) and\n"
             "  compare with the stored outputs (f32: relative norm error <= tol x tol-scale;\n"
             "  int32 exact). --set overrides a case argument, e.g. --set pad=3 --set bnhd=1\n"
             "  reruns the cases with strided layouts. Unsupported ops are reported (failures\n"
             "  with --require-all).\n"
             "--sweep: N random cases per op; every compiled and available backend vs ref on\n"
             "  the same inputs. A failure prints the seed and --only index that reproduce it.\n");
}

static int parse(int argc, char **argv, options *o) {
  memset(o, 0, sizeof *o);
  o->tol_scale = 1.0;
  o->only = -1;
  o->seed = (uint64_t)time(NULL);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    }
    if (strcmp(a, "--require-all") == 0) {
      o->require_all = 1;
      continue;
    }
    if (!v) {
      fprintf(stderr, "ditattn: error: %s needs a value\n", a);
      return 2;
    }
    i++;
    if (strcmp(a, "--golden") == 0)
      o->golden = v;
    else if (strcmp(a, "--backend") == 0)
      o->backend = v;
    else if (strcmp(a, "--filter") == 0)
      o->filter = v;
    else if (strcmp(a, "--tol-scale") == 0)
      o->tol_scale = strtod(v, NULL);
    else if (strcmp(a, "--sweep") == 0)
      o->sweep = strtol(v, NULL, 10);
    else if (strcmp(a, "--only") == 0)
      o->only = strtol(v, NULL, 10);
    else if (strcmp(a, "--seed") == 0)
      o->seed = strtoull(v, NULL, 10);
    else if (strcmp(a, "--set") == 0 && o->n_sets < MAX_SETS && strchr(v, '='))
      o->sets[o->n_sets++] = v;
    else {
      fprintf(stderr, "ditattn: error: unknown or bad option %s %s\n", a, v);
      return 2;
    }
  }
  if (!o->golden == !o->sweep || !(o->tol_scale > 0)) {
    usage(stderr);
    return 2;
  }
  return 0;
}

/* "B=1 K=2,2" plus overrides -> va_args over the words in buf. */
static int split_args(const char *text, const options *o, char *buf, size_t size, va_args *a) {
  char *words[VA_MAX_ARGS];
  int n = 0;
  snprintf(buf, size, "%s", text);
  for (char *w = strtok(buf, " "); w && n < VA_MAX_ARGS; w = strtok(NULL, " ")) words[n++] = w;
  static char sets[MAX_SETS][128];
  for (int i = 0; o && i < o->n_sets && n < VA_MAX_ARGS; i++) {
    snprintf(sets[i], sizeof sets[i], "%s", o->sets[i]);
    words[n++] = sets[i];
  }
  return va_parse(a, n, words);
}

static int open_backend(const char *name, ditattn_context **ctx) {
  ditattn_backend b;
  if (ditattn_backend_parse(name, &b) != DITATTN_OK) {
    fprintf(stderr, "ditattn: error: unknown backend %s\n", name);
    return 2;
  }
  ditattn_status st = ditattn_context_create(b, ctx);
  if (st != DITATTN_OK) {
    fprintf(stderr, "ditattn: error: backend %s: %s\n", name, ditattn_strerror(st));
    return 2;
  }
  return 0;
}

/* Compares every expected output; prints one line per mismatch. */
static int compare_outputs(const char *label, const vc_list *got, const vc_list *want, double tol,
                           double *worst) {
  int ok = 1;
  for (int i = 0; i < want->n; i++) {
    const vc_array *w = &want->a[i], *g = vc_find(got, w->name);
    const double err = g ? vc_rel_err(g, w) : INFINITY;
    if (err > *worst && !w->is_int) *worst = err;
    if (!(err <= (w->is_int ? 0.0 : tol))) {
      printf("FAIL %s: %s %s (tol %.1e)\n", label, w->name,
             !g          ? "missing"
             : w->is_int ? "differs"
                         : "rel err too large",
             tol);
      if (g && !w->is_int) printf("     %s rel err %.3e\n", w->name, err);
      ok = 0;
    }
  }
  return ok;
}

static char *read_text(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
    free(s);
    s = NULL;
  }
  fclose(f);
  if (s) s[n] = '\0', *len = (size_t)n;
  return s;
}

/* Loads the .npy files of a manifest member ({"name": "file.npy", ...}). */
static int load_arrays(const char *dir, const vj *files, vc_list *out) {
  for (size_t i = 0; files && i < files->count; i++) {
    const vj *f = &files->items[i];
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, f->string ? f->string : "");
    dt_npy_header hdr;
    if (dt_npy_read_header(path, &hdr, err, sizeof err) != DITATTN_OK) {
      fprintf(stderr, "ditattn: error: %s\n", err);
      return 2;
    }
    const int is_int = hdr.dtype == DT_NPY_I32 || hdr.dtype == DT_NPY_I64;
    dt_npy_array a;
    ditattn_status st = is_int ? dt_npy_read_i32(path, &a, err, sizeof err)
                               : dt_npy_read_f32(path, &a, err, sizeof err);
    if (st != DITATTN_OK || a.ndim > 4) {
      fprintf(stderr, "ditattn: error: %s\n", st != DITATTN_OK ? err : "more than 4 dimensions");
      dt_npy_array_free(&a);
      return 2;
    }
    int rc = vc_append(out, f->key, is_int, a.ndim, a.shape, a.data);
    dt_npy_array_free(&a);
    if (rc) return 2;
  }
  return 0;
}

static int run_golden(const options *o) {
  char path[4096], err[256];
  snprintf(path, sizeof path, "%s/manifest.json", o->golden);
  size_t len = 0;
  char *text = read_text(path, &len);
  vj *m = text ? vj_parse(text, len, err, sizeof err) : NULL;
  free(text);
  const vj *cases = vj_get(m, "cases");
  if (!cases || cases->type != VJ_ARRAY) {
    fprintf(stderr, "ditattn: error: %s: %s\n", path, text ? err : "cannot read, or no cases");
    vj_free(m);
    return 2;
  }
  ditattn_context *ctx = NULL;
  const char *backend = o->backend ? o->backend : "ref";
  if (open_backend(backend, &ctx)) {
    vj_free(m);
    return 2;
  }
  const vj *version = vj_get(m, "version");
  printf("verify: golden suite %s (version %g), %zu cases, backend %s\n", o->golden,
         version ? version->number : -1.0, cases->count, backend);
  int passed = 0, failed = 0, unsupported = 0, rc = 0;
  for (size_t i = 0; i < cases->count && rc != 2; i++) {
    const vj *c = &cases->items[i];
    const char *name = vj_str(c, "name"), *op = vj_str(c, "op"), *args_text = vj_str(c, "args");
    const char *sub = vj_str(c, "dir");
    const vj *tol = vj_get(c, "tol");
    if (!name || !op || !args_text || !sub || !tol) {
      fprintf(stderr, "ditattn: error: case %zu lacks name/op/args/dir/tol\n", i);
      rc = 2;
      break;
    }
    if (o->filter && !strstr(name, o->filter)) continue;
    char dir[4096], buf[1024];
    snprintf(dir, sizeof dir, "%s/%s", o->golden, sub);
    vc_list inputs = {0}, expected = {0}, used = {0}, outputs = {0};
    va_args args;
    if (split_args(args_text, o, buf, sizeof buf, &args) ||
        load_arrays(dir, vj_get(c, "inputs"), &inputs) ||
        load_arrays(dir, vj_get(c, "outputs"), &expected)) {
      rc = 2;
    } else {
      vc_source src = {0, 0, &inputs, ""};
      ditattn_status st;
      int run = vc_run(ctx, op, &args, &src, &used, &outputs, &st);
      double worst = 0.0;
      if (run == VC_STATUS && st == DITATTN_ERR_UNSUPPORTED) {
        unsupported++;
        printf("UNSUPPORTED %-26s %s\n", name, src.error);
      } else if (run != VC_OK) {
        failed++;
        printf("FAIL %-26s %s: %s\n", name, ditattn_strerror(st), src.error);
      } else if (compare_outputs(name, &outputs, &expected, tol->number * o->tol_scale, &worst)) {
        passed++;
        printf("ok   %-26s worst rel err %.2e\n", name, worst);
      } else {
        failed++;
      }
    }
    vc_list_free(&inputs), vc_list_free(&expected), vc_list_free(&used), vc_list_free(&outputs);
  }
  printf("verify: %d passed, %d failed, %d unsupported (backend %s)\n", passed, failed, unsupported,
         backend);
  ditattn_context_destroy(ctx);
  vj_free(m);
  if (rc) return rc;
  return failed || (o->require_all && unsupported) || passed == 0 ? 1 : 0;
}

/* ------------------------------------------------------------------ sweep */
static int64_t ri(int64_t lo, int64_t hi) { return vt_rand_int(lo, hi); }

/* Random args for op (the same distributions as verify/oracle/compare.py). */
static void random_case(const char *op, char *buf, size_t size) {
  int n = snprintf(buf, size, "B=%lld H=%lld pad=%lld bnhd=%lld ", (long long)ri(1, 2),
                   (long long)ri(1, 3), (long long)(ri(0, 2) == 2 ? 3 : 0), (long long)ri(0, 1));
  char *p = buf + n;
  size_t left = size - (size_t)n;
  if (strcmp(op, "dense") == 0 || strcmp(op, "dense_bwd") == 0) {
    snprintf(p, left, "N=%lld Nk=%lld D=%lld amp=%d", (long long)ri(1, 40), (long long)ri(1, 40),
             (long long)ri(1, 20), ri(0, 1) ? 3 : 1);
  } else if (strcmp(op, "rope") == 0) {
    const int64_t half = ri(1, 12), dt = ri(0, half), dh = ri(0, half - dt);
    snprintf(p, left,
             "D=%lld dt=%lld dh=%lld dw=%lld T=%lld Hg=%lld W=%lld theta=%g pairing=%lld "
             "inverse=%lld inplace=%lld",
             (long long)(2 * half), (long long)(2 * dt), (long long)(2 * dh),
             (long long)(2 * ri(0, half - dt - dh)), (long long)ri(1, 4), (long long)ri(1, 5),
             (long long)ri(1, 5), ri(0, 1) ? 10000.0 : 256.0, (long long)ri(0, 1),
             (long long)ri(0, 1), (long long)ri(0, 1));
  } else if (strcmp(op, "order") == 0) {
    snprintf(p, left, "kind=%lld T=%lld Hg=%lld W=%lld tt=%lld th=%lld tw=%lld D=%lld",
             (long long)ri(0, 2), (long long)ri(1, 5), (long long)ri(1, 9), (long long)ri(1, 9),
             (long long)ri(1, 3), (long long)ri(1, 4), (long long)ri(1, 4), (long long)ri(1, 4));
  } else if (strcmp(op, "pool") == 0) {
    snprintf(p, left, "N=%lld D=%lld block=%lld", (long long)ri(1, 50), (long long)ri(1, 6),
             (long long)ri(1, 10));
  } else if (strcmp(op, "merge") == 0) {
    snprintf(p, left, "N=%lld D=%lld empty=0.3", (long long)ri(1, 30), (long long)ri(1, 6));
  } else if (strcmp(op, "llsa") == 0 || strcmp(op, "llsa_bwd") == 0) {
    static const int64_t bs[5] = {2, 2, 3, 4, 16}, ks[5] = {1, 2, 3, 5, 100};
    const int64_t b = bs[ri(0, 4)], L = b == 16 ? ri(1, 2) : ri(1, 3);
    int64_t bl = 1;
    for (int64_t l = 0; l < L; l++) bl *= b;
    int m = snprintf(
        p, left, "N=%lld D=%lld b=%lld K=", (long long)ri(1, bl * 3 + 5 < 300 ? bl * 3 + 5 : 300),
        (long long)ri(1, 8), (long long)b);
    for (int64_t l = 0; l < L; l++)
      m += snprintf(p + m, left - (size_t)m, "%s%lld", l ? "," : "", (long long)ks[ri(0, 4)]);
  } else { /* ropeslr, ropeslr_bwd */
    snprintf(p, left,
             "D=%lld T=%lld Hg=%lld W=%lld b=%lld policy=%lld rho=%.3f topk=%lld sqrt_c=%.3f "
             "own=%lld r=%lld feature=%lld",
             (long long)ri(1, 8), (long long)ri(1, 3), (long long)ri(1, 4), (long long)ri(1, 4),
             (long long)ri(1, 8), (long long)ri(0, 2), vt_uniform(0.05, 1.0), (long long)ri(1, 10),
             vt_uniform(0.3, 2.0), (long long)ri(0, 1), (long long)ri(1, 9), (long long)ri(0, 1));
  }
}

static int run_sweep(const options *o) {
  static const char *const ops[] = {"dense", "dense_bwd", "rope",     "order",   "pool",
                                    "merge", "llsa",      "llsa_bwd", "ropeslr", "ropeslr_bwd"};
  enum { NUM_OPS = sizeof ops / sizeof ops[0] };
  ditattn_context *ref = NULL, *others[DITATTN_BACKEND_COUNT] = {NULL};
  if (open_backend("ref", &ref)) return 2;
  int n_others = 0;
  for (int b = 0; b < DITATTN_BACKEND_COUNT; b++) {
    const char *name = ditattn_backend_name((ditattn_backend)b);
    if (b == DITATTN_BACKEND_REF || (o->backend && strcmp(o->backend, name) != 0)) continue;
    if (!ditattn_backend_compiled((ditattn_backend)b)) continue;
    if (ditattn_context_create((ditattn_backend)b, &others[b]) == DITATTN_OK)
      n_others++;
    else
      printf("verify: backend %s compiled but not available here\n", name);
  }
  if (n_others == 0) {
    printf("verify: no backend besides ref is available: comparing ref with itself "
           "(determinism)\n");
    others[DITATTN_BACKEND_REF] = ref;
  }
  printf("verify: sweep of %ld cases per op, seed %llu (rerun: --sweep %ld --seed %llu)\n",
         o->sweep, (unsigned long long)o->seed, o->sweep, (unsigned long long)o->seed);
  long passed = 0, failed = 0, unsupported = 0;
  int said[NUM_OPS][DITATTN_BACKEND_COUNT] = {{0}};
  uint64_t master = o->seed;
  for (long i = 0; i < o->sweep * NUM_OPS; i++) {
    const char *op = ops[i % NUM_OPS];
    vt_srand(master + (uint64_t)i * 7919u);
    const uint64_t data_seed = vt_rand_u64();
    char text[512], buf[1024];
    random_case(op, text, sizeof text);
    if (o->only >= 0 && i != o->only) continue;
    va_args args;
    if (split_args(text, NULL, buf, sizeof buf, &args)) return 2;
    vc_source src = {1, 0, NULL, ""};
    vc_list in_ref = {0}, out_ref = {0};
    ditattn_status st;
    vt_srand(data_seed);
    int r0 = vc_run(ref, op, &args, &src, &in_ref, &out_ref, &st);
    for (int b = 0; b < DITATTN_BACKEND_COUNT; b++) {
      if (!others[b]) continue;
      vc_list in = {0}, out = {0};
      vt_srand(data_seed);
      int r1 = vc_run(others[b], op, &args, &src, &in, &out, &st);
      char label[640];
      snprintf(label, sizeof label, "%s vs ref: %s %s (--only %ld)",
               ditattn_backend_name((ditattn_backend)b), op, text, i);
      double worst = 0.0;
      const double tol = strstr(op, "_bwd") ? 1e-4 : 1e-5;
      if (r1 == VC_STATUS && st == DITATTN_ERR_UNSUPPORTED) {
        if (!said[i % NUM_OPS][b]++) /* once per op and backend */
          printf("unsupported: %s on %s\n", op, ditattn_backend_name((ditattn_backend)b));
        unsupported++;
      } else if (r0 != VC_OK || r1 != VC_OK) {
        failed++;
        printf("FAIL %s: ref %s, backend %s\n", label, r0 == VC_OK ? "ok" : "failed",
               r1 == VC_OK ? "ok" : ditattn_strerror(st));
      } else if (compare_outputs(label, &out, &out_ref, tol, &worst)) {
        passed++;
      } else {
        failed++;
      }
      vc_list_free(&in), vc_list_free(&out);
    }
    vc_list_free(&in_ref), vc_list_free(&out_ref);
  }
  printf("verify: sweep %ld passed, %ld failed, %ld unsupported (seed %llu)\n", passed, failed,
         unsupported, (unsigned long long)o->seed);
  for (int b = 0; b < DITATTN_BACKEND_COUNT; b++)
    if (others[b] && others[b] != ref) ditattn_context_destroy(others[b]);
  ditattn_context_destroy(ref);
  return failed ? 1 : 0;
}

int dt_verify_main(int argc, char **argv) {
  options o;
  int rc = parse(argc, argv, &o);
  if (rc) return rc;
  return o.golden ? run_golden(&o) : run_sweep(&o);
}
