/* .npy reading and writing; the accepted format is described in npy.h. */
#include "npy.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAGIC     "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* NumPy itself refuses headers over 10 000 bytes by default; 1 MiB leaves
 * room for odd writers while stopping a corrupt length from allocating GBs. */
#define NPY_MAX_HEADER_LEN (1u << 20)

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

static size_t dtype_size(dt_npy_dtype dtype) {
  return (dtype == DT_NPY_F64 || dtype == DT_NPY_I64) ? 8 : 4;
}

const char *dt_npy_dtype_descr(dt_npy_dtype dtype) {
  switch (dtype) {
  case DT_NPY_F32: return "<f4";
  case DT_NPY_F64: return "<f8";
  case DT_NPY_I32: return "<i4";
  case DT_NPY_I64: return "<i8";
  }
  return "?";
}

static int host_is_little_endian(void) {
  const uint16_t one = 1;
  unsigned char byte;
  memcpy(&byte, &one, 1);
  return byte == 1;
}

static void swap_bytes(unsigned char *p, size_t count, size_t width) {
  for (size_t i = 0; i < count; i++, p += width) {
    for (size_t a = 0, b = width - 1; a < b; a++, b--) {
      unsigned char t = p[a];
      p[a] = p[b];
      p[b] = t;
    }
  }
}

/* ---------------------------------------------------------------- header dict parser */

typedef struct dict_cursor {
  const char *s;
  size_t len, pos;
} dict_cursor;

static void skip_space(dict_cursor *c) {
  while (c->pos < c->len && isspace((unsigned char)c->s[c->pos])) c->pos++;
}

static int peek(const dict_cursor *c) { return c->pos < c->len ? (unsigned char)c->s[c->pos] : -1; }

/* A quoted string (no escapes: NumPy's keys and descrs never need them). */
static int parse_string(dict_cursor *c, char *out, size_t out_size) {
  int quote = peek(c);
  if (quote != '\'' && quote != '"') return 0;
  size_t start = ++c->pos;
  while (c->pos < c->len && c->s[c->pos] != quote && c->s[c->pos] != '\\') c->pos++;
  if (c->pos >= c->len || c->s[c->pos] != quote) return 0;
  size_t n = c->pos - start;
  c->pos++;
  if (n >= out_size) n = out_size - 1; /* long strings are cut; they match nothing anyway */
  memcpy(out, c->s + start, n);
  out[n] = '\0';
  return 1;
}

static int match_word(dict_cursor *c, const char *word) {
  size_t n = strlen(word);
  if (c->len - c->pos < n || memcmp(c->s + c->pos, word, n) != 0) return 0;
  /* The word must end here ("Falsey" is not False). */
  if (c->pos + n < c->len && (isalnum((unsigned char)c->s[c->pos + n]) || c->s[c->pos + n] == '_'))
    return 0;
  c->pos += n;
  return 1;
}

static ditattn_status parse_descr(const char *descr, dt_npy_dtype *dtype, char *err,
                                  size_t err_size) {
  static const struct {
    const char *descr;
    dt_npy_dtype dtype;
  } known[] = {{"<f4", DT_NPY_F32}, {"<f8", DT_NPY_F64}, {"<i4", DT_NPY_I32}, {"<i8", DT_NPY_I64}};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    if (strcmp(descr, known[i].descr) == 0) {
      *dtype = known[i].dtype;
      return DITATTN_OK;
    }
  }
  if (descr[0] == '>')
    return fail(err, err_size, DITATTN_ERR_DTYPE,
                "big-endian dtype '%s' is not supported (convert with arr.astype('<f4'))", descr);
  return fail(err, err_size, DITATTN_ERR_DTYPE,
              "unsupported dtype '%s' (supported: '<f4', '<f8', '<i4', '<i8')", descr);
}

/* "(" [int ("," int)* [","]] ")"; every dim >= 1, the product fits. */
static ditattn_status parse_shape(dict_cursor *c, dt_npy_header *hdr, char *err, size_t err_size) {
  if (peek(c) != '(')
    return fail(err, err_size, DITATTN_ERR_FORMAT, "header: 'shape' must be a tuple like (2, 3)");
  c->pos++;
  int ndim = 0;
  int64_t count = 1;
  for (;;) {
    skip_space(c);
    if (peek(c) == ')') break;
    if (peek(c) == '-')
      return fail(err, err_size, DITATTN_ERR_FORMAT, "header: negative dimension %d in 'shape'",
                  ndim);
    if (peek(c) < '0' || peek(c) > '9')
      return fail(err, err_size, DITATTN_ERR_FORMAT,
                  "header: bad 'shape' syntax at offset %zu (expected a dimension or ')')", c->pos);
    int64_t dim = 0;
    while (peek(c) >= '0' && peek(c) <= '9') {
      int digit = peek(c) - '0';
      if (dim > (INT64_MAX - digit) / 10)
        return fail(err, err_size, DITATTN_ERR_OVERFLOW,
                    "header: dimension %d of 'shape' does not fit in 64 bits", ndim);
      dim = dim * 10 + digit;
      c->pos++;
    }
    if (peek(c) == 'L') c->pos++; /* Python 2 longs, written by old NumPy */
    if (ndim == DT_NPY_MAX_DIMS)
      return fail(err, err_size, DITATTN_ERR_FORMAT,
                  "header: more than %d dimensions are not supported", DT_NPY_MAX_DIMS);
    if (dim == 0)
      return fail(err, err_size, DITATTN_ERR_FORMAT,
                  "header: dimension %d is 0 (empty arrays are not supported)", ndim);
    if (count > INT64_MAX / dim)
      return fail(err, err_size, DITATTN_ERR_OVERFLOW,
                  "header: the element count of 'shape' overflows 64 bits");
    count *= dim;
    hdr->shape[ndim++] = dim;
    skip_space(c);
    if (peek(c) == ',') {
      c->pos++;
      continue;
    }
    if (peek(c) == ')') break;
    return fail(err, err_size, DITATTN_ERR_FORMAT,
                "header: bad 'shape' syntax at offset %zu (expected ',' or ')')", c->pos);
  }
  c->pos++; /* ')' */
  if (ndim == 0)
    return fail(err, err_size, DITATTN_ERR_FORMAT,
                "header: 'shape' is () (0-d scalars are not supported)");
  hdr->ndim = ndim;
  hdr->count = count;
  return DITATTN_OK;
}

ditattn_status dt_npy_parse_dict(const char *text, size_t len, dt_npy_header *hdr, char *err,
                                 size_t err_size) {
  if (!text || !hdr) return fail(err, err_size, DITATTN_ERR_NULL_POINTER, "NULL argument");
  dict_cursor c = {text, len, 0};
  enum { KEY_DESCR = 1, KEY_ORDER = 2, KEY_SHAPE = 4 };
  unsigned seen = 0;
  char descr[32] = "";
  skip_space(&c);
  if (peek(&c) != '{')
    return fail(err, err_size, DITATTN_ERR_FORMAT, "header: does not start with '{'");
  c.pos++;
  for (;;) {
    skip_space(&c);
    if (peek(&c) == '}') break;
    char key[32];
    if (!parse_string(&c, key, sizeof key))
      return fail(err, err_size, DITATTN_ERR_FORMAT,
                  "header: expected a quoted key or '}' at offset %zu", c.pos);
    skip_space(&c);
    if (peek(&c) != ':')
      return fail(err, err_size, DITATTN_ERR_FORMAT, "header: expected ':' after key '%s'", key);
    c.pos++;
    skip_space(&c);
    unsigned bit;
    if (strcmp(key, "descr") == 0) {
      bit = KEY_DESCR;
      if (!parse_string(&c, descr, sizeof descr))
        return fail(err, err_size, DITATTN_ERR_FORMAT,
                    "header: 'descr' must be a string (structured dtypes are not supported)");
    } else if (strcmp(key, "fortran_order") == 0) {
      bit = KEY_ORDER;
      if (match_word(&c, "True"))
        return fail(err, err_size, DITATTN_ERR_FORMAT,
                    "fortran_order True is not supported (save a C-order array: "
                    "np.ascontiguousarray)");
      if (!match_word(&c, "False"))
        return fail(err, err_size, DITATTN_ERR_FORMAT,
                    "header: 'fortran_order' must be True or False");
    } else if (strcmp(key, "shape") == 0) {
      bit = KEY_SHAPE;
      ditattn_status st = parse_shape(&c, hdr, err, err_size);
      if (st != DITATTN_OK) return st;
    } else {
      return fail(err, err_size, DITATTN_ERR_FORMAT, "header: unexpected key '%s'", key);
    }
    if (seen & bit)
      return fail(err, err_size, DITATTN_ERR_FORMAT, "header: duplicate key '%s'", key);
    seen |= bit;
    skip_space(&c);
    if (peek(&c) == ',') {
      c.pos++;
      continue;
    }
    if (peek(&c) == '}') break;
    return fail(err, err_size, DITATTN_ERR_FORMAT, "header: expected ',' or '}' at offset %zu",
                c.pos);
  }
  c.pos++; /* '}' */
  skip_space(&c);
  if (c.pos != c.len)
    return fail(err, err_size, DITATTN_ERR_FORMAT, "header: unexpected text after '}'");
  static const char *const names[] = {"descr", "fortran_order", "shape"};
  for (int i = 0; i < 3; i++)
    if (!(seen & (1u << i)))
      return fail(err, err_size, DITATTN_ERR_FORMAT, "header: missing key '%s'", names[i]);
  return parse_descr(descr, &hdr->dtype, err, err_size);
}

/* ---------------------------------------------------------------- reading */

/* Opens path and parses everything up to the data. On success *file is open
 * at the data and *remaining is the bytes after the header (-1 if unknown). */
static ditattn_status open_and_read_header(const char *path, FILE **file, dt_npy_header *hdr,
                                           long long *remaining, char *err, size_t err_size) {
  *file = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return fail(err, err_size, DITATTN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  long long file_size = -1;
  if (fseek(f, 0, SEEK_END) == 0) {
    long end = ftell(f);
    if (end >= 0) file_size = end;
  }
  if (fseek(f, 0, SEEK_SET) != 0) file_size = -1;

  ditattn_status st = DITATTN_OK;
  char *text = NULL;
  unsigned char prefix[12];
  size_t got = fread(prefix, 1, 8, f);
  if (got < 8 || memcmp(prefix, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
    if (ferror(f))
      st = fail(err, err_size, DITATTN_ERR_IO, "%s: read error", path);
    else if (got >= NPY_MAGIC_LEN && memcmp(prefix, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
      st = fail(err, err_size, DITATTN_ERR_FORMAT, "%s: bad magic (not a .npy file)", path);
    else if (got < NPY_MAGIC_LEN && memcmp(prefix, NPY_MAGIC, got) != 0)
      st = fail(err, err_size, DITATTN_ERR_FORMAT, "%s: bad magic (not a .npy file)", path);
    else
      st = fail(err, err_size, DITATTN_ERR_FORMAT, "%s: truncated: file ends inside the %s", path,
                got < NPY_MAGIC_LEN ? "magic string" : "version bytes");
    goto out;
  }
  int major = prefix[6], minor = prefix[7];
  if (major < 1 || major > 3 || minor != 0) {
    st =
        fail(err, err_size, DITATTN_ERR_FORMAT,
             "%s: unsupported format version %d.%d (supported: 1.0, 2.0, 3.0)", path, major, minor);
    goto out;
  }
  size_t len_bytes = major == 1 ? 2 : 4;
  if (fread(prefix + 8, 1, len_bytes, f) != len_bytes) {
    st = fail(err, err_size, ferror(f) ? DITATTN_ERR_IO : DITATTN_ERR_FORMAT,
              "%s: truncated: file ends inside the header length field", path);
    goto out;
  }
  uint32_t header_len = (uint32_t)prefix[8] | (uint32_t)prefix[9] << 8;
  if (major > 1) header_len |= (uint32_t)prefix[10] << 16 | (uint32_t)prefix[11] << 24;
  size_t data_offset = 8 + len_bytes + header_len;
  if (file_size >= 0 && (long long)data_offset > file_size) {
    st = fail(err, err_size, DITATTN_ERR_FORMAT,
              "%s: header length %u goes past the end of the file (%lld bytes)", path,
              (unsigned)header_len, file_size);
    goto out;
  }
  if (header_len > NPY_MAX_HEADER_LEN) {
    st = fail(err, err_size, DITATTN_ERR_FORMAT, "%s: header length %u is over the %u supported",
              path, (unsigned)header_len, NPY_MAX_HEADER_LEN);
    goto out;
  }
  text = malloc(header_len + 1);
  if (!text) {
    st = fail(err, err_size, DITATTN_ERR_OUT_OF_MEMORY, "%s: out of memory for the header", path);
    goto out;
  }
  if (fread(text, 1, header_len, f) != header_len) {
    st = fail(err, err_size, ferror(f) ? DITATTN_ERR_IO : DITATTN_ERR_FORMAT,
              "%s: header length %u goes past the end of the file", path, (unsigned)header_len);
    goto out;
  }
  char msg[200];
  st = dt_npy_parse_dict(text, header_len, hdr, msg, sizeof msg);
  if (st != DITATTN_OK) {
    fail(err, err_size, st, "%s: %s", path, msg);
    goto out;
  }
  hdr->version_major = major;
  hdr->data_offset = data_offset;
  *remaining = file_size >= 0 ? file_size - (long long)data_offset : -1;
out:
  free(text);
  if (st != DITATTN_OK)
    fclose(f);
  else
    *file = f;
  return st;
}

ditattn_status dt_npy_read_header(const char *path, dt_npy_header *hdr, char *err,
                                  size_t err_size) {
  if (!path || !hdr) return fail(err, err_size, DITATTN_ERR_NULL_POINTER, "NULL argument");
  FILE *f;
  long long remaining;
  ditattn_status st = open_and_read_header(path, &f, hdr, &remaining, err, err_size);
  if (st == DITATTN_OK) fclose(f);
  return st;
}

/* Converts n elements of `from` (file layout, host byte order) in place or
 * into `to`. Returns the index of an int64 value out of int32 range, or -1. */
static int64_t convert(dt_npy_dtype from, const void *src, void *dst, int64_t n) {
  if (from == DT_NPY_F64) {
    const double *s = src;
    float *d = dst;
    for (int64_t i = 0; i < n; i++) {
      double x = s[i];
      /* Out-of-range doubles become ±inf explicitly (the cast would be UB). */
      if (x > (double)FLT_MAX)
        d[i] = INFINITY;
      else if (x < -(double)FLT_MAX)
        d[i] = -INFINITY;
      else
        d[i] = (float)x;
    }
  } else if (from == DT_NPY_I64) {
    const int64_t *s = src;
    int32_t *d = dst;
    for (int64_t i = 0; i < n; i++) {
      if (s[i] < INT32_MIN || s[i] > INT32_MAX) return i;
      d[i] = (int32_t)s[i];
    }
  }
  return -1;
}

static ditattn_status read_array(const char *path, int want_float, dt_npy_array *arr, char *err,
                                 size_t err_size) {
  if (!arr) return fail(err, err_size, DITATTN_ERR_NULL_POINTER, "NULL array");
  memset(arr, 0, sizeof *arr);
  if (!path) return fail(err, err_size, DITATTN_ERR_NULL_POINTER, "NULL path");
  FILE *f;
  dt_npy_header hdr;
  long long remaining;
  ditattn_status st = open_and_read_header(path, &f, &hdr, &remaining, err, err_size);
  if (st != DITATTN_OK) return st;

  void *file_data = NULL, *data = NULL;
  int is_float = hdr.dtype == DT_NPY_F32 || hdr.dtype == DT_NPY_F64;
  if (is_float != want_float) {
    st = fail(err, err_size, DITATTN_ERR_DTYPE, "%s: dtype '%s' where %s is needed", path,
              dt_npy_dtype_descr(hdr.dtype),
              want_float ? "a float array ('<f4' or '<f8')" : "an integer array ('<i4' or '<i8')");
    goto out;
  }
  size_t width = dtype_size(hdr.dtype);
  if ((uint64_t)hdr.count > SIZE_MAX / width || (uint64_t)hdr.count > (uint64_t)INT64_MAX / width) {
    st = fail(err, err_size, DITATTN_ERR_OVERFLOW, "%s: %lld elements of %zu bytes overflow size_t",
              path, (long long)hdr.count, width);
    goto out;
  }
  size_t bytes = (size_t)hdr.count * width;
  /* Checked before allocating, so a corrupt shape cannot ask for terabytes. */
  if (remaining >= 0 && (unsigned long long)remaining < bytes) {
    st = fail(err, err_size, DITATTN_ERR_FORMAT,
              "%s: data too short: shape needs %zu bytes, file has %lld after the header", path,
              bytes, remaining);
    goto out;
  }
  file_data = malloc(bytes);
  if (!file_data) {
    st = fail(err, err_size, DITATTN_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu bytes", path,
              bytes);
    goto out;
  }
  size_t got = fread(file_data, 1, bytes, f);
  if (got != bytes) {
    st = fail(err, err_size, ferror(f) ? DITATTN_ERR_IO : DITATTN_ERR_FORMAT,
              "%s: data too short: shape needs %zu bytes, file has %zu after the header", path,
              bytes, got);
    goto out;
  }
  if (fgetc(f) != EOF) {
    st = fail(err, err_size, DITATTN_ERR_FORMAT,
              "%s: trailing bytes after the data (shape says %zu bytes)", path, bytes);
    goto out;
  }
  if (!host_is_little_endian()) swap_bytes(file_data, (size_t)hdr.count, width);
  if (width == 4) {
    data = file_data;
    file_data = NULL;
  } else {
    data = malloc((size_t)hdr.count * 4);
    if (!data) {
      st = fail(err, err_size, DITATTN_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
      goto out;
    }
    int64_t bad = convert(hdr.dtype, file_data, data, hdr.count);
    if (bad >= 0) {
      st =
          fail(err, err_size, DITATTN_ERR_OVERFLOW, "%s: element %lld = %lld does not fit in int32",
               path, (long long)bad, (long long)((const int64_t *)file_data)[bad]);
      goto out;
    }
  }
  arr->dtype = want_float ? DT_NPY_F32 : DT_NPY_I32;
  arr->ndim = hdr.ndim;
  memcpy(arr->shape, hdr.shape, sizeof hdr.shape);
  arr->count = hdr.count;
  arr->data = data;
  data = NULL;
out:
  free(file_data);
  free(data);
  fclose(f);
  return st;
}

ditattn_status dt_npy_read_f32(const char *path, dt_npy_array *arr, char *err, size_t err_size) {
  return read_array(path, 1, arr, err, err_size);
}

ditattn_status dt_npy_read_i32(const char *path, dt_npy_array *arr, char *err, size_t err_size) {
  return read_array(path, 0, arr, err, err_size);
}

void dt_npy_array_free(dt_npy_array *arr) {
  if (!arr) return;
  free(arr->data);
  memset(arr, 0, sizeof *arr);
}

/* ---------------------------------------------------------------- writing */

static ditattn_status write_array(const char *path, int ndim, const int64_t *shape,
                                  const void *data, dt_npy_dtype dtype, char *err,
                                  size_t err_size) {
  if (!path || !shape || !data)
    return fail(err, err_size, DITATTN_ERR_NULL_POINTER, "NULL argument");
  if (ndim < 1 || ndim > DT_NPY_MAX_DIMS)
    return fail(err, err_size, DITATTN_ERR_INVALID_ARGUMENT, "%s: ndim %d is not in [1, %d]", path,
                ndim, DT_NPY_MAX_DIMS);
  /* Header text: dict, spaces, '\n' so that 10 + len is a multiple of 64. */
  char header[64 * 8];
  int n = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                   dt_npy_dtype_descr(dtype));
  int64_t count = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 1)
      return fail(err, err_size, DITATTN_ERR_INVALID_ARGUMENT, "%s: dimension %d is %lld (< 1)",
                  path, i, (long long)shape[i]);
    if (count > INT64_MAX / shape[i] / 4)
      return fail(err, err_size, DITATTN_ERR_OVERFLOW, "%s: element count overflows", path);
    count *= shape[i];
    n += snprintf(header + n, sizeof header - (size_t)n, "%lld%s", (long long)shape[i],
                  ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
  }
  n += snprintf(header + n, sizeof header - (size_t)n, "), }");
  size_t total = 10 + (size_t)n + 1; /* + '\n' */
  size_t padded = (total + 63) / 64 * 64;
  size_t header_len = padded - 10;
  memset(header + n, ' ', header_len - 1 - (size_t)n);
  header[header_len - 1] = '\n';

  unsigned char prefix[10];
  memcpy(prefix, NPY_MAGIC, NPY_MAGIC_LEN);
  prefix[6] = 1;
  prefix[7] = 0;
  prefix[8] = (unsigned char)(header_len & 0xff);
  prefix[9] = (unsigned char)(header_len >> 8);

  FILE *f = fopen(path, "wb");
  if (!f)
    return fail(err, err_size, DITATTN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
  int ok = fwrite(prefix, 1, 10, f) == 10 && fwrite(header, 1, header_len, f) == header_len;
  if (ok && host_is_little_endian()) {
    ok = fwrite(data, 4, (size_t)count, f) == (size_t)count;
  } else if (ok) {
    const unsigned char *bytes = data;
    for (int64_t i = 0; ok && i < count; i++) {
      unsigned char v[4] = {bytes[4 * i + 3], bytes[4 * i + 2], bytes[4 * i + 1], bytes[4 * i]};
      ok = fwrite(v, 1, 4, f) == 4;
    }
  }
  int saved_errno = errno;
  if (fclose(f) != 0 && ok) {
    ok = 0;
    saved_errno = errno;
  }
  if (!ok) {
    remove(path);
    return fail(err, err_size, DITATTN_ERR_IO, "%s: write failed: %s", path, strerror(saved_errno));
  }
  return DITATTN_OK;
}

ditattn_status dt_npy_write_f32(const char *path, int ndim, const int64_t *shape, const float *data,
                                char *err, size_t err_size) {
  return write_array(path, ndim, shape, data, DT_NPY_F32, err, err_size);
}

ditattn_status dt_npy_write_i32(const char *path, int ndim, const int64_t *shape,
                                const int32_t *data, char *err, size_t err_size) {
  return write_array(path, ndim, shape, data, DT_NPY_I32, err, err_size);
}
