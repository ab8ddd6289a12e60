/* Generates the golden vectors: ditattn_golden_gen OUTDIR
 *
 * Runs every case of the table below on the ref backend (the semantics'
 * definition) and writes OUTDIR/<case>/<array>.npy for inputs and outputs
 * plus OUTDIR/manifest.json (see verify/README.md). Inputs are seeded
 * (seed = 1000 + case index), so regenerating gives identical files unless
 * ref/ changed; the suite's "version" changes when the case list does. */
#include "cases.h"
#include "verify_args.h"
#include "verify_tensor.h"

#include "tools/npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GOLDEN_VERSION 1

typedef struct golden_case {
  const char *name;
  const char *op;
  const char *args; /* key=value words (cases.h) */
  double tol;       /* relative (norm-wise) tolerance of f32 outputs; int32 are exact */
  const char *note;
} golden_case;

static const golden_case cases[] = {
    /* dense attention */
    {"dense_cross", "dense", "B=1 H=2 N=7 Nk=11 D=5", 1e-5, "Nq != Nk"},
    {"dense_strided", "dense", "B=2 H=3 N=33 D=16 pad=3 bnhd=1 scale=0.3 amp=3", 1e-5,
     "[B,N,H,D] layout with padded rows, explicit scale"},
    {"dense_single", "dense", "B=1 H=1 N=1 Nk=1 D=1", 1e-5, "one token"},
    {"dense_bwd", "dense_bwd", "B=1 H=2 N=13 Nk=9 D=6", 1e-4, "gradients dq, dk, dv"},
    /* 3D RoPE */
    {"rope_interleaved", "rope", "B=1 H=2 D=12 T=2 Hg=3 W=4 dt=4 dh=4 dw=4 theta=10000", 1e-5,
     "raster positions (pos=NULL)"},
    {"rope_half_split_pos", "rope",
     "B=2 H=1 D=14 T=3 Hg=5 W=4 N=20 randpos=1 dt=6 dh=4 dw=2 theta=256 pairing=1", 1e-5,
     "given positions; channels past the parts untouched"},
    {"rope_inverse_inplace", "rope",
     "B=1 H=1 D=8 T=2 Hg=2 W=3 dt=2 dh=2 dw=4 theta=100 inverse=1 inplace=1 pad=2", 1e-5,
     "inverse rotation, in place"},
    /* token orders */
    {"order_morton_4x4", "order", "kind=1 T=1 Hg=4 W=4 D=2", 0.0, "llsa.md section 5 table"},
    {"order_morton_3x5x6", "order", "kind=1 T=3 Hg=5 W=6 B=2 H=1 D=3", 0.0,
     "grid not a power of two"},
    {"order_tile", "order", "kind=2 T=3 Hg=5 W=7 tt=2 th=2 tw=3 D=2", 0.0, "partial edge tiles"},
    {"order_raster", "order", "kind=0 T=2 Hg=2 W=3 D=2", 0.0, "identity"},
    /* pooling and LSE merge */
    {"pool_partial", "pool", "B=1 H=2 N=23 D=3 block=5", 1e-5, "partial last block"},
    {"merge_empty_rows", "merge", "B=1 H=2 N=9 D=4 empty=0.3", 1e-5, "-inf accumulator rows"},
    /* LLSA: L = 1, 2, 3; partial blocks; K >= candidates; b in {2, 4, 16} */
    {"llsa_spec_example", "llsa", "B=1 H=1 N=8 D=1 b=2 K=1 scale=1", 1e-5,
     "llsa.md section 7 worked example (fixed inputs)"},
    {"llsa_L1_b2", "llsa", "B=1 H=2 N=16 D=4 b=2 K=2", 1e-5, "full blocks"},
    {"llsa_L1_b16_partial", "llsa", "B=1 H=1 N=75 D=8 b=16 K=2", 1e-5, "partial last block"},
    {"llsa_L2_b4_partial", "llsa", "B=1 H=2 N=70 D=8 b=4 K=2,2", 1e-5, "partial blocks, 2 levels"},
    {"llsa_L2_b16", "llsa", "B=1 H=1 N=600 D=16 b=16 K=2,2", 1e-5, "official b = 16, L = 2"},
    {"llsa_L3_b2", "llsa", "B=1 H=1 N=53 D=4 b=2 K=2,1,3", 1e-5, "3 levels"},
    {"llsa_L3_b4", "llsa", "B=2 H=1 N=100 D=4 b=4 K=1,2,2 scale=0.7", 1e-5, "3 levels, b = 4"},
    {"llsa_K_over_candidates", "llsa", "B=1 H=1 N=40 D=3 b=4 K=100,100", 1e-5,
     "K >= candidates: selections padded with -1"},
    {"llsa_ties", "llsa", "B=1 H=2 N=64 D=4 b=4 K=3,2 quant=1", 1e-5,
     "quantized inputs: exact score ties follow the tie rule"},
    {"llsa_strided", "llsa", "B=2 H=2 N=37 D=6 b=3 K=2,2 pad=2 bnhd=1 amp=2", 1e-5,
     "[B,N,H,D] layout, b = 3"},
    {"llsa_bwd", "llsa_bwd", "B=1 H=2 N=45 D=4 b=4 K=2,2", 1e-4, "gradients dq, dk, dv"},
    /* RoPeSLR */
    {"ropeslr_keep_fraction", "ropeslr", "B=1 H=2 D=8 T=2 Hg=4 W=4 b=8 policy=0 rho=0.25 r=6", 1e-5,
     "own block forced, ELU+1 features"},
    {"ropeslr_fixed_k_softmax", "ropeslr",
     "B=1 H=1 D=6 T=1 Hg=5 W=5 b=4 policy=1 topk=2 own=0 feature=1 r=4", 1e-5,
     "softmax features, own block not forced"},
    {"ropeslr_sqrt_positions", "ropeslr",
     "B=2 H=1 D=4 T=2 Hg=3 W=3 N=30 randpos=1 b=3 policy=2 sqrt_c=1 r=10 wamp=0.5", 1e-5,
     "given positions, rank > D"},
    {"ropeslr_rho1_dense", "ropeslr", "B=1 H=1 D=5 T=1 Hg=3 W=5 b=4 policy=0 rho=1 r=3", 1e-5,
     "every block selected: equals dense attention"},
    {"ropeslr_ties", "ropeslr", "B=1 H=1 D=4 T=1 Hg=4 W=8 b=4 policy=1 topk=3 quant=1 r=3", 1e-5,
     "quantized inputs: exact score ties"},
    {"ropeslr_bwd", "ropeslr_bwd", "B=1 H=2 D=4 T=2 Hg=2 W=4 b=4 policy=1 topk=1 r=3", 1e-4,
     "gradients of q, k, v and every weight"},
};
enum { NUM_CASES = sizeof cases / sizeof cases[0] };

/* llsa.md section 7's inputs. */
static const float spec_q[8] = {1, 0, 0, 1, -1, 0, 2, 1};
static const float spec_k[8] = {0.5f, 1, -1, 0, 2, 2, 0, -0.5f};
static const float spec_v[8] = {1, 2, 3, 4, 5, 6, 7, 8};

static int save(const char *dir, const vc_array *a, FILE *manifest, int last) {
  char path[4096], err[512];
  snprintf(path, sizeof path, "%s/%s.npy", dir, a->name);
  ditattn_status st = a->is_int
                          ? dt_npy_write_i32(path, a->ndim, a->shape, a->data, err, sizeof err)
                          : dt_npy_write_f32(path, a->ndim, a->shape, a->data, err, sizeof err);
  if (st != DITATTN_OK) {
    fprintf(stderr, "golden_gen: %s\n", err);
    return 1;
  }
  fprintf(manifest, "\"%s\": \"%s.npy\"%s", a->name, a->name, last ? "" : ", ");
  return 0;
}

/* "B=1 K=2,2" -> {"B": 1, "K": [2, 2]} (numbers stay numbers). */
static void params_json(FILE *f, const char *args) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", args);
  fprintf(f, "{");
  int first = 1;
  for (char *w = strtok(buf, " "); w; w = strtok(NULL, " ")) {
    char *eq = strchr(w, '=');
    *eq = '\0';
    fprintf(f, "%s\"%s\": ", first ? "" : ", ", w);
    if (strchr(eq + 1, ',') || strcmp(w, "K") == 0) /* K is always a list (per level) */
      fprintf(f, "[%s]", eq + 1);
    else
      fprintf(f, "%s", eq + 1);
    first = 0;
  }
  fprintf(f, "}");
}

/* The `ditattn run` command line for ops the CLI contract covers. */
static void cli_json(FILE *f, const golden_case *c, const va_args *a) {
  if (strcmp(c->op, "dense") != 0 && strcmp(c->op, "llsa") != 0) {
    fprintf(f, "null");
    return;
  }
  fprintf(f,
          "\"run --algo %s --q {in}/q.npy --k {in}/k.npy --v {in}/v.npy -o {out}/out.npy "
          "--lse {out}/lse.npy",
          c->op);
  if (va_num(a, "scale", 0.0) > 0.0) fprintf(f, " --scale %s", va_str(a, "scale", "0"));
  if (strcmp(c->op, "llsa") == 0)
    fprintf(f, " --block %s --topk %s --sel-prefix {out}/sel", va_str(a, "b", "2"),
            va_str(a, "K", "1"));
  fprintf(f, "\"");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  const char *outdir = argv[1];
  if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
    perror(outdir);
    return 2;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/manifest.json", outdir);
  FILE *m = fopen(path, "w");
  if (!m) {
    perror(path);
    return 2;
  }
  ditattn_context *ctx;
  if (ditattn_context_create(DITATTN_BACKEND_REF, &ctx) != DITATTN_OK) return 2;
  fprintf(m, "{\n  \"suite\": \"ditattn golden vectors\",\n  \"version\": %d,\n", GOLDEN_VERSION);
  fprintf(m,
          "  \"library_version\": \"%s\",\n  \"generator\": \"verify/golden_gen.c (ref "
          "backend)\",\n",
          ditattn_version());
  fprintf(m, "  \"layout\": \"tensors (B,H,N,D) C order; weights (1,H,rows,cols); lse (B,H,N); "
             "sel (B,H,n,K) int32 padded with -1; pos (N,3) int32 (t,y,x)\",\n");
  fprintf(m,
          "  \"compare\": \"f32: ||got-want||/max(||want||, 0.01*sqrt(count)) <= tol, NaN fails, "
          "-inf must match; "
          "int32: exact\",\n  \"cases\": [\n");
  int rc = 0;
  for (int i = 0; i < NUM_CASES && rc == 0; i++) {
    const golden_case *c = &cases[i];
    char argbuf[512], *words[64];
    int n = 0;
    snprintf(argbuf, sizeof argbuf, "%s", c->args);
    for (char *w = strtok(argbuf, " "); w && n < 64; w = strtok(NULL, " ")) words[n++] = w;
    va_args args;
    if (va_parse(&args, n, words) != 0) return 2;
    vt_srand(1000u + (uint64_t)i);
    vc_source src = {1, (int)va_int(&args, "quant", 0), NULL, ""};
    vc_list fixed = {0}, inputs = {0}, outputs = {0};
    if (strcmp(c->name, "llsa_spec_example") == 0) {
      const int64_t shape[4] = {1, 1, 8, 1};
      vc_append(&fixed, "q", 0, 4, shape, spec_q);
      vc_append(&fixed, "k", 0, 4, shape, spec_k);
      vc_append(&fixed, "v", 0, 4, shape, spec_v);
      src.random = 0;
      src.loaded = &fixed;
    }
    ditattn_status st;
    if (vc_run(ctx, c->op, &args, &src, &inputs, &outputs, &st) != VC_OK) {
      fprintf(stderr, "golden_gen: case %s failed: %s (%s)\n", c->name, ditattn_strerror(st),
              src.error);
      rc = 1;
    } else {
      snprintf(path, sizeof path, "%s/%s", outdir, c->name);
      if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        rc = 1;
      }
      fprintf(m, "    {\"name\": \"%s\", \"op\": \"%s\", \"args\": \"%s\",\n     \"params\": ",
              c->name, c->op, c->args);
      params_json(m, c->args);
      fprintf(m, ",\n     \"note\": \"%s\", \"tol\": %g, \"dir\": \"%s\",\n     \"inputs\": {",
              c->note, c->tol, c->name);
      for (int j = 0; j < inputs.n && !rc; j++) rc = save(path, &inputs.a[j], m, j == inputs.n - 1);
      fprintf(m, "},\n     \"outputs\": {");
      for (int j = 0; j < outputs.n && !rc; j++)
        rc = save(path, &outputs.a[j], m, j == outputs.n - 1);
      fprintf(m, "},\n     \"cli\": ");
      cli_json(m, c, &args);
      fprintf(m, "}%s\n", i == NUM_CASES - 1 ? "" : ",");
    }
    vc_list_free(&fixed);
    vc_list_free(&inputs);
    vc_list_free(&outputs);
  }
  fprintf(m, "  ]\n}\n");
  fclose(m);
  ditattn_context_destroy(ctx);
  if (rc == 0) printf("golden_gen: %d cases written to %s\n", NUM_CASES, outdir);
  return rc;
}
