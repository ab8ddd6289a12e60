/* Tensor view constructors. */
#include "backend.h"

size_t ditattn_dtype_size(ditattn_dtype dtype) {
  switch (dtype) {
  case DITATTN_F32: return 4;
  case DITATTN_BF16: return 2;
  case DITATTN_F16: return 2;
  default: return 0;
  }
}

ditattn_tensor ditattn_tensor_bhnd(void *data, ditattn_dtype dtype, int64_t B, int64_t H, int64_t N,
                                   int64_t D) {
  ditattn_tensor t = {data, dtype, {B, H, N, D}, {H * N * D, N * D, D}};
  return t;
}

ditattn_tensor ditattn_tensor_bnhd(void *data, ditattn_dtype dtype, int64_t B, int64_t H, int64_t N,
                                   int64_t D) {
  ditattn_tensor t = {data, dtype, {B, H, N, D}, {N * H * D, D, H * D}};
  return t;
}
