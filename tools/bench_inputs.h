/* Synthetic video-like attention inputs for `ditattn bench`: smooth
 * functions of (t, y, x) plus noise, 3D RoPE applied (Wan2.1 preset), tokens
 * put in Morton order, so that nearby tokens have similar keys the way real
 * DiT activations do and LLSA's block selection has locality to find. */
#ifndef DITATTN_TOOLS_BENCH_INPUTS_H
#define DITATTN_TOOLS_BENCH_INPUTS_H

#include "ditattn/ditattn.h"

#include <stddef.h>
#include <stdint.h>

typedef struct bench_shape {
  int64_t B, H, D;
  int64_t grid[3]; /* T, H, W: N = T·H·W */
} bench_shape;

/* Fills q, k, v (contiguous [B,H,N,D], host) deterministically from seed,
 * and pos (3·N int32: the (t, y, x) of each sequence position, so Morton
 * positions when the reordering ran, raster otherwise).
 * RoPE and the Morton order run on a ref context; if one of them fails
 * (e.g. not implemented yet) the step is skipped and `note` says so.
 * `note` always describes the inputs in one line. Fails only on memory. */
ditattn_status bench_make_inputs(const bench_shape *shape, uint64_t seed, float *q, float *k,
                                 float *v, int32_t *pos, char *note, size_t note_size);

#endif
