/* The attention kernel of distributed LLSA: fold n keys (with ln-weights)
 * into the online-softmax state of `rows` queries. The CPU backend's tile
 * kernel on DITATTN_BACKEND_CPU; a scalar kernel (double inside) on REF. */
#ifndef DITATTN_DIST_LLSA_ATTEND_H
#define DITATTN_DIST_LLSA_ATTEND_H

#include "backends/cpu/cpu_internal.h"

/* q: rows × D, contiguous, already multiplied by the softmax scale. k, v:
 * n rows with leading dimensions k_ld, v_ld. lnw: n floats or NULL (0).
 * scratch: DT_CPU_ATTEND_SCRATCH(rows, D) floats. */
void dt_dist_attend(int use_cpu, int64_t rows, int64_t n, int64_t D, const float *q, const float *k,
                    int64_t k_ld, const float *v, int64_t v_ld, const float *lnw, float *scratch,
                    const dt_cpu_softmax_state *st);

#endif
