/* See cli_device.h. */
#include "cli_device.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *cli_lib_error(const ditattn_context *ctx, ditattn_status st) {
  const char *msg = ctx ? ditattn_last_error(ctx) : "";
  return msg[0] ? msg : ditattn_strerror(st);
}

ditattn_backend cli_default_backend(void) {
  return ditattn_backend_compiled(DITATTN_BACKEND_CPU) ? DITATTN_BACKEND_CPU : DITATTN_BACKEND_REF;
}

ditattn_status cli_open_context(ditattn_backend backend, int threads, ditattn_context **ctx) {
  ditattn_status st = ditattn_context_create(backend, ctx);
  if (st != DITATTN_OK) {
    fprintf(stderr, "ditattn: error: backend %s: %s%s\n", ditattn_backend_name(backend),
            ditattn_strerror(st),
            ditattn_backend_compiled(backend) ? " (no usable device?)"
                                              : " (not compiled into this build)");
    return st;
  }
  if (threads > 0) {
    st = ditattn_context_set_num_threads(*ctx, threads);
    if (st != DITATTN_OK) {
      fprintf(stderr, "ditattn: error: --threads %d: %s\n", threads, cli_lib_error(*ctx, st));
      ditattn_context_destroy(*ctx);
      *ctx = NULL;
    }
  }
  return st;
}

static ditattn_status report(ditattn_context *ctx, ditattn_status st, const char *what) {
  if (st != DITATTN_OK) fprintf(stderr, "ditattn: error: %s: %s\n", what, cli_lib_error(ctx, st));
  return st;
}

ditattn_status cli_tensors_upload(ditattn_context *ctx, int64_t B, int64_t H, int64_t Nq,
                                  int64_t Nk, int64_t D, const float *q, const float *k,
                                  const float *v, int want_lse, cli_tensors *t) {
  memset(t, 0, sizeof *t);
  t->ctx = ctx;
  t->q_bytes = (size_t)(B * H * Nq * D) * sizeof(float);
  t->kv_bytes = (size_t)(B * H * Nk * D) * sizeof(float);
  t->lse_bytes = want_lse ? (size_t)(B * H * Nq) * sizeof(float) : 0;
  ditattn_status st;
  if ((st = report(ctx, ditattn_malloc(ctx, t->q_bytes, &t->q_mem), "allocating q")) ||
      (st = report(ctx, ditattn_malloc(ctx, t->kv_bytes, &t->k_mem), "allocating k")) ||
      (st = report(ctx, ditattn_malloc(ctx, t->kv_bytes, &t->v_mem), "allocating v")) ||
      (st = report(ctx, ditattn_malloc(ctx, t->q_bytes, &t->out_mem), "allocating out")) ||
      (want_lse &&
       (st = report(ctx, ditattn_malloc(ctx, t->lse_bytes, &t->lse_mem), "allocating lse"))) ||
      (st = report(ctx, ditattn_copy_to_backend(ctx, t->q_mem, q, t->q_bytes), "copying q")) ||
      (st = report(ctx, ditattn_copy_to_backend(ctx, t->k_mem, k, t->kv_bytes), "copying k")) ||
      (st = report(ctx, ditattn_copy_to_backend(ctx, t->v_mem, v, t->kv_bytes), "copying v"))) {
    cli_tensors_free(t);
    return st;
  }
  t->q = ditattn_tensor_bhnd(t->q_mem, DITATTN_F32, B, H, Nq, D);
  t->k = ditattn_tensor_bhnd(t->k_mem, DITATTN_F32, B, H, Nk, D);
  t->v = ditattn_tensor_bhnd(t->v_mem, DITATTN_F32, B, H, Nk, D);
  t->out = ditattn_tensor_bhnd(t->out_mem, DITATTN_F32, B, H, Nq, D);
  return DITATTN_OK;
}

ditattn_status cli_tensors_poison(cli_tensors *t) {
  size_t n = t->q_bytes > t->lse_bytes ? t->q_bytes : t->lse_bytes;
  float *nan = malloc(n ? n : 1);
  if (!nan) {
    fprintf(stderr, "ditattn: error: out of memory\n");
    return DITATTN_ERR_OUT_OF_MEMORY;
  }
  for (size_t i = 0; i < n / sizeof(float); i++) nan[i] = NAN;
  ditattn_status st =
      report(t->ctx, ditattn_copy_to_backend(t->ctx, t->out_mem, nan, t->q_bytes), "poisoning out");
  if (st == DITATTN_OK && t->lse_mem)
    st = report(t->ctx, ditattn_copy_to_backend(t->ctx, t->lse_mem, nan, t->lse_bytes),
                "poisoning lse");
  free(nan);
  return st;
}

ditattn_status cli_tensors_download(cli_tensors *t, float *out_host, float *lse_host) {
  ditattn_status st = report(t->ctx, ditattn_synchronize(t->ctx), "synchronizing");
  if (st == DITATTN_OK && out_host)
    st = report(t->ctx, ditattn_copy_to_host(t->ctx, out_host, t->out_mem, t->q_bytes),
                "copying out back");
  if (st == DITATTN_OK && lse_host && t->lse_mem)
    st = report(t->ctx, ditattn_copy_to_host(t->ctx, lse_host, t->lse_mem, t->lse_bytes),
                "copying lse back");
  return st;
}

void cli_tensors_free(cli_tensors *t) {
  if (!t->ctx) return;
  void *mem[5] = {t->q_mem, t->k_mem, t->v_mem, t->out_mem, t->lse_mem};
  for (int i = 0; i < 5; i++)
    if (mem[i]) ditattn_free(t->ctx, mem[i]);
  memset(t, 0, sizeof *t);
}
