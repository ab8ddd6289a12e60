/* Drives one library call for the NumPy oracle (verify/oracle/compare.py):
 *
 *   ditattn_oracle_driver OP OUTDIR [key=value ...]
 *
 * draws seeded random inputs (seed=, quant=, amp=) in a strided layout (pad=,
 * bnhd=), runs OP (see cases.h) on a backend (backend=ref by default), and
 * writes every input and output as a contiguous NAME.npy into OUTDIR, so the
 * oracle recomputes the result from the very same inputs. Exit 0 on success;
 * 3 when the library returns a status (printed, "UNSUPPORTED" among them);
 * 2 on a usage or I/O error. */
#include "cases.h"
#include "verify_args.h"
#include "verify_tensor.h"

#include "tools/npy.h"

#include <stdio.h>

static int save_list(const char *dir, const vc_list *l) {
  for (int i = 0; i < l->n; i++) {
    const vc_array *a = &l->a[i];
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/%s.npy", dir, a->name);
    ditattn_status st = a->is_int
                            ? dt_npy_write_i32(path, a->ndim, a->shape, a->data, err, sizeof err)
                            : dt_npy_write_f32(path, a->ndim, a->shape, a->data, err, sizeof err);
    if (st != DITATTN_OK) {
      fprintf(stderr, "oracle_driver: %s\n", err);
      return 2;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s OP OUTDIR [key=value ...]\n", argv[0]);
    return 2;
  }
  va_args args;
  if (va_parse(&args, argc - 3, argv + 3) != 0) return 2;
  vt_srand((uint64_t)va_int(&args, "seed", 1));
  ditattn_backend backend;
  const char *backend_name = va_str(&args, "backend", "ref");
  if (ditattn_backend_parse(backend_name, &backend) != DITATTN_OK) {
    fprintf(stderr, "oracle_driver: unknown backend %s\n", backend_name);
    return 2;
  }
  ditattn_context *ctx = NULL;
  ditattn_status st = ditattn_context_create(backend, &ctx);
  if (st != DITATTN_OK) {
    fprintf(stderr, "oracle_driver: backend %s: %s\n", backend_name, ditattn_strerror(st));
    return 3;
  }
  vc_source src = {1, (int)va_int(&args, "quant", 0), NULL, ""};
  vc_list inputs = {0}, outputs = {0};
  int rc = vc_run(ctx, argv[1], &args, &src, &inputs, &outputs, &st);
  if (rc == VC_STATUS)
    fprintf(stderr, "oracle_driver: %s: %s%s: %s\n", argv[1], ditattn_strerror(st),
            st == DITATTN_ERR_UNSUPPORTED ? " (UNSUPPORTED)" : "", src.error);
  const char *unused = va_unused(&args);
  if (rc == VC_OK && unused) {
    fprintf(stderr, "oracle_driver: unknown argument %s\n", unused);
    rc = 2;
  }
  if (rc == VC_OK) rc = save_list(argv[2], &inputs) || save_list(argv[2], &outputs) ? 2 : 0;
  vc_list_free(&inputs);
  vc_list_free(&outputs);
  ditattn_context_destroy(ctx);
  return rc;
}
