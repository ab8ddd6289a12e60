/* Context and tensor plumbing shared by `run` and `bench`: open a context,
 * put host [B,H,N,D] arrays into the backend's memory (device memory on
 * GPUs, through ditattn_malloc/ditattn_copy_*), bring results back. */
#ifndef DITATTN_TOOLS_CLI_DEVICE_H
#define DITATTN_TOOLS_CLI_DEVICE_H

#include "ditattn/ditattn.h"

#include <stddef.h>
#include <stdint.h>

/* The library's message for a failed call on ctx: ditattn_last_error, or the
 * status name when the message is empty. */
const char *cli_lib_error(const ditattn_context *ctx, ditattn_status st);

/* cpu when compiled in, else ref. */
ditattn_backend cli_default_backend(void);

/* Creates a context; threads > 0 sets the CPU thread count. On failure
 * prints why on stderr and returns a non-OK status. */
ditattn_status cli_open_context(ditattn_backend backend, int threads, ditattn_context **ctx);

/* q: [B,H,Nq,D]; k, v: [B,H,Nk,D]; out like q; lse [B][H][Nq] (optional).
 * All contiguous f32 in the context's memory. */
typedef struct cli_tensors {
  ditattn_context *ctx;
  void *q_mem, *k_mem, *v_mem, *out_mem, *lse_mem;
  ditattn_tensor q, k, v, out;
  size_t q_bytes, kv_bytes, lse_bytes;
} cli_tensors;

/* Allocates and uploads. On failure prints the library's message, frees
 * what was made, returns the status. */
ditattn_status cli_tensors_upload(ditattn_context *ctx, int64_t B, int64_t H, int64_t Nq,
                                  int64_t Nk, int64_t D, const float *q, const float *k,
                                  const float *v, int want_lse, cli_tensors *t);
/* Copies out (and lse when lse_host is non-NULL) to the host. */
ditattn_status cli_tensors_download(cli_tensors *t, float *out_host, float *lse_host);
/* Poisons out and lse with NaN so a run that writes nothing is caught. */
ditattn_status cli_tensors_poison(cli_tensors *t);
void cli_tensors_free(cli_tensors *t);

#endif
