/* tools/npy: round trips and every malformed-file path. Bad files are built
 * byte by byte in a fresh temporary directory. */
#define _POSIX_C_SOURCE 200809L
#include "test_util.h"

#include "npy.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmp_dir[256];

static const char *tmp_path(const char *name) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
  return path;
}

static int setup_dir(void **state) {
  (void)state;
  const char *base = getenv("TMPDIR");
  snprintf(tmp_dir, sizeof tmp_dir, "%s/ditattn_npy_XXXXXX", base && *base ? base : "/tmp");
  return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown_dir(void **state) {
  (void)state;
  DIR *dir = opendir(tmp_dir);
  if (dir) {
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      char path[600];
      snprintf(path, sizeof path, "%s/%s", tmp_dir, e->d_name);
      unlink(path);
    }
    closedir(dir);
  }
  rmdir(tmp_dir);
  return 0;
}

static void write_bytes(const char *path, const void *bytes, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(bytes, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

/* A .npy file with the given version, header dict text and data bytes; the
 * length field is computed unless length_override >= 0. */
static const char *make_file(const char *name, int major, int minor, const char *dict,
                             const void *data, size_t data_len, long length_override) {
  unsigned char buf[4096];
  size_t dict_len = strlen(dict);
  size_t len_bytes = major == 1 ? 2 : 4;
  assert_true(8 + len_bytes + dict_len + data_len <= sizeof buf);
  memcpy(buf, "\x93NUMPY", 6);
  buf[6] = (unsigned char)major;
  buf[7] = (unsigned char)minor;
  unsigned long len = length_override >= 0 ? (unsigned long)length_override : dict_len;
  for (size_t i = 0; i < len_bytes; i++) buf[8 + i] = (unsigned char)(len >> (8 * i));
  memcpy(buf + 8 + len_bytes, dict, dict_len);
  if (data_len) memcpy(buf + 8 + len_bytes + dict_len, data, data_len);
  const char *path = tmp_path(name);
  write_bytes(path, buf, 8 + len_bytes + dict_len + data_len);
  return path;
}

/* Reading `path` as floats fails with `status` and a message containing
 * `needle`; the array is left zeroed. */
static void expect_f32_failure(const char *path, ditattn_status status, const char *needle) {
  dt_npy_array arr;
  char err[256] = "";
  ditattn_status st = dt_npy_read_f32(path, &arr, err, sizeof err);
  if (st != status || !strstr(err, needle))
    fail_msg("%s: got status %d (%s) message \"%s\"; expected status %d and \"%s\"", path, st,
             ditattn_strerror(st), err, status, needle);
  assert_null(arr.data);
  assert_int_equal(arr.count, 0);
  /* The message names the file, so a user knows which input is wrong. */
  if (status != DITATTN_ERR_NULL_POINTER) assert_non_null(strstr(err, path));
}

static void roundtrip_f32_random_shapes(void **state) {
  (void)state;
  uint64_t seed = tu_seed();
  static const int64_t shapes[][8] = {
      {7}, {3, 5}, {2, 3, 4}, {2, 3, 4, 5}, {1, 2, 1, 3, 1, 2, 1, 2}};
  static const int ndims[] = {1, 2, 3, 4, 8};
  for (size_t s = 0; s < sizeof ndims / sizeof ndims[0]; s++) {
    int64_t shape[8];
    int64_t count = 1;
    for (int i = 0; i < ndims[s]; i++) {
      shape[i] = shapes[s][i] + tu_rand_int(0, 2); /* fresh shapes each run */
      count *= shape[i];
    }
    float *data = malloc((size_t)count * sizeof *data);
    assert_non_null(data);
    for (int64_t i = 0; i < count; i++) data[i] = (float)tu_uniform(-1e3, 1e3);
    const char *path = tmp_path("roundtrip.npy");
    char err[256] = "";
    assert_int_equal(dt_npy_write_f32(path, ndims[s], shape, data, err, sizeof err), DITATTN_OK);

    /* NumPy's layout: data starts at a multiple of 64. */
    dt_npy_header hdr;
    assert_int_equal(dt_npy_read_header(path, &hdr, err, sizeof err), DITATTN_OK);
    assert_int_equal(hdr.data_offset % 64, 0);
    assert_int_equal(hdr.version_major, 1);
    assert_int_equal(hdr.dtype, DT_NPY_F32);

    dt_npy_array arr;
    ditattn_status st = dt_npy_read_f32(path, &arr, err, sizeof err);
    if (st != DITATTN_OK)
      fail_msg("seed %llu ndim %d: %s", (unsigned long long)seed, ndims[s], err);
    assert_int_equal(arr.dtype, DT_NPY_F32);
    assert_int_equal(arr.ndim, ndims[s]);
    assert_int_equal(arr.count, count);
    for (int i = 0; i < ndims[s]; i++) assert_int_equal(arr.shape[i], shape[i]);
    assert_memory_equal(arr.data, data, (size_t)count * sizeof *data);
    dt_npy_array_free(&arr);
    assert_null(arr.data);
    free(data);
  }
}

static void roundtrip_i32(void **state) {
  (void)state;
  tu_seed();
  int64_t shape[2] = {tu_rand_int(1, 9), tu_rand_int(1, 9)};
  int32_t data[81];
  for (int i = 0; i < 81; i++) data[i] = (int32_t)tu_rand_int(INT32_MIN, INT32_MAX);
  const char *path = tmp_path("sel.npy");
  char err[256];
  assert_int_equal(dt_npy_write_i32(path, 2, shape, data, err, sizeof err), DITATTN_OK);
  dt_npy_array arr;
  assert_int_equal(dt_npy_read_i32(path, &arr, err, sizeof err), DITATTN_OK);
  assert_int_equal(arr.dtype, DT_NPY_I32);
  assert_int_equal(arr.count, shape[0] * shape[1]);
  assert_memory_equal(arr.data, data, (size_t)arr.count * sizeof(int32_t));
  dt_npy_array_free(&arr);
  /* An index file is not a float file. */
  expect_f32_failure(path, DITATTN_ERR_DTYPE, "'<i4'");
  dt_npy_array_free(NULL);
}

static void reads_f64_and_i64_with_conversion(void **state) {
  (void)state;
  tu_seed();
  double d[6];
  for (int i = 0; i < 6; i++) d[i] = tu_uniform(-5, 5);
  d[5] = 1e300; /* beyond float: becomes +inf */
  const char *path =
      make_file("f8.npy", 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }\n", d,
                sizeof d, -1);
  dt_npy_array arr;
  char err[256];
  assert_int_equal(dt_npy_read_f32(path, &arr, err, sizeof err), DITATTN_OK);
  const float *f = arr.data;
  for (int i = 0; i < 5; i++) assert_true(f[i] == (float)d[i]);
  assert_true(isinf(f[5]) && f[5] > 0);
  dt_npy_array_free(&arr);

  int64_t q[3] = {-7, 0, INT32_MAX};
  path = make_file("i8.npy", 1, 0, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,)}", q,
                   sizeof q, -1);
  assert_int_equal(dt_npy_read_i32(path, &arr, err, sizeof err), DITATTN_OK);
  assert_int_equal(((int32_t *)arr.data)[0], -7);
  assert_int_equal(((int32_t *)arr.data)[2], INT32_MAX);
  dt_npy_array_free(&arr);

  q[1] = (int64_t)INT32_MAX + 1;
  path = make_file("i8big.npy", 1, 0, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,)}", q,
                   sizeof q, -1);
  assert_int_equal(dt_npy_read_i32(path, &arr, err, sizeof err), DITATTN_ERR_OVERFLOW);
  assert_non_null(strstr(err, "element 1"));
  assert_null(arr.data);
}

static void accepts_header_variants(void **state) {
  (void)state;
  float v[6] = {1, 2, 3, 4, 5, 6};
  static const char *dicts[] = {
      "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",
      "{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(2,3,),}",
      "  {  'descr' :  '<f4' ,\n 'fortran_order' : False , 'shape' : ( 2 , 3 ) , }   \n",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",
  };
  for (size_t i = 0; i < sizeof dicts / sizeof dicts[0]; i++) {
    for (int major = 1; major <= 3; major++) {
      const char *path = make_file("variant.npy", major, 0, dicts[i], v, sizeof v, -1);
      dt_npy_array arr;
      char err[256] = "";
      ditattn_status st = dt_npy_read_f32(path, &arr, err, sizeof err);
      if (st != DITATTN_OK) fail_msg("v%d.0 header <%s>: %s", major, dicts[i], err);
      assert_int_equal(arr.ndim, 2);
      assert_int_equal(arr.shape[0], 2);
      assert_int_equal(arr.shape[1], 3);
      assert_memory_equal(arr.data, v, sizeof v);
      dt_npy_array_free(&arr);
    }
  }
}

static void rejects_bad_prefix(void **state) {
  (void)state;
  const char *path = tmp_path("empty.npy");
  write_bytes(path, "", 0);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "truncated");
  path = tmp_path("short_magic.npy");
  write_bytes(path, "\x93NUM", 4);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "inside the magic");
  path = tmp_path("no_version.npy");
  write_bytes(path, "\x93NUMPY\x01", 7);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "version bytes");
  path = tmp_path("bad_magic.npy");
  write_bytes(path, "PK\x03\x04 this is a zip file", 22);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "bad magic");
  path = tmp_path("bad_magic_short.npy");
  write_bytes(path, "\x93X", 2);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "bad magic");
  path = make_file("v4.npy", 4, 0, "{}", NULL, 0, -1);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "version 4.0");
  path = make_file("v1_1.npy", 1, 1, "{}", NULL, 0, -1);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "version 1.1");
  path = tmp_path("short_len.npy");
  write_bytes(path, "\x93NUMPY\x02\x00\x10\x00", 10);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "header length field");
  path = make_file("len_past_eof.npy", 1, 0, "{'descr': '<f4'", NULL, 0, 5000);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "past the end");
  path = make_file("len_huge.npy", 2, 0, "{}", NULL, 0, 0x7fffffffL);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "past the end");
  expect_f32_failure(tmp_path("does_not_exist.npy"), DITATTN_ERR_IO, "cannot open");
}

typedef struct bad_header {
  const char *dict;
  ditattn_status status;
  const char *needle;
} bad_header;

static void rejects_bad_headers(void **state) {
  (void)state;
  static const bad_header cases[] = {
      {"{'fortran_order': False, 'shape': (2,)}", DITATTN_ERR_FORMAT, "missing key 'descr'"},
      {"{'descr': '<f4', 'shape': (2,)}", DITATTN_ERR_FORMAT, "missing key 'fortran_order'"},
      {"{'descr': '<f4', 'fortran_order': False}", DITATTN_ERR_FORMAT, "missing key 'shape'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", DITATTN_ERR_FORMAT,
       "unexpected key 'extra'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
       DITATTN_ERR_FORMAT, "duplicate key 'descr'"},
      {"'descr': '<f4'", DITATTN_ERR_FORMAT, "start with '{'"},
      {"{descr: '<f4'}", DITATTN_ERR_FORMAT, "quoted key"},
      {"{'descr' '<f4'}", DITATTN_ERR_FORMAT, "expected ':'"},
      {"{'descr': '<f4' 'fortran_order': False}", DITATTN_ERR_FORMAT, "expected ',' or '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk", DITATTN_ERR_FORMAT,
       "after '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,),", DITATTN_ERR_FORMAT,
       "expected a quoted key or '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", DITATTN_ERR_FORMAT,
       "expected ',' or '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [2, 1]}", DITATTN_ERR_FORMAT,
       "must be a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2; 1)}", DITATTN_ERR_FORMAT,
       "bad 'shape' syntax"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, x)}", DITATTN_ERR_FORMAT,
       "bad 'shape' syntax"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}", DITATTN_ERR_FORMAT,
       "bad 'shape' syntax"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1)}", DITATTN_ERR_FORMAT,
       "negative dimension 1"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 0)}", DITATTN_ERR_FORMAT,
       "dimension 1 is 0"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': ()}", DITATTN_ERR_FORMAT, "0-d"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", DITATTN_ERR_FORMAT,
       "more than 8 dimensions"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}",
       DITATTN_ERR_OVERFLOW, "overflows 64 bits"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
       DITATTN_ERR_OVERFLOW, "does not fit in 64 bits"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,)}",
       DITATTN_ERR_OVERFLOW, "overflow size_t"},
      {"{'descr': '<f4', 'fortran_order': True, 'shape': (2,)}", DITATTN_ERR_FORMAT,
       "fortran_order True"},
      {"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2,)}", DITATTN_ERR_FORMAT,
       "True or False"},
      {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}", DITATTN_ERR_DTYPE, "big-endian"},
      {"{'descr': '<i2', 'fortran_order': False, 'shape': (2,)}", DITATTN_ERR_DTYPE,
       "unsupported dtype '<i2'"},
      {"{'descr': '<c8', 'fortran_order': False, 'shape': (2,)}", DITATTN_ERR_DTYPE,
       "unsupported dtype '<c8'"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", DITATTN_ERR_FORMAT,
       "structured"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", DITATTN_ERR_FORMAT, "expected"},
  };
  float data[2] = {1.0f, 2.0f};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "bad_header_%zu.npy", i);
    const char *path = make_file(name, 1, 0, cases[i].dict, data, sizeof data, -1);
    expect_f32_failure(path, cases[i].status, cases[i].needle);
  }
}

static void rejects_bad_data_length(void **state) {
  (void)state;
  float data[7] = {1, 2, 3, 4, 5, 6, 7};
  const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const char *path = make_file("short.npy", 1, 0, dict, data, 5 * sizeof(float), -1);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "data too short");
  path = make_file("short_bytes.npy", 1, 0, dict, data, 6 * sizeof(float) - 1, -1);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "data too short");
  path = make_file("trailing.npy", 1, 0, dict, data, sizeof data, -1);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "trailing bytes");
  /* A huge (non-overflowing) shape is refused before any allocation. */
  path = make_file("huge.npy", 1, 0,
                   "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,)}", data,
                   sizeof data, -1);
  expect_f32_failure(path, DITATTN_ERR_FORMAT, "data too short");
}

static void parse_dict_directly(void **state) {
  (void)state;
  dt_npy_header hdr;
  char err[128];
  const char text[] = "{'descr': '<i8', 'fortran_order': False, 'shape': (5, 6, 7), }";
  assert_int_equal(dt_npy_parse_dict(text, strlen(text), &hdr, err, sizeof err), DITATTN_OK);
  assert_int_equal(hdr.dtype, DT_NPY_I64);
  assert_int_equal(hdr.ndim, 3);
  assert_int_equal(hdr.count, 210);
  /* Not NUL-terminated: only len bytes count. */
  assert_int_equal(dt_npy_parse_dict(text, 20, &hdr, err, sizeof err), DITATTN_ERR_FORMAT);
  assert_int_equal(dt_npy_parse_dict(NULL, 0, &hdr, err, sizeof err), DITATTN_ERR_NULL_POINTER);
  /* A NULL error buffer with size 0 is allowed. */
  assert_int_equal(dt_npy_parse_dict("{", 1, &hdr, NULL, 0), DITATTN_ERR_FORMAT);
}

static void write_rejects_bad_arguments(void **state) {
  (void)state;
  float x[4] = {0};
  int64_t shape[2] = {2, 2};
  char err[256] = "";
  assert_int_equal(dt_npy_write_f32(tmp_path("w.npy"), 0, shape, x, err, sizeof err),
                   DITATTN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "ndim 0"));
  int64_t bad_shape[2] = {2, -2};
  assert_int_equal(dt_npy_write_f32(tmp_path("w.npy"), 2, bad_shape, x, err, sizeof err),
                   DITATTN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "dimension 1"));
  assert_int_equal(dt_npy_write_f32(NULL, 2, shape, x, err, sizeof err), DITATTN_ERR_NULL_POINTER);
  assert_int_equal(dt_npy_write_f32(tmp_path("no/such/dir.npy"), 2, shape, x, err, sizeof err),
                   DITATTN_ERR_IO);
  assert_non_null(strstr(err, "cannot create"));
  dt_npy_array arr;
  assert_int_equal(dt_npy_read_f32(NULL, &arr, err, sizeof err), DITATTN_ERR_NULL_POINTER);
  assert_int_equal(dt_npy_read_f32(tmp_path("x"), NULL, err, sizeof err), DITATTN_ERR_NULL_POINTER);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(roundtrip_f32_random_shapes),
      cmocka_unit_test(roundtrip_i32),
      cmocka_unit_test(reads_f64_and_i64_with_conversion),
      cmocka_unit_test(accepts_header_variants),
      cmocka_unit_test(rejects_bad_prefix),
      cmocka_unit_test(rejects_bad_headers),
      cmocka_unit_test(rejects_bad_data_length),
      cmocka_unit_test(parse_dict_directly),
      cmocka_unit_test(write_rejects_bad_arguments),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
