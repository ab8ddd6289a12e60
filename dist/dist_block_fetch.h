/* Whole-block fetch (dist_block_fetch.c), shared by distributed RoPeSLR
 * (its blocks) and LLSA (its level-1 blocks): each rank asks the owners
 * for the rows of the blocks it needs instead of every K/V slice visiting
 * every rank. */
#ifndef DITATTN_DIST_BLOCK_FETCH_H
#define DITATTN_DIST_BLOCK_FETCH_H

#include "dist_internal.h"

/* Fetches whole blocks of b tokens ([c·b, min(c·b + b, N)) of every (b, h))
 * whose rows other ranks hold: MPI_Alltoall of request counts, Alltoallv of
 * (bh, block) keys, then one MPI_Ialltoallv of k and v rows left in flight
 * so the caller can overlap it. A slot holds a whole block, k rows then v
 * rows (2·b rows of D floats), local rows included. */
typedef struct dt_dist_block_fetch {
  int64_t block, n, N, H, D;
  int64_t *slot_of;  /* BH·n: slot of (bh, c), −1 when not fetched */
  int64_t *slot_key; /* nslots: bh·n + c */
  int64_t nslots;
  int *counts; /* 8·P: requests out/in (counts, displs), rows out/in */
  int64_t *req_out, *req_in;
  float *slots, *send, *recv;
  MPI_Datatype row;
  MPI_Request req;
  int64_t bytes_received;
} dt_dist_block_fetch;

/* Empty (safe to free). */
static inline void dt_dist_block_fetch_init(dt_dist_block_fetch *F) {
  *F = (dt_dist_block_fetch){0};
  F->row = MPI_DATATYPE_NULL;
  F->req = MPI_REQUEST_NULL;
}
/* Collective. want: BH·n flags (1 = needed); blocks wholly inside this rank's
 * slice get no slot. On DITATTN_OK the row transfer is in flight. Returns
 * the agreed status; F must be freed either way. */
ditattn_status dt_dist_block_fetch_start(dt_dist_job *job, dt_dist_block_fetch *F, int64_t block,
                                         int64_t BH, const unsigned char *want,
                                         const ditattn_tensor *k, const ditattn_tensor *v);
/* Collective: waits for the rows and places them in their slots. */
ditattn_status dt_dist_block_fetch_finish(dt_dist_job *job, dt_dist_block_fetch *F);
/* The way back, for a backward: slot_grad holds, per slot, gradients of
 * the block's k rows then v rows laid out as the slots (2·block rows of D
 * doubles). Each owner adds the rows of its slice into home_dk / home_dv
 * (BH × length × D doubles, this rank's tokens): the parts of the slots
 * that lie in this rank's slice directly, the others' through one
 * MPI_Alltoallv, the fetch's row counts reversed. Collective, after
 * dt_dist_block_fetch_finish; returns the agreed status. */
ditattn_status dt_dist_block_fetch_return(dt_dist_job *job, const dt_dist_block_fetch *F,
                                          const double *slot_grad, double *home_dk,
                                          double *home_dv);
/* Waits for a transfer still in flight (error paths) and frees. */
void dt_dist_block_fetch_free(dt_dist_block_fetch *F);
static inline float *dt_dist_block_fetch_k(const dt_dist_block_fetch *F, int64_t slot) {
  return F->slots + slot * 2 * F->block * F->D;
}
static inline float *dt_dist_block_fetch_v(const dt_dist_block_fetch *F, int64_t slot) {
  return dt_dist_block_fetch_k(F, slot) + F->block * F->D;
}

#endif
