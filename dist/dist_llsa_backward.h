/* Distributed LLSA backward internals: the gradient ring, on which every
 * K/V slice travels together with a dK/dV accumulator for its tokens. */
#ifndef DITATTN_DIST_LLSA_BACKWARD_H
#define DITATTN_DIST_LLSA_BACKWARD_H

#include "dist_internal.h"

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

#endif
