/* RoPeSLR weights sets: .npy directories, .npz archives (libzip), random
 * sets, views for the library. Format and rules in weights.h. */
#include "weights.h"

#include "npy.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DITATTN_HAVE_LIBZIP
#include <zip.h>
#endif

static const char *const weight_names[DT_SLR_NWEIGHTS] = {"A", "B", "Et", "Ey", "Ex", "W"};

static ditattn_status fail(char *err, size_t err_size, ditattn_status status, const char *fmt,
                           ...) {
  if (err && err_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
  }
  return status;
}

const char *dt_slr_weight_name(int which) {
  return which >= 0 && which < DT_SLR_NWEIGHTS ? weight_names[which] : "?";
}

void dt_slr_weight_dims(const dt_slr_weights_host *w, int which, int64_t *rows, int64_t *cols) {
  const int64_t R[DT_SLR_NWEIGHTS] = {w->D, w->D, w->grid[0], w->grid[1], w->grid[2], w->D};
  *rows = R[which];
  *cols = which == DT_SLR_W ? w->D : w->r;
}

int64_t dt_slr_weight_count(const dt_slr_weights_host *w, int which) {
  int64_t rows, cols;
  dt_slr_weight_dims(w, which, &rows, &cols);
  return w->H * rows * cols;
}

void dt_slr_weights_free(dt_slr_weights_host *w) {
  if (!w) return;
  for (int a = 0; a < DT_SLR_NWEIGHTS; a++) free(w->data[a]);
  memset(w, 0, sizeof *w);
}

/* ------------------------------------------------------------ .npz */
#ifdef DITATTN_HAVE_LIBZIP
/* A .npy file held in memory (one archive entry) → f32 array. */
static ditattn_status parse_npy_bytes(const unsigned char *buf, size_t len, const char *where,
                                      dt_npy_array *arr, char *err, size_t err_size) {
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (len < 10 || memcmp(buf, magic, 6) != 0)
    return fail(err, err_size, DITATTN_ERR_FORMAT, "%s: not a .npy file (bad magic)", where);
  const int major = buf[6];
  size_t header_len, offset;
  if (major == 1) {
    header_len = (size_t)buf[8] | (size_t)buf[9] << 8;
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (len < 12) return fail(err, err_size, DITATTN_ERR_FORMAT, "%s: truncated header", where);
    header_len =
        (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
    offset = 12;
  } else {
    return fail(err, err_size, DITATTN_ERR_FORMAT, "%s: unknown .npy version %d", where, major);
  }
  if (header_len > len - offset)
    return fail(err, err_size, DITATTN_ERR_FORMAT, "%s: header runs past the entry's end", where);
  dt_npy_header hdr;
  char sub[256];
  ditattn_status st =
      dt_npy_parse_dict((const char *)buf + offset, header_len, &hdr, sub, sizeof sub);
  if (st != DITATTN_OK) return fail(err, err_size, st, "%s: %s", where, sub);
  offset += header_len;
  if (hdr.dtype != DT_NPY_F32 && hdr.dtype != DT_NPY_F64)
    return fail(err, err_size, DITATTN_ERR_DTYPE, "%s: dtype %s, expected <f4 or <f8", where,
                dt_npy_dtype_descr(hdr.dtype));
  const size_t elem = hdr.dtype == DT_NPY_F64 ? 8 : 4;
  if ((uint64_t)hdr.count > (uint64_t)(SIZE_MAX / elem))
    return fail(err, err_size, DITATTN_ERR_OVERFLOW, "%s: %lld elements", where,
                (long long)hdr.count);
  if (len - offset != (size_t)hdr.count * elem)
    return fail(err, err_size, DITATTN_ERR_FORMAT,
                "%s: %zu data bytes for a shape of %lld elements of %zu bytes", where, len - offset,
                (long long)hdr.count, elem);
  float *data = malloc((size_t)hdr.count * sizeof(float));
  if (!data) return fail(err, err_size, DITATTN_ERR_OUT_OF_MEMORY, "%s: out of memory", where);
  /* Little-endian descr only (npy.h); convert byte by byte so the host's
   * endianness does not matter. */
  for (int64_t i = 0; i < hdr.count; i++) {
    const unsigned char *p = buf + offset + (size_t)i * elem;
    uint64_t bits = 0;
    for (size_t b = 0; b < elem; b++) bits |= (uint64_t)p[b] << (8 * b);
    if (elem == 4) {
      uint32_t b32 = (uint32_t)bits;
      memcpy(&data[i], &b32, 4);
    } else {
      double d;
      memcpy(&d, &bits, 8);
      data[i] = (float)d;
    }
  }
  memset(arr, 0, sizeof *arr);
  arr->dtype = DT_NPY_F32;
  arr->ndim = hdr.ndim;
  memcpy(arr->shape, hdr.shape, sizeof hdr.shape);
  arr->count = hdr.count;
  arr->data = data;
  return DITATTN_OK;
}

static ditattn_status read_npz_entry(zip_t *za, const char *path, const char *entry,
                                     dt_npy_array *arr, char *err, size_t err_size) {
  char where[1024];
  snprintf(where, sizeof where, "%s:%s", path, entry);
  zip_int64_t index = zip_name_locate(za, entry, 0);
  if (index < 0) return fail(err, err_size, DITATTN_ERR_IO, "%s: no such entry", where);
  zip_stat_t stat;
  zip_stat_init(&stat);
  if (zip_stat_index(za, (zip_uint64_t)index, 0, &stat) != 0 || !(stat.valid & ZIP_STAT_SIZE))
    return fail(err, err_size, DITATTN_ERR_FORMAT, "%s: cannot stat (%s)", where, zip_strerror(za));
  /* The weights are at most a few GB; a larger claim is a corrupt directory. */
  if (stat.size > ((zip_uint64_t)1 << 40) || stat.size > SIZE_MAX - 1)
    return fail(err, err_size, DITATTN_ERR_FORMAT, "%s: entry size %llu is implausible", where,
                (unsigned long long)stat.size);
  unsigned char *buf = malloc((size_t)stat.size + 1);
  if (!buf) return fail(err, err_size, DITATTN_ERR_OUT_OF_MEMORY, "%s: out of memory", where);
  zip_file_t *file = zip_fopen_index(za, (zip_uint64_t)index, 0);
  if (!file) {
    free(buf);
    return fail(err, err_size, DITATTN_ERR_FORMAT, "%s: cannot open (%s)", where, zip_strerror(za));
  }
  /* Read one byte more than announced: a longer entry is an error too. */
  zip_int64_t got = zip_fread(file, buf, stat.size + 1);
  zip_fclose(file);
  if (got < 0 || (zip_uint64_t)got != stat.size) {
    free(buf);
    return fail(err, err_size, DITATTN_ERR_FORMAT, "%s: read %lld of %llu bytes", where,
                (long long)got, (unsigned long long)stat.size);
  }
  ditattn_status st = parse_npy_bytes(buf, (size_t)stat.size, where, arr, err, err_size);
  free(buf);
  return st;
}
#endif

static ditattn_status read_arrays(const char *path, dt_npy_array arrs[DT_SLR_NWEIGHTS], char *err,
                                  size_t err_size) {
  const size_t len = strlen(path);
  const int is_npz = len >= 4 && strcmp(path + len - 4, ".npz") == 0;
  ditattn_status st = DITATTN_OK;
  if (!is_npz) {
    for (int a = 0; a < DT_SLR_NWEIGHTS && st == DITATTN_OK; a++) {
      char file[4096];
      if ((size_t)snprintf(file, sizeof file, "%s/%s.npy", path, weight_names[a]) >= sizeof file)
        return fail(err, err_size, DITATTN_ERR_INVALID_ARGUMENT, "weights path is too long");
      st = dt_npy_read_f32(file, &arrs[a], err, err_size);
    }
    return st;
  }
#ifdef DITATTN_HAVE_LIBZIP
  int code = 0;
  zip_t *za = zip_open(path, ZIP_RDONLY, &code);
  if (!za) {
    zip_error_t zerr;
    zip_error_init_with_code(&zerr, code);
    st = fail(err, err_size, DITATTN_ERR_IO, "%s: cannot open as .npz (%s)", path,
              zip_error_strerror(&zerr));
    zip_error_fini(&zerr);
    return st;
  }
  for (int a = 0; a < DT_SLR_NWEIGHTS && st == DITATTN_OK; a++) {
    char entry[16];
    snprintf(entry, sizeof entry, "%s.npy", weight_names[a]);
    st = read_npz_entry(za, path, entry, &arrs[a], err, err_size);
  }
  zip_discard(za);
  return st;
#else
  return fail(err, err_size, DITATTN_ERR_UNSUPPORTED,
              "%s: this build has no libzip; give a directory of .npy files", path);
#endif
}

/* [H, rows, cols] or [1, H, rows, cols] → the three sizes. */
static ditattn_status matrix_dims(const dt_npy_array *arr, const char *name, int64_t dims[3],
                                  char *err, size_t err_size) {
  if (arr->ndim == 3 || (arr->ndim == 4 && arr->shape[0] == 1)) {
    for (int i = 0; i < 3; i++) dims[i] = arr->shape[arr->ndim - 3 + i];
    return DITATTN_OK;
  }
  return fail(err, err_size, DITATTN_ERR_SHAPE_MISMATCH,
              "weight %s has %d dimensions, expected [H, rows, cols] (or a leading 1)", name,
              arr->ndim);
}

ditattn_status dt_slr_weights_load(const char *path, dt_slr_weights_host *w, char *err,
                                   size_t err_size) {
  if (!w) return fail(err, err_size, DITATTN_ERR_NULL_POINTER, "weights output is NULL");
  memset(w, 0, sizeof *w);
  if (!path) return fail(err, err_size, DITATTN_ERR_NULL_POINTER, "weights path is NULL");
  dt_npy_array arrs[DT_SLR_NWEIGHTS];
  memset(arrs, 0, sizeof arrs);
  ditattn_status st = read_arrays(path, arrs, err, err_size);
  int64_t dims[DT_SLR_NWEIGHTS][3];
  for (int a = 0; a < DT_SLR_NWEIGHTS && st == DITATTN_OK; a++)
    st = matrix_dims(&arrs[a], weight_names[a], dims[a], err, err_size);
  if (st == DITATTN_OK) {
    w->H = dims[DT_SLR_A][0];
    w->D = dims[DT_SLR_A][1];
    w->r = dims[DT_SLR_A][2];
    for (int a = 0; a < 3; a++) w->grid[a] = dims[DT_SLR_ET + a][1];
    for (int a = 0; a < DT_SLR_NWEIGHTS && st == DITATTN_OK; a++) {
      int64_t rows, cols;
      dt_slr_weight_dims(w, a, &rows, &cols);
      if (dims[a][0] != w->H || dims[a][1] != rows || dims[a][2] != cols)
        st = fail(err, err_size, DITATTN_ERR_SHAPE_MISMATCH,
                  "%s: weight %s is [%lld, %lld, %lld], expected [H=%lld, %lld, %lld] (H, D, r "
                  "from A)",
                  path, weight_names[a], (long long)dims[a][0], (long long)dims[a][1],
                  (long long)dims[a][2], (long long)w->H, (long long)rows, (long long)cols);
    }
  }
  for (int a = 0; a < DT_SLR_NWEIGHTS; a++) {
    if (st == DITATTN_OK) {
      w->data[a] = arrs[a].data; /* ownership moves to w */
      arrs[a].data = NULL;
    }
    dt_npy_array_free(&arrs[a]);
  }
  if (st != DITATTN_OK) dt_slr_weights_free(w);
  return st;
}

/* splitmix64: small, seedable, the same on every platform. */
static uint64_t next_u64(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

ditattn_status dt_slr_weights_random(int64_t H, int64_t D, int64_t r, const int64_t grid[3],
                                     uint64_t seed, dt_slr_weights_host *w, char *err,
                                     size_t err_size) {
  if (!w || !grid) return fail(err, err_size, DITATTN_ERR_NULL_POINTER, "NULL argument");
  memset(w, 0, sizeof *w);
  const int64_t limit = INT64_C(1) << 31;
  if (H < 1 || D < 1 || r < 1 || grid[0] < 1 || grid[1] < 1 || grid[2] < 1 || H > limit ||
      D > limit || r > limit || grid[0] > limit || grid[1] > limit || grid[2] > limit)
    return fail(err, err_size, DITATTN_ERR_INVALID_ARGUMENT,
                "random weights: H, D, r and the grid must be in [1, 2^31]");
  w->H = H, w->D = D, w->r = r;
  memcpy(w->grid, grid, sizeof w->grid);
  uint64_t state = seed;
  for (int a = 0; a < DT_SLR_NWEIGHTS; a++) {
    int64_t rows, cols;
    dt_slr_weight_dims(w, a, &rows, &cols);
    /* Each factor <= 2^31: the product of the two larger ones can still
     * overflow, so check. */
    if (rows > INT64_MAX / cols || rows * cols > INT64_MAX / H ||
        (uint64_t)(H * rows * cols) > SIZE_MAX / sizeof(float)) {
      dt_slr_weights_free(w);
      return fail(err, err_size, DITATTN_ERR_OVERFLOW, "random weights: %s is too large",
                  weight_names[a]);
    }
    const int64_t count = H * rows * cols;
    w->data[a] = malloc((size_t)count * sizeof(float));
    if (!w->data[a]) {
      dt_slr_weights_free(w);
      return fail(err, err_size, DITATTN_ERR_OUT_OF_MEMORY, "random weights: out of memory");
    }
    const int is_pe = a == DT_SLR_ET || a == DT_SLR_EY || a == DT_SLR_EX;
    const double amplitude = is_pe ? 0.5 : 1.0 / sqrt((double)D);
    for (int64_t i = 0; i < count; i++) {
      const double u = (double)(next_u64(&state) >> 11) * 0x1.0p-53; /* [0, 1) */
      w->data[a][i] = (float)((2.0 * u - 1.0) * amplitude);
    }
  }
  return DITATTN_OK;
}

ditattn_status dt_slr_weights_save_dir(const dt_slr_weights_host *w, const char *dir, char *err,
                                       size_t err_size) {
  if (!w || !dir) return fail(err, err_size, DITATTN_ERR_NULL_POINTER, "NULL argument");
  for (int a = 0; a < DT_SLR_NWEIGHTS; a++) {
    char file[4096];
    if ((size_t)snprintf(file, sizeof file, "%s/%s.npy", dir, weight_names[a]) >= sizeof file)
      return fail(err, err_size, DITATTN_ERR_INVALID_ARGUMENT, "weights path is too long");
    int64_t shape[3] = {w->H, 0, 0};
    dt_slr_weight_dims(w, a, &shape[1], &shape[2]);
    ditattn_status st = dt_npy_write_f32(file, 3, shape, w->data[a], err, err_size);
    if (st != DITATTN_OK) return st;
  }
  return DITATTN_OK;
}

ditattn_status dt_slr_weights_check(const dt_slr_weights_host *w, int64_t H, int64_t D,
                                    const int64_t grid[3], char *err, size_t err_size) {
  if (w->H != H || w->D != D)
    return fail(err, err_size, DITATTN_ERR_SHAPE_MISMATCH,
                "weights are for H = %lld heads of D = %lld, the inputs have H = %lld, D = %lld",
                (long long)w->H, (long long)w->D, (long long)H, (long long)D);
  for (int a = 0; a < 3; a++)
    if (w->grid[a] != grid[a])
      return fail(err, err_size, DITATTN_ERR_SHAPE_MISMATCH,
                  "weights' PE tables are for a %lldx%lldx%lld grid, the tokens lie on "
                  "%lldx%lldx%lld",
                  (long long)w->grid[0], (long long)w->grid[1], (long long)w->grid[2],
                  (long long)grid[0], (long long)grid[1], (long long)grid[2]);
  return DITATTN_OK;
}

ditattn_ropeslr_weights dt_slr_weights_views(const dt_slr_weights_host *w, float *const *data) {
  ditattn_tensor views[DT_SLR_NWEIGHTS];
  for (int a = 0; a < DT_SLR_NWEIGHTS; a++) {
    int64_t rows, cols;
    dt_slr_weight_dims(w, a, &rows, &cols);
    views[a] = ditattn_tensor_bhnd(data ? data[a] : w->data[a], DITATTN_F32, 1, w->H, rows, cols);
  }
  ditattn_ropeslr_weights out = {views[0], views[1], views[2], views[3], views[4], views[5]};
  return out;
}
