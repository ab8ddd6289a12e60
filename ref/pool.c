/* Mean pooling over consecutive token blocks (the last block may be partial). */
#include "ref.h"

ditattn_status dt_ref_pool(ditattn_context *ctx, const dt_pool *p) {
  (void)ctx;
  const ditattn_tensor *x = p->x, *y = p->y;
  const int64_t B = x->shape[0], H = x->shape[1], N = x->shape[2], D = x->shape[3];
  const int64_t blocks = y->shape[2];
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t c = 0; c < blocks; c++) {
        const int64_t begin = c * p->block;
        /* Written so that begin + block cannot overflow (x may be a huge stride-0 view). */
        const int64_t end = N - begin > p->block ? begin + p->block : N;
        for (int64_t d = 0; d < D; d++) {
          double sum = 0.0;
          for (int64_t n = begin; n < end; n++) sum += (double)*dt_f32_at(x, b, h, n, d);
          *dt_f32_at(y, b, h, c, d) = (float)(sum / (double)(end - begin));
        }
      }
  return DITATTN_OK;
}
