/* 3D rotary position embedding (ropeslr.md §5). */
#include "ref.h"

#include <math.h>

ditattn_status dt_ref_rope(ditattn_context *ctx, const dt_rope *p) {
  (void)ctx;
  const ditattn_tensor *x = p->x, *y = p->y;
  const int64_t B = x->shape[0], H = x->shape[1], N = x->shape[2], D = x->shape[3];
  const double sign = p->direction == DITATTN_INVERSE ? -1.0 : 1.0;
  const int64_t rotated = p->params.dims[0] + p->params.dims[1] + p->params.dims[2];
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t n = 0; n < N; n++) {
        const float *src = dt_f32_at(x, b, h, n, 0);
        float *dst = dt_f32_at(y, b, h, n, 0);
        int64_t part_begin = 0; /* first channel of axis a's part */
        for (int a = 0; a < 3; a++) {
          const int64_t dim = p->params.dims[a];
          const double coord = (double)p->pos[3 * n + a];
          for (int64_t j = 0; j < dim / 2; j++) {
            const double omega = pow(p->params.theta, -2.0 * (double)j / (double)dim);
            const double phi = sign * coord * omega;
            int64_t i0, i1;
            if (p->params.pairing == DITATTN_ROPE_INTERLEAVED) {
              i0 = part_begin + 2 * j;
              i1 = i0 + 1;
            } else {
              i0 = part_begin + j;
              i1 = i0 + dim / 2;
            }
            /* Read both before writing: src and dst may be the same row. */
            const double x0 = src[i0], x1 = src[i1];
            dst[i0] = (float)(x0 * cos(phi) - x1 * sin(phi));
            dst[i1] = (float)(x0 * sin(phi) + x1 * cos(phi));
          }
          part_begin += dim;
        }
        for (int64_t d = rotated; d < D; d++) dst[d] = src[d];
      }
  return DITATTN_OK;
}
