/* Host f32 tensors for the verify tools: strided views poisoned with NaN,
 * seeded uniform data, contiguous copies. */
#ifndef DITATTN_VERIFY_TENSOR_H
#define DITATTN_VERIFY_TENSOR_H

#include "ditattn/ditattn.h"

#include <stddef.h>
#include <stdint.h>

typedef struct vt_tensor {
  ditattn_tensor t;
  float *buf; /* NULL when allocation failed */
  size_t count;
} vt_tensor;

void vt_srand(uint64_t seed);
uint64_t vt_rand_u64(void);
double vt_uniform(double lo, double hi);
int64_t vt_rand_int(int64_t lo, int64_t hi); /* inclusive */

/* (B,H,N,D) view with `pad` floats after each token row; bnhd picks the DiT
 * layout. Every float (padding too) starts as NaN. */
vt_tensor vt_new(int64_t B, int64_t H, int64_t N, int64_t D, int64_t pad, int bnhd);
void vt_free(vt_tensor *t);
/* Every element of the view uniform in [-amp, amp). */
void vt_fill_uniform(vt_tensor *t, double amp);
/* Contiguous (B,H,N,D) malloc'ed copy of the view. */
float *vt_contiguous(const vt_tensor *t);
/* Copies contiguous (B,H,N,D) data into the view. */
void vt_load(vt_tensor *t, const float *flat);
/* n floats, NaN-poisoned. */
float *vt_floats(size_t n);

#endif
