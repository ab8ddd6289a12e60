/* Row-major SGEMM: OpenBLAS when built with it, else a blocked loop nest
 * that the compiler vectorizes (cloned per ISA like cpu_vec.c). */
#include "cpu_internal.h"

#ifdef DITATTN_CPU_OPENBLAS
#include <cblas.h>

const char *dt_cpu_gemm_name(void) { return "openblas"; }

void dt_cpu_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                 int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, alpha, a,
              (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

#else

const char *dt_cpu_gemm_name(void) { return "own"; }

enum { BLK = 64 };

/* c[i][j] += alpha Σ_p a(i,p) b(p,j) with the innermost loop over j. */
DT_CLONES void dt_cpu_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                           const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                           float *c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  for (int64_t i = 0; i < m; i++) {
    float *ci = c + i * ldc;
    if (beta == 0.0f)
      for (int64_t j = 0; j < n; j++) ci[j] = 0.0f;
    else if (beta != 1.0f)
      for (int64_t j = 0; j < n; j++) ci[j] *= beta;
  }
  float bt[BLK * BLK]; /* a (p, j) panel of b, row-major in j */
  for (int64_t j0 = 0; j0 < n; j0 += BLK) {
    const int64_t nj = n - j0 < BLK ? n - j0 : BLK;
    for (int64_t p0 = 0; p0 < k; p0 += BLK) {
      const int64_t np = k - p0 < BLK ? k - p0 : BLK;
      for (int64_t p = 0; p < np; p++)
        for (int64_t j = 0; j < nj; j++)
          bt[p * BLK + j] = trans_b ? b[(j0 + j) * ldb + p0 + p] : b[(p0 + p) * ldb + j0 + j];
      for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * ldc + j0;
        for (int64_t p = 0; p < np; p++) {
          const float aip = alpha * (trans_a ? a[(p0 + p) * lda + i] : a[i * lda + p0 + p]);
          const float *bp = bt + p * BLK;
          for (int64_t j = 0; j < nj; j++) ci[j] += aip * bp[j];
        }
      }
    }
  }
}
#endif
