/* LLSA and RoPeSLR cases of ditattn_dist_gpu_check (gpu_check_sparse.c). */
#ifndef DITATTN_DIST_GPU_CHECK_SPARSE_H
#define DITATTN_DIST_GPU_CHECK_SPARSE_H

#include "ditattn/ditattn_dist.h"

#include <stdint.h>

/* Runs `cases` random LLSA / RoPeSLR cases (alternating) on MPI_COMM_WORLD:
 * dist forward on gpu vs the single-process forward on gpu and on cpu;
 * stats.gpu_transfer must equal expect_transfer. host_backend: gpu is a
 * host context under the device-path test hook (f32 only). Prints one line
 * per case on rank 0, adds the cases to *total, returns how many failed
 * (the same on every rank). */
int gs_check_sparse(ditattn_context *gpu, ditattn_context *cpu, uint64_t base, int cases,
                    int host_backend, int expect_transfer, int *total);

#endif
