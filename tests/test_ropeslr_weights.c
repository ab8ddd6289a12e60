/* tools/weights.{h,c}: RoPeSLR weights sets from .npy directories and .npz
 * archives (stored and deflated entries), random sets, shape checks, errors,
 * and a forward pass through the views. */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include "npy.h"
#include "weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef DITATTN_HAVE_LIBZIP
#include <zip.h>
#endif

typedef struct tmpdir {
  char path[256];
} tmpdir;

static tmpdir make_tmpdir(void) {
  tmpdir d;
  const char *base = getenv("TMPDIR");
  snprintf(d.path, sizeof d.path, "%s/ditattn_w_XXXXXX", base ? base : "/tmp");
  assert_non_null(mkdtemp(d.path));
  return d;
}

static void remove_tmpdir(const tmpdir *d) {
  static const char *const names[] = {"A.npy", "B.npy", "Et.npy",  "Ey.npy", "Ex.npy",
                                      "W.npy", "w.npz", "bad.npz", "x.npy"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char file[512];
    snprintf(file, sizeof file, "%s/%s", d->path, names[i]);
    unlink(file);
  }
  rmdir(d->path);
}

static void expect_same(const dt_slr_weights_host *a, const dt_slr_weights_host *b) {
  assert_int_equal(a->H, b->H);
  assert_int_equal(a->D, b->D);
  assert_int_equal(a->r, b->r);
  for (int i = 0; i < 3; i++) assert_int_equal(a->grid[i], b->grid[i]);
  for (int w = 0; w < DT_SLR_NWEIGHTS; w++)
    assert_memory_equal(a->data[w], b->data[w], (size_t)dt_slr_weight_count(a, w) * sizeof(float));
}

static dt_slr_weights_host random_set(uint64_t seed) {
  dt_slr_weights_host w;
  const int64_t grid[3] = {2, 3, 4};
  char err[256];
  assert_int_equal(dt_slr_weights_random(2, 6, 5, grid, seed, &w, err, sizeof err), DITATTN_OK);
  return w;
}

static void directory_round_trip(void **state) {
  (void)state;
  const uint64_t seed = tu_seed();
  tmpdir d = make_tmpdir();
  dt_slr_weights_host w = random_set(seed), back;
  char err[512];
  assert_int_equal(dt_slr_weights_save_dir(&w, d.path, err, sizeof err), DITATTN_OK);
  assert_int_equal(dt_slr_weights_load(d.path, &back, err, sizeof err), DITATTN_OK);
  expect_same(&w, &back);
  dt_slr_weights_free(&back);

  /* A leading 1 is accepted ([1, H, D, r] like the library's views). */
  char file[512];
  snprintf(file, sizeof file, "%s/A.npy", d.path);
  const int64_t shape4[4] = {1, 2, 6, 5};
  assert_int_equal(dt_npy_write_f32(file, 4, shape4, w.data[DT_SLR_A], err, sizeof err),
                   DITATTN_OK);
  assert_int_equal(dt_slr_weights_load(d.path, &back, err, sizeof err), DITATTN_OK);
  expect_same(&w, &back);
  dt_slr_weights_free(&back);

  /* W of the wrong size: named in the message, nothing returned. */
  snprintf(file, sizeof file, "%s/W.npy", d.path);
  const int64_t bad_w[3] = {2, 6, 5};
  assert_int_equal(dt_npy_write_f32(file, 3, bad_w, w.data[DT_SLR_W], err, sizeof err), DITATTN_OK);
  assert_int_equal(dt_slr_weights_load(d.path, &back, err, sizeof err), DITATTN_ERR_SHAPE_MISMATCH);
  assert_non_null(strstr(err, "weight W"));
  assert_null(back.data[0]);
  /* A 2-D table is refused too. */
  const int64_t flat[2] = {12, 5};
  assert_int_equal(dt_npy_write_f32(file, 2, flat, w.data[DT_SLR_W], err, sizeof err), DITATTN_OK);
  assert_int_equal(dt_slr_weights_load(d.path, &back, err, sizeof err), DITATTN_ERR_SHAPE_MISMATCH);
  /* Ey missing. */
  snprintf(file, sizeof file, "%s/Ey.npy", d.path);
  unlink(file);
  assert_int_equal(dt_slr_weights_load(d.path, &back, err, sizeof err), DITATTN_ERR_IO);
  assert_non_null(strstr(err, "Ey.npy"));
  assert_int_equal(dt_slr_weights_load(NULL, &back, err, sizeof err), DITATTN_ERR_NULL_POINTER);
  dt_slr_weights_free(&w);
  remove_tmpdir(&d);
}

#ifdef DITATTN_HAVE_LIBZIP
/* The bytes of a .npy file written by dt_npy_write_f32. */
static unsigned char *npy_bytes(const char *dir, const char *name, int ndim, const int64_t *shape,
                                const float *data, size_t *len) {
  char file[512], err[256];
  snprintf(file, sizeof file, "%s/x.npy", dir);
  (void)name;
  assert_int_equal(dt_npy_write_f32(file, ndim, shape, data, err, sizeof err), DITATTN_OK);
  FILE *f = fopen(file, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(*len);
  assert_int_equal(fread(buf, 1, *len, f), *len);
  fclose(f);
  return buf;
}

/* Writes w into an .npz; `broken` (0..3) damages one entry: 1 drops Ex,
 * 2 truncates Et's data, 3 stores B as float64. Deflate or store per entry. */
static void write_npz(const char *dir, const char *npz, const dt_slr_weights_host *w, int broken) {
  int code = 0;
  zip_t *za = zip_open(npz, ZIP_CREATE | ZIP_TRUNCATE, &code);
  assert_non_null(za);
  for (int a = 0; a < DT_SLR_NWEIGHTS; a++) {
    if (broken == 1 && a == DT_SLR_EX) continue;
    int64_t shape[3] = {w->H, 0, 0};
    dt_slr_weight_dims(w, a, &shape[1], &shape[2]);
    size_t len;
    unsigned char *buf = npy_bytes(dir, dt_slr_weight_name(a), 3, shape, w->data[a], &len);
    if (broken == 2 && a == DT_SLR_ET) len -= 4;
    if (broken == 3 && a == DT_SLR_B) { /* rewrite as '<f8' by hand: header then doubles */
      const int64_t count = dt_slr_weight_count(w, a);
      char header[128];
      int hl = snprintf(header, sizeof header,
                        "{'descr': '<f8', 'fortran_order': False, 'shape': (%lld, %lld, %lld), }",
                        (long long)shape[0], (long long)shape[1], (long long)shape[2]);
      while ((10 + hl + 1) % 64 != 0) header[hl++] = ' ';
      header[hl++] = '\n';
      free(buf);
      len = 10 + (size_t)hl + (size_t)count * 8;
      buf = malloc(len);
      memcpy(buf, "\x93NUMPY\x01\x00", 8);
      buf[8] = (unsigned char)(hl & 0xff);
      buf[9] = (unsigned char)(hl >> 8);
      memcpy(buf + 10, header, (size_t)hl);
      for (int64_t i = 0; i < count; i++) {
        double v = w->data[a][i];
        memcpy(buf + 10 + hl + i * 8, &v, 8); /* the test host is little-endian (x86/arm) */
      }
    }
    zip_source_t *src = zip_source_buffer(za, buf, len, 1); /* libzip frees buf */
    assert_non_null(src);
    char entry[32];
    snprintf(entry, sizeof entry, "%s.npy", dt_slr_weight_name(a));
    zip_int64_t index = zip_file_add(za, entry, src, ZIP_FL_OVERWRITE);
    assert_true(index >= 0);
    assert_int_equal(
        zip_set_file_compression(za, (zip_uint64_t)index, a % 2 ? ZIP_CM_STORE : ZIP_CM_DEFLATE, 0),
        0);
  }
  assert_int_equal(zip_close(za), 0);
}

static void npz_archives(void **state) {
  (void)state;
  const uint64_t seed = tu_seed() + 1u;
  tmpdir d = make_tmpdir();
  dt_slr_weights_host w = random_set(seed), back;
  char npz[512], err[512];
  snprintf(npz, sizeof npz, "%s/w.npz", d.path);
  write_npz(d.path, npz, &w, 0);
  assert_int_equal(dt_slr_weights_load(npz, &back, err, sizeof err), DITATTN_OK);
  expect_same(&w, &back);
  dt_slr_weights_free(&back);

  write_npz(d.path, npz, &w, 3); /* float64 B is converted */
  assert_int_equal(dt_slr_weights_load(npz, &back, err, sizeof err), DITATTN_OK);
  expect_same(&w, &back);
  dt_slr_weights_free(&back);

  write_npz(d.path, npz, &w, 1);
  assert_int_equal(dt_slr_weights_load(npz, &back, err, sizeof err), DITATTN_ERR_IO);
  assert_non_null(strstr(err, "Ex.npy"));
  write_npz(d.path, npz, &w, 2);
  assert_int_equal(dt_slr_weights_load(npz, &back, err, sizeof err), DITATTN_ERR_FORMAT);
  assert_non_null(strstr(err, "Et.npy"));
  assert_null(back.data[DT_SLR_A]);

  char bad[512];
  snprintf(bad, sizeof bad, "%s/bad.npz", d.path);
  FILE *f = fopen(bad, "wb");
  fputs("this is not a zip archive", f);
  fclose(f);
  assert_int_equal(dt_slr_weights_load(bad, &back, err, sizeof err), DITATTN_ERR_IO);
  assert_non_null(strstr(err, "bad.npz"));
  snprintf(bad, sizeof bad, "%s/missing.npz", d.path);
  assert_int_equal(dt_slr_weights_load(bad, &back, err, sizeof err), DITATTN_ERR_IO);
  dt_slr_weights_free(&w);
  remove_tmpdir(&d);
}
#endif

static void random_sets_and_checks(void **state) {
  (void)state;
  const uint64_t seed = tu_seed() + 2u;
  dt_slr_weights_host a = random_set(seed), b = random_set(seed), c = random_set(seed + 1);
  expect_same(&a, &b); /* deterministic in the seed */
  assert_memory_not_equal(a.data[0], c.data[0], (size_t)dt_slr_weight_count(&a, 0) * 4);
  for (int w = 0; w < DT_SLR_NWEIGHTS; w++) {
    const double bound = (w >= DT_SLR_ET && w <= DT_SLR_EX) ? 0.5 : 1.0 / sqrt(6.0);
    double max = 0.0;
    for (int64_t i = 0; i < dt_slr_weight_count(&a, w); i++) max = fmax(max, fabs(a.data[w][i]));
    assert_true(max <= bound && max > 0.5 * bound);
  }
  char err[256];
  const int64_t grid[3] = {2, 3, 4}, other[3] = {2, 4, 3};
  assert_int_equal(dt_slr_weights_check(&a, 2, 6, grid, err, sizeof err), DITATTN_OK);
  assert_int_equal(dt_slr_weights_check(&a, 3, 6, grid, err, sizeof err),
                   DITATTN_ERR_SHAPE_MISMATCH);
  assert_int_equal(dt_slr_weights_check(&a, 2, 8, grid, err, sizeof err),
                   DITATTN_ERR_SHAPE_MISMATCH);
  assert_int_equal(dt_slr_weights_check(&a, 2, 6, other, err, sizeof err),
                   DITATTN_ERR_SHAPE_MISMATCH);
  assert_non_null(strstr(err, "2x3x4"));
  dt_slr_weights_host z;
  assert_int_equal(dt_slr_weights_random(0, 6, 5, grid, 1, &z, err, sizeof err),
                   DITATTN_ERR_INVALID_ARGUMENT);
  const int64_t huge[3] = {INT64_C(1) << 31, INT64_C(1) << 31, 1};
  assert_int_equal(dt_slr_weights_random(1 << 30, 8, 1 << 30, huge, 1, &z, err, sizeof err),
                   DITATTN_ERR_OVERFLOW);

  /* The views drive a forward pass. */
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  ditattn_ropeslr_params params = ditattn_ropeslr_params_default();
  params.block = 4;
  params.rank = a.r;
  memcpy(params.grid, grid, sizeof params.grid);
  tu_tensor q = tu_tensor_new(1, 2, 24, 6, 0, 0), k = tu_tensor_new(1, 2, 24, 6, 0, 0);
  tu_tensor v = tu_tensor_new(1, 2, 24, 6, 0, 0), out = tu_tensor_new(1, 2, 24, 6, 0, 0);
  tu_fill_uniform(&q), tu_fill_uniform(&k), tu_fill_uniform(&v);
  ditattn_ropeslr_weights views = dt_slr_weights_views(&a, NULL);
  assert_int_equal(
      ditattn_ropeslr_forward(ctx, &params, &views, NULL, &q.t, &k.t, &v.t, &out.t, NULL, NULL),
      DITATTN_OK);
  assert_true(isfinite(tu_rel_err(&out.t, &out.t)));
  tu_tensor_free(&q), tu_tensor_free(&k), tu_tensor_free(&v), tu_tensor_free(&out);
  ditattn_context_destroy(ctx);
  dt_slr_weights_free(&a), dt_slr_weights_free(&b), dt_slr_weights_free(&c);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(directory_round_trip),
#ifdef DITATTN_HAVE_LIBZIP
      cmocka_unit_test(npz_archives),
#endif
      cmocka_unit_test(random_sets_and_checks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
