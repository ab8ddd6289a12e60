/* One library call described by an op name and key=value arguments, with its
 * inputs drawn from a source (seeded random data, or arrays loaded from
 * .npy files) and every input and output collected as contiguous named
 * arrays. The oracle driver, the golden generator, the golden checker and
 * the cross-backend sweep all run cases through this one function, so they
 * agree on what each op's inputs, outputs and parameters are.
 *
 * Ops (outputs after ->): dense q,k,v -> out,lse; dense_bwd q,k,v,dout ->
 * dq,dk,dv; rope x[,pos] -> y; order x -> fwd,inv,perm,pos; pool x -> y;
 * merge out_acc,lse_acc,out_part,lse_part -> out,lse; llsa q,k,v ->
 * out,lse,sel1..selL; llsa_bwd q,k,v,dout -> dq,dk,dv; ropeslr
 * q,k,v,A,Bk,Et,Ey,Ex,W[,pos] -> out,lse,sel; ropeslr_bwd (+dout) ->
 * dq,dk,dv,dA,dBk,dEt,dEy,dEx,dW. Backward ops run the forward first on the
 * same backend. Tensors are (B,H,N,D); weights (1,H,rows,cols). */
#ifndef DITATTN_VERIFY_CASES_H
#define DITATTN_VERIFY_CASES_H

#include "verify_args.h"

#include "ditattn/ditattn.h"

#include <stdint.h>

#define VC_MAX_ARRAYS 32

typedef struct vc_array {
  char name[24];
  int is_int; /* int32, else f32 */
  int ndim;
  int64_t shape[4];
  void *data; /* contiguous, malloc'ed */
} vc_array;

typedef struct vc_list {
  int n;
  vc_array a[VC_MAX_ARRAYS];
} vc_list;

int64_t vc_count(const vc_array *a);
const vc_array *vc_find(const vc_list *l, const char *name);
/* Appends a copy of data; returns nonzero when the list is full or malloc fails. */
int vc_append(vc_list *l, const char *name, int is_int, int ndim, const int64_t *shape,
              const void *data);
void vc_list_free(vc_list *l);

/* Where inputs come from. random: uniform [-amp, amp) (quant: multiples of
 * amp/2 in [-amp, amp], so pooled scores tie exactly); otherwise the arrays
 * of `loaded`, whose shapes must match. */
typedef struct vc_source {
  int random;
  int quant;
  const vc_list *loaded;
  char error[256];
} vc_source;

/* Exit-style codes of vc_run. */
enum { VC_OK = 0, VC_USAGE = 2, VC_STATUS = 3 };

/* Runs `op` on ctx. On VC_STATUS *status holds the library's answer (its
 * message is copied to src->error); on
 * VC_USAGE a reason is printed to stderr. inputs/outputs receive the arrays
 * (inputs first, even on failure). Random inputs use vt_srand's generator. */
int vc_run(ditattn_context *ctx, const char *op, const va_args *args, vc_source *src,
           vc_list *inputs, vc_list *outputs, ditattn_status *status);

/* ‖got − want‖ / max(‖want‖, 1e-2·√n) (an RMS floor of 1e-2, so outputs that
 * are ~0 by cancellation compare absolutely); inf on NaN/Inf in got
 * where want is finite, or on shape mismatch. Exact (0 or inf) for int32.
 * Entries where want is ±inf must match exactly. */
double vc_rel_err(const vc_array *got, const vc_array *want);

#endif
