/* The batched device copy of ditattn_dist_gpu_check (gpu_check_copy.c). */
#ifndef DITATTN_DIST_GPU_CHECK_COPY_H
#define DITATTN_DIST_GPU_CHECK_COPY_H

#include "ditattn/ditattn.h"

#include <stdint.h>

/* The backend's copy_2d_batch (the key summary exchange's copies) against
 * the same copies done on the host, byte for byte: random entries of every
 * word alignment, more than one launch's worth, destinations poisoned; a
 * pitch under the width refused with INVALID_ARGUMENT and the next batch
 * still right. Local to this rank's GPU. Prints one line; 1 if it passed
 * (a backend without the entry passes with a note). */
int gcc_check_copy_batch(ditattn_context *gpu, uint64_t seed, int rank);

#endif
