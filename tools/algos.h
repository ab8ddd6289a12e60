/* The algorithm table of the `ditattn` CLI: one entry per attention
 * algorithm, used by `run` and `bench` alike.
 *
 * Adding an algorithm (e.g. RoPeSLR):
 *  1. write tools/algo_<name>.c defining `const dt_algo dt_algo_<name>`
 *     (tools/CMakeLists.txt picks up every tools/algo_*.c);
 *  2. add one line `DT_ALGO(<name>)` to tools/algo_list.h.
 * See algo_dense.c (no options) and algo_llsa.c (options, extra outputs).
 *
 * Lifetime of an entry's state (state_size bytes, zeroed, owned by the CLI):
 *   init → parse_option* → prepare → run (once, or repeatedly in bench)
 *   → write_extras (run only) → release (always, also after a failure). */
#ifndef DITATTN_TOOLS_ALGOS_H
#define DITATTN_TOOLS_ALGOS_H

#include "ditattn/ditattn.h"

#include <stddef.h>
#include <stdint.h>

/* Most FLOP branches an algorithm reports (see dt_algo.branch_flops). */
enum { DT_ALGO_MAX_BRANCHES = 4 };

/* One part of an algorithm's FLOP count, e.g. RoPeSLR's "sparse". */
typedef struct dt_algo_branch {
  const char *name; /* static string */
  double flops;     /* over all B·H heads */
} dt_algo_branch;

/* The problem the CLI hands to an algorithm. */
typedef struct dt_algo_problem {
  int64_t B, H, N, D;
  int64_t grid[3];    /* T, H, W of the tokens (T·H·W = N); {1, 1, N} when unknown */
  const int32_t *pos; /* host, N (t, y, x) triples in sequence order; NULL = raster order */
  float scale;        /* <= 0 means 1/sqrt(D) */
  int input_rank;     /* 2 ([N, D] files) or 4 ([B, H, N, D]); shapes of extra outputs follow it */
  int is_bench;       /* 1 in `ditattn bench` (no extra outputs, inputs are synthetic) */
} dt_algo_problem;

/* Tensors of one call, in the context's memory (device memory on GPUs). */
typedef struct dt_algo_io {
  ditattn_context *ctx;
  const ditattn_tensor *q, *k, *v;
  ditattn_tensor *out;
  float *lse; /* [B][H][N] in the context's memory, or NULL */
} dt_algo_io;

typedef struct dt_algo {
  const char *name;         /* the --algo value */
  const char *summary;      /* one line for --help */
  const char *options_help; /* its options, one "  --opt V  text\n" line each ("" if none) */
  size_t state_size;        /* bytes of its private state (options + prepared data) */

  /* Sets the defaults. May be NULL (state stays zeroed). */
  void (*init)(void *state);
  /* If argv[*i] is one of its options: consumes it (and its value, moving
   * *i) and returns 1; returns 0 for an option it does not know, -1 for a
   * bad value (message in err). May be NULL (no options). */
  int (*parse_option)(void *state, int argc, char **argv, int *i, char *err, size_t err_size);
  /* Checks the options against the problem and prepares what run needs
   * (weights, selection buffers). Messages in err. May be NULL. */
  ditattn_status (*prepare)(void *state, const dt_algo_problem *p, ditattn_context *ctx, char *err,
                            size_t err_size);
  /* Runs the forward pass. Errors: the context's ditattn_last_error. */
  ditattn_status (*run)(void *state, const dt_algo_problem *p, const dt_algo_io *io);
  /* `ditattn run` only, after run: writes extra outputs (e.g. selections).
   * May be NULL. */
  ditattn_status (*write_extras)(void *state, const dt_algo_problem *p, char *err, size_t err_size);
  /* FLOPs of one forward pass over all B·H heads (the spec's cost model). */
  double (*flops)(const void *state, const dt_algo_problem *p);
  /* Its parameters in one line ("b=16 L=2 K=8,8"). May be NULL. */
  void (*describe)(const void *state, char *buf, size_t size);
  /* Frees what prepare made; safe on a state that was never prepared. May be NULL. */
  void (*release)(void *state, ditattn_context *ctx);
  /* The FLOP count split by branch (their sum is flops()), after prepare:
   * fills out[0 .. n-1] and returns n <= DT_ALGO_MAX_BRANCHES. May be NULL
   * (one branch). */
  int (*branch_flops)(const void *state, const dt_algo_problem *p, dt_algo_branch *out);
  /* After prepare: one line bench prints about the algorithm's own inputs
   * (e.g. "random weights ..."), "" when there is nothing to say. May be NULL. */
  void (*note)(const void *state, char *buf, size_t size);
} dt_algo;

/* Every algorithm of this build, in table order; NULL-terminated. */
extern const dt_algo *const dt_algos[];
/* The entry named `name`, or NULL. */
const dt_algo *dt_algo_find(const char *name);
/* "dense|llsa|..." for messages. */
const char *dt_algo_names(void);

#endif
