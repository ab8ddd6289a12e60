/* RoPeSLR weights sets for the tools: load from a directory of .npy files or
 * a .npz archive, make random ones for benchmarks, save, and view them as the
 * library's ditattn_ropeslr_weights.
 *
 * Files (spec ropeslr.md §1 names; f32 '<f4', or '<f8' converted):
 *   A.npy  [H, D, r]   query projection      B.npy  [H, D, r]   key projection
 *   Et.npy [H, T, r]   PE table of t         Ey.npy [H, Hg, r]  PE table of y
 *   Ex.npy [H, W, r]   PE table of x         W.npy  [H, D, D]   output projection
 * Each may also carry a leading 1 ([1, H, D, r], as the library's views).
 * A path ending in ".npz" is read as a zip archive holding those six
 * entries (np.savez / np.savez_compressed: libzip decompresses); any other
 * path is a directory holding the six files. A gives H, D, r; the others
 * must agree; the grid (T, Hg, W) is read off the PE tables.
 *
 * Library rules as npy.h: nothing printed, a status plus a one-line message
 * (naming the file) in err, malloc'd memory freed on every error path. */
#ifndef DITATTN_TOOLS_WEIGHTS_H
#define DITATTN_TOOLS_WEIGHTS_H

#include "ditattn/ditattn.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { DT_SLR_A = 0, DT_SLR_B, DT_SLR_ET, DT_SLR_EY, DT_SLR_EX, DT_SLR_W, DT_SLR_NWEIGHTS };

/* Host f32 arrays, C order, shapes as above. */
typedef struct dt_slr_weights_host {
  int64_t H, D, r;
  int64_t grid[3]; /* T, Hg, W */
  float *data[DT_SLR_NWEIGHTS];
} dt_slr_weights_host;

/* "A", "B", "Et", "Ey", "Ex", "W". */
const char *dt_slr_weight_name(int which);
/* Rows and columns of one head's matrix of weight `which`. */
void dt_slr_weight_dims(const dt_slr_weights_host *w, int which, int64_t *rows, int64_t *cols);
/* Floats of weight `which` (H·rows·cols). */
int64_t dt_slr_weight_count(const dt_slr_weights_host *w, int which);

/* Loads a set (see above). On failure *w is zeroed. Status: IO (missing
 * file/entry, unreadable archive), FORMAT (bad .npy bytes), DTYPE,
 * SHAPE_MISMATCH (ranks or sizes that disagree), OVERFLOW, OUT_OF_MEMORY,
 * UNSUPPORTED (.npz in a build without libzip). */
ditattn_status dt_slr_weights_load(const char *path, dt_slr_weights_host *w, char *err,
                                   size_t err_size);

/* Random weights of the given shapes (benchmarks without trained weights):
 * A, B, W uniform in [-1, 1)/sqrt(D) (so Aᵀq is O(1) for q of O(1)
 * entries); Et, Ey, Ex uniform in [-0.5, 0.5). Deterministic in seed. */
ditattn_status dt_slr_weights_random(int64_t H, int64_t D, int64_t r, const int64_t grid[3],
                                     uint64_t seed, dt_slr_weights_host *w, char *err,
                                     size_t err_size);

/* Writes the six files into an existing directory (as [H, rows, cols]). */
ditattn_status dt_slr_weights_save_dir(const dt_slr_weights_host *w, const char *dir, char *err,
                                       size_t err_size);

/* Checks the set against a problem: H heads of dimension D on grid T×Hg×W.
 * SHAPE_MISMATCH with a message otherwise. */
ditattn_status dt_slr_weights_check(const dt_slr_weights_host *w, int64_t H, int64_t D,
                                    const int64_t grid[3], char *err, size_t err_size);

/* Library views (1, H, rows, cols) of the arrays at data[which] (the host
 * arrays when data is NULL; device copies of them otherwise). */
ditattn_ropeslr_weights dt_slr_weights_views(const dt_slr_weights_host *w, float *const *data);

void dt_slr_weights_free(dt_slr_weights_host *w);

#ifdef __cplusplus
}
#endif
#endif /* DITATTN_TOOLS_WEIGHTS_H */
