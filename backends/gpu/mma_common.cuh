/* Warp-level tensor-core helpers (mma.sync m16n8k16, fp32 accumulate) shared
 * by the dense and gathered-key attention kernels. NVIDIA only: everything
 * here exists where DT_GPU_HOST_HAS_MMA is defined (gpu_port.h); HIP builds
 * keep the fp32 kernels.
 *
 * Fragment roles (PTX ISA "Matrix Fragments for mma.m16n8k16"): with
 * g = lane / 4 and t = lane % 4,
 *   A (16×16, row): a[0] = A[g][2t..2t+1],   a[1] = A[g+8][2t..2t+1],
 *                   a[2] = A[g][2t+8..2t+9], a[3] = A[g+8][2t+8..2t+9];
 *   B (16×8, col):  b0 = B[2t..2t+1][g],     b1 = B[2t+8..2t+9][g];
 *   C/D (16×8):     d[0..1] = C[g][2t..2t+1], d[2..3] = C[g+8][2t..2t+1]. */
#ifndef DITATTN_GPU_MMA_COMMON_CUH
#define DITATTN_GPU_MMA_COMMON_CUH

#include "gpu_common.cuh"

#if defined(DT_GPU_HOST_HAS_MMA)
namespace DT_GPU_NS {

/* Two floats rounded to T, packed lo | hi << 16 (one A/B register). */
template <typename T> DT_DEV unsigned pack2(float lo, float hi) {
  return (unsigned)from_f32<T>(lo).bits | ((unsigned)from_f32<T>(hi).bits << 16);
}

/* d += a·b for a 16×16 (row) by 16×8 (col) tile. */
#define DT_MMA16816(ty)                                                                            \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." ty "." ty ".f32 {%0,%1,%2,%3}, "           \
               "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                                          \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                    \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
template <typename T>
DT_DEV void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#if defined(DT_GPU_DEVICE_HAS_MMA)
  if constexpr (T::is_bf16)
    DT_MMA16816("bf16");
  else
    DT_MMA16816("f16");
#else
  (void)d, (void)a, (void)b0, (void)b1;
  __trap();
#endif
}
#undef DT_MMA16816

/* Elements d, d + 1 of a 16-bit row as one register (0 for a missing row);
 * the row must be 4-byte aligned at d. */
DT_DEV unsigned ld_pair(const unsigned short *row, int d) {
  return row ? *(const unsigned *)(row + d) : 0u;
}

/* 16-byte vector access to a tensor: data 16-byte aligned and every stride a
 * multiple of 8 elements (16-bit dtypes), so each row starts 16-byte aligned. */
static inline int rows_aligned16(const ditattn_tensor *x) {
  return ((uintptr_t)x->data % 16) == 0 && x->stride[0] % 8 == 0 && x->stride[1] % 8 == 0 &&
         x->stride[2] % 8 == 0;
}

} // namespace DT_GPU_NS
#endif /* DT_GPU_HOST_HAS_MMA */

#endif /* DITATTN_GPU_MMA_COMMON_CUH */
