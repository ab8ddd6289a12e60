/* .npy files (NumPy's array format) for ditattn's tools: the CLI, the
 * verifier, the RoPeSLR weights loader.
 *
 * Library rules: nothing is printed, nothing exits. Every call returns a
 * ditattn_status and, on failure, writes a one-line message naming the file
 * and the problem into the caller's buffer `err` (err_size bytes; err may be
 * NULL when err_size is 0). Memory comes from malloc and is released on
 * every error path; a successful read hands the buffer to the caller, who
 * releases it with dt_npy_array_free.
 *
 * What is read:
 *  - format versions 1.0, 2.0 and 3.0 (3.0 = 2.0 with a UTF-8 header);
 *  - the header dict with exactly the keys 'descr', 'fortran_order' and
 *    'shape', in any order, with any whitespace and an optional trailing
 *    comma (in the dict and in the shape tuple); strings in ' or " quotes;
 *  - descr '<f4', '<f8', '<i4', '<i8' ('|' or '=' byte orders are rejected
 *    for these multi-byte types; '>' is big-endian and rejected);
 *  - 1 to DT_NPY_MAX_DIMS dimensions, each >= 1 (0-d scalars and empty
 *    arrays are rejected: no tensor in ditattn can use them);
 *  - C order only (fortran_order True is rejected);
 *  - the data must fill the shape exactly: a short file and trailing bytes
 *    after the data are both errors (trailing bytes usually mean a wrong
 *    shape or a file written twice).
 *
 * Status codes:
 *  - DITATTN_ERR_IO: the file cannot be opened, read or written;
 *  - DITATTN_ERR_FORMAT: the bytes are not a well-formed .npy file as
 *    described above (magic, version, header syntax, keys, shape, order,
 *    truncation, trailing bytes);
 *  - DITATTN_ERR_DTYPE: a well-formed descr that this call does not accept
 *    (big-endian, complex, strings, ... or an integer file where floats are
 *    needed and vice versa);
 *  - DITATTN_ERR_OVERFLOW: the shape's element or byte count does not fit
 *    in int64/size_t, or an int64 value does not fit in int32;
 *  - DITATTN_ERR_OUT_OF_MEMORY: malloc failed;
 *  - DITATTN_ERR_NULL_POINTER / DITATTN_ERR_INVALID_ARGUMENT: bad call.
 *
 * Writing produces format 1.0 with the header padded by spaces and ended by
 * '\n' so that the data starts at a multiple of 64 bytes, as NumPy does. */
#ifndef DITATTN_TOOLS_NPY_H
#define DITATTN_TOOLS_NPY_H

#include "ditattn/ditattn.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DT_NPY_MAX_DIMS 8

/* Element types found in a file / held by an array in memory. */
typedef enum dt_npy_dtype {
  DT_NPY_F32 = 0, /* '<f4' */
  DT_NPY_F64 = 1, /* '<f8' */
  DT_NPY_I32 = 2, /* '<i4' */
  DT_NPY_I64 = 3  /* '<i8' */
} dt_npy_dtype;

/* What a file's header says. */
typedef struct dt_npy_header {
  int version_major; /* 1, 2 or 3 */
  dt_npy_dtype dtype;
  int ndim;
  int64_t shape[DT_NPY_MAX_DIMS];
  int64_t count;      /* product of shape */
  size_t data_offset; /* bytes before the data */
} dt_npy_header;

/* An array in memory, C order. data is float* for DT_NPY_F32, int32_t* for
 * DT_NPY_I32 (the readers below always convert to one of these two). */
typedef struct dt_npy_array {
  dt_npy_dtype dtype;
  int ndim;
  int64_t shape[DT_NPY_MAX_DIMS];
  int64_t count;
  void *data;
} dt_npy_array;

/* Reads a float array: '<f4' as is, '<f8' converted to float (values beyond
 * float's range become ±inf). Integer files give DITATTN_ERR_DTYPE.
 * On failure *arr is zeroed (data NULL). */
ditattn_status dt_npy_read_f32(const char *path, dt_npy_array *arr, char *err, size_t err_size);

/* Reads an index array: '<i4' as is, '<i8' narrowed (a value outside int32
 * gives DITATTN_ERR_OVERFLOW). Float files give DITATTN_ERR_DTYPE. */
ditattn_status dt_npy_read_i32(const char *path, dt_npy_array *arr, char *err, size_t err_size);

/* Frees arr->data and zeroes *arr. NULL is harmless. */
void dt_npy_array_free(dt_npy_array *arr);

/* Reads only the header of a file (for `ditattn info`-like tools). */
ditattn_status dt_npy_read_header(const char *path, dt_npy_header *hdr, char *err, size_t err_size);

/* Parses a header dict text (the bytes after the length field; need not be
 * NUL-terminated). Fills dtype, ndim, shape, count; leaves version_major and
 * data_offset alone. Exposed for tests and for .npz readers. */
ditattn_status dt_npy_parse_dict(const char *text, size_t len, dt_npy_header *hdr, char *err,
                                 size_t err_size);

/* Writes a C-order array of ndim (1..DT_NPY_MAX_DIMS) dimensions, each >= 1,
 * as format 1.0. A partly written file is removed on failure. */
ditattn_status dt_npy_write_f32(const char *path, int ndim, const int64_t *shape, const float *data,
                                char *err, size_t err_size);
ditattn_status dt_npy_write_i32(const char *path, int ndim, const int64_t *shape,
                                const int32_t *data, char *err, size_t err_size);

/* "<f4" etc. */
const char *dt_npy_dtype_descr(dt_npy_dtype dtype);

#ifdef __cplusplus
}
#endif
#endif /* DITATTN_TOOLS_NPY_H */
