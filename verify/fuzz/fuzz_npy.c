/* libFuzzer harness for the .npy reader (tools/npy.h): the input is written
 * to a file and read back as a header, as floats and as indices; the header
 * dict parser also gets the raw bytes. A successful read must describe a
 * consistent array whose every element is readable (ASan checks the buffer),
 * and writing it out and reading it again must give the same bits. */
#define _POSIX_C_SOURCE 200809L
#include "tools/npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_path[64], g_path2[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  snprintf(g_path, sizeof g_path, "/tmp/ditattn_fuzz_npy_%ld.npy", (long)getpid());
  snprintf(g_path2, sizeof g_path2, "/tmp/ditattn_fuzz_npy_%ld_rt.npy", (long)getpid());
  return 0;
}

static void expect(int ok) {
  if (!ok) __builtin_trap();
}

static void check_array(const dt_npy_array *a, size_t elem) {
  expect(a->ndim >= 1 && a->ndim <= DT_NPY_MAX_DIMS && a->data != NULL);
  int64_t count = 1;
  for (int i = 0; i < a->ndim; i++) {
    expect(a->shape[i] >= 1);
    count *= a->shape[i];
  }
  expect(count == a->count);
  volatile unsigned char sink = 0;
  const unsigned char *bytes = a->data;
  for (size_t i = 0; i < (size_t)count * elem; i++) sink ^= bytes[i];
  (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  dt_npy_header hdr;
  if (size > 10) dt_npy_parse_dict((const char *)data + 10, size - 10, &hdr, err, sizeof err);
  FILE *f = fopen(g_path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);
  ditattn_status st = dt_npy_read_header(g_path, &hdr, err, sizeof err);
  expect((int)st >= 0 && (int)st < DITATTN_STATUS_COUNT);
  dt_npy_array a;
  if (dt_npy_read_f32(g_path, &a, err, sizeof err) == DITATTN_OK) {
    expect(a.dtype == DT_NPY_F32);
    check_array(&a, sizeof(float));
    dt_npy_array b;
    expect(dt_npy_write_f32(g_path2, a.ndim, a.shape, a.data, err, sizeof err) == DITATTN_OK);
    expect(dt_npy_read_f32(g_path2, &b, err, sizeof err) == DITATTN_OK);
    expect(b.count == a.count && memcmp(a.data, b.data, (size_t)a.count * sizeof(float)) == 0);
    dt_npy_array_free(&b);
  } else {
    expect(a.data == NULL);
  }
  dt_npy_array_free(&a);
  if (dt_npy_read_i32(g_path, &a, err, sizeof err) == DITATTN_OK) {
    expect(a.dtype == DT_NPY_I32);
    check_array(&a, sizeof(int32_t));
    dt_npy_array b;
    expect(dt_npy_write_i32(g_path2, a.ndim, a.shape, a.data, err, sizeof err) == DITATTN_OK);
    expect(dt_npy_read_i32(g_path2, &b, err, sizeof err) == DITATTN_OK);
    expect(b.count == a.count && memcmp(a.data, b.data, (size_t)a.count * sizeof(int32_t)) == 0);
    dt_npy_array_free(&b);
  }
  dt_npy_array_free(&a);
  return 0;
}
