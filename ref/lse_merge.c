/* Log-sum-exp merge of two partial attention results over disjoint key sets. */
#include "ref.h"

#include <math.h>

ditattn_status dt_ref_lse_merge(ditattn_context *ctx, const dt_lse_merge *p) {
  (void)ctx;
  const ditattn_tensor *acc = p->out_acc, *part = p->out_part;
  const int64_t B = acc->shape[0], H = acc->shape[1], N = acc->shape[2], D = acc->shape[3];
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t n = 0; n < N; n++) {
        const int64_t row = (b * H + h) * N + n;
        const double lse_acc = p->lse_acc[row], lse_part = p->lse_part[row];
        float *oa = dt_f32_at(acc, b, h, n, 0);
        const float *op = dt_f32_at(part, b, h, n, 0);
        /* lse = -inf marks an empty side: it contributes nothing. */
        if (lse_part == -INFINITY) {
          if (lse_acc == -INFINITY)
            for (int64_t d = 0; d < D; d++) oa[d] = 0.0f;
          continue;
        }
        if (lse_acc == -INFINITY) {
          for (int64_t d = 0; d < D; d++) oa[d] = op[d];
          p->lse_acc[row] = (float)lse_part;
          continue;
        }
        const double max = lse_acc > lse_part ? lse_acc : lse_part;
        const double lse = max + log(exp(lse_acc - max) + exp(lse_part - max));
        const double w_acc = exp(lse_acc - lse), w_part = exp(lse_part - lse);
        for (int64_t d = 0; d < D; d++)
          oa[d] = (float)(w_acc * (double)oa[d] + w_part * (double)op[d]);
        p->lse_acc[row] = (float)lse;
      }
  return DITATTN_OK;
}
