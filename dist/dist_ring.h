/* The K/V ring shared by dense and LLSA: every rank's K/V slice visits
 * every rank once. Two buffers: while a step computes on the slice it
 * holds, that slice is already being sent on and the next one received. */
#ifndef DITATTN_DIST_RING_H
#define DITATTN_DIST_RING_H

#include "dist_internal.h"

/* Called once per ring step with the K/V slice of rank `src`, which covers
 * global tokens [job->offset[src], + job->length[src]). k and v are views of
 * (B, H, length[src], D). A failure is remembered; the ring keeps moving
 * so the other ranks do not hang, and the call agrees on it at the end. */
typedef ditattn_status (*dt_ring_step_fn)(void *user, int step, int src, const ditattn_tensor *k,
                                          const ditattn_tensor *v);

/* Copies k then v (f32, any strides) into buf as two contiguous
 * (B, H, N, D) blocks: the layout every host ring sends. */
void dt_ring_pack_kv(float *buf, const ditattn_tensor *k, const ditattn_tensor *v);
/* Views k, v of a packed buffer holding a slice of n tokens shaped like `like`. */
void dt_ring_kv_views(float *buf, const ditattn_tensor *like, int64_t n, ditattn_tensor *k,
                      ditattn_tensor *v);

/* Runs the ring over the local k, v (step 0 computes on them directly).
 * Returns the agreed status of the whole ring (same on every rank). */
ditattn_status dt_ring_run(dt_dist_job *job, const ditattn_tensor *k, const ditattn_tensor *v,
                           dt_ring_step_fn step, void *user);

#endif
