/* `ditattn info`: version, backends (compiled? usable?), per backend the
 * operations and dtypes it supports. */
#include "algos.h"
#include "cli_device.h"
#include "commands.h"

#include <stdio.h>
#include <string.h>

/* The public API has no dtype query: a dtype counts as supported when a tiny
 * dense forward in it passes validation (DITATTN_ERR_DTYPE otherwise). */
static int probe_dtype(ditattn_context *ctx, ditattn_dtype dtype) {
  enum { N = 2, D = 2 };
  size_t bytes = N * D * ditattn_dtype_size(dtype);
  void *mem[4] = {NULL, NULL, NULL, NULL};
  int ok = 1;
  for (int i = 0; i < 4 && ok; i++) ok = ditattn_malloc(ctx, bytes, &mem[i]) == DITATTN_OK;
  if (ok) {
    static const unsigned char zeros[N * D * 4] = {0};
    for (int i = 0; i < 3 && ok; i++)
      ok = ditattn_copy_to_backend(ctx, mem[i], zeros, bytes) == DITATTN_OK;
  }
  int supported = -1; /* unknown */
  if (ok) {
    ditattn_tensor t[4];
    for (int i = 0; i < 4; i++) t[i] = ditattn_tensor_bhnd(mem[i], dtype, 1, 1, N, D);
    ditattn_status st = ditattn_dense_forward(ctx, &t[0], &t[1], &t[2], 0.0f, &t[3], NULL);
    if (st == DITATTN_OK) supported = 1;
    if (st == DITATTN_ERR_DTYPE) supported = 0;
    ditattn_synchronize(ctx);
  }
  for (int i = 0; i < 4; i++)
    if (mem[i]) ditattn_free(ctx, mem[i]);
  return supported;
}

int cmd_info(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("usage: ditattn info\n\nPrints the version, the backends of this build (compiled in?\n"
             "usable here, i.e. a context can be created?), and per backend the operations and\n"
             "dtypes it supports.\n");
      return 0;
    }
    fprintf(stderr, "ditattn: error: info: unknown option '%s'\n", argv[i]);
    return 2;
  }
  printf("ditattn %s\n", ditattn_version());
  printf("algorithms (run/bench --algo): %s\n", dt_algo_names());
  printf("default backend: %s\n\n", ditattn_backend_name(cli_default_backend()));
  static const ditattn_dtype dtypes[] = {DITATTN_F32, DITATTN_BF16, DITATTN_F16};
  static const char *const dtype_names[] = {"f32", "bf16", "f16"};
  for (int b = 0; b < DITATTN_BACKEND_COUNT; b++) {
    ditattn_backend backend = (ditattn_backend)b;
    int compiled = ditattn_backend_compiled(backend);
    ditattn_context *ctx = NULL;
    ditattn_status st =
        compiled ? ditattn_context_create(backend, &ctx) : DITATTN_ERR_BACKEND_UNAVAILABLE;
    printf("backend %-5s compiled: %-3s  available: %s\n", ditattn_backend_name(backend),
           compiled ? "yes" : "no",
           st == DITATTN_OK ? "yes" : (compiled ? ditattn_strerror(st) : "no"));
    if (!compiled) continue;
    printf("  ops:");
    int any = 0;
    for (int op = 0; op < DITATTN_OP_COUNT; op++) {
      if (!ditattn_backend_supports(backend, (ditattn_op)op)) continue;
      printf(" %s", ditattn_op_name((ditattn_op)op));
      any = 1;
    }
    printf("%s\n", any ? "" : " (none)");
    if (ctx) {
      printf("  dtypes (probed with dense forward):");
      for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        int s = probe_dtype(ctx, dtypes[d]);
        if (s != 0) printf(" %s%s", dtype_names[d], s < 0 ? "(?)" : "");
      }
      printf("\n");
      ditattn_context_destroy(ctx);
    }
  }
  return 0;
}
