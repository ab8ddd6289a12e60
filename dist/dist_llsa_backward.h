/* Distributed LLSA backward internals: the gradient ring, on which every
 * K/V slice travels together with a dK/dV accumulator for its tokens. */
#ifndef DITATTN_DIST_LLSA_BACKWARD_H
#define DITATTN_DIST_LLSA_BACKWARD_H

#include "dist_internal.h"
#include "backends/cpu/cpu_internal.h"

/* Called once per ring step with the K/V slice of rank `src` (views of
 * (B, H, job->length[src], D)). Adds this rank's contributions to that
 * slice's key/value gradients into dkv: 2 × B·H × length[src] × D doubles,
 * dk then dv, rows [bh][token - offset[src]]. At step 0 (src = this rank)
 * dkv is the caller's `home`; later it is a zeroed buffer that is then added
 * to the accumulator arriving from the left. A failure is remembered; the
 * ring keeps moving and agrees on it at the end. */
typedef ditattn_status (*dt_grad_ring_step_fn)(void *user, int step, int src,
                                               const ditattn_tensor *k, const ditattn_tensor *v,
                                               double *dkv);

/* Runs the gradient ring over the local k, v. On return (DITATTN_OK on
 * every rank, or the same failure) home (2 × B·H × length × D doubles, dk
 * then dv, zeroed by the caller) holds the contributions of every rank's
 * queries to this rank's tokens: its own (step 0) plus the accumulator that
 * came back after visiting all other ranks, added in that order. */
ditattn_status dt_dist_grad_ring_run(dt_dist_job *job, const ditattn_tensor *k,
                                     const ditattn_tensor *v, dt_grad_ring_step_fn step, void *user,
                                     double *home);

/* The query rows of one level-1 block on this rank (loaded contiguous)
 * and their gradient accumulator. */
typedef struct dt_bwd_queries {
  int64_t rows, D;
  float scale;
  const float *q, *dout; /* rows × D */
  const float *lse;      /* rows: the forward's LSE */
  const double *delta;   /* rows: Δ = o · dO (double, as ref/) */
  const float *delta_f;  /* rows: the same in float, for the CPU tile kernel */
  double *dq;            /* rows × D: dq += scale · dS · k */
} dt_bwd_queries;

/* Gradients through Q for n keys (§4): p = exp(scale·q·k + ln w − LSE),
 * dS = p (dO·v − Δ); dq accumulates into Q->dq, dk += scale·dS·q and
 * dv += p·dO into dk, dv (n × D doubles). Scalar, every sum in double, the
 * same arithmetic as ref/'s backprop_query. lw: ln-weights or NULL (0). */
void dt_dist_bwd_keys_ref(const dt_bwd_queries *Q, int64_t n, const double *k, const double *v,
                          const double *lw, double *dk, double *dv);

/* Scratch of the CPU variant. */
typedef struct dt_bwd_cpu_scratch {
  float *p, *ds;    /* DT_CPU_QUERY_TILE × DT_CPU_KEY_CHUNK */
  float *kpack;     /* (DT_CPU_KEY_CHUNK + 16) × D */
  float *dqf;       /* DT_CPU_QUERY_TILE × D */
  float *dkf, *dvf; /* DT_CPU_KEY_CHUNK × D */
} dt_bwd_cpu_scratch;
/* Floats of scratch for head dimension D (one allocation, split by
 * dt_dist_bwd_cpu_scratch_split). */
int64_t dt_dist_bwd_cpu_scratch_floats(int64_t D);
dt_bwd_cpu_scratch dt_dist_bwd_cpu_scratch_split(float *buf, int64_t D);
/* The same gradients with the CPU backend's tile kernels (float tiles, as
 * ditattn_llsa_backward on a CPU context); each tile's dq, dk, dv are added
 * to the double accumulators. k, v: float rows with leading dimensions. */
void dt_dist_bwd_keys_cpu(const dt_bwd_queries *Q, const dt_bwd_cpu_scratch *S, int64_t n,
                          const float *k, int64_t k_ld, const float *v, int64_t v_ld,
                          const float *lw, double *dk, double *dv);

#endif
