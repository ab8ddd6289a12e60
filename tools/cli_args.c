/* See cli_args.h. */
#define _POSIX_C_SOURCE 200809L
#include "cli_args.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cli_opt(int argc, char **argv, int *i, const char *name, const char **value, char *err,
            size_t err_size) {
  const char *arg = argv[*i];
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0) return 0;
  if (arg[n] == '=') {
    *value = arg + n + 1;
    return 1;
  }
  if (arg[n] != '\0') return 0;
  if (*i + 1 >= argc) {
    snprintf(err, err_size, "option %s needs a value", name);
    return -1;
  }
  *value = argv[++*i];
  return 1;
}

int cli_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  if (!s || !*s) return 0;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end != '\0' || v < lo || v > hi) return 0;
  *out = (int64_t)v;
  return 1;
}

int cli_parse_float(const char *s, float *out) {
  if (!s || !*s) return 0;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end != '\0' || !isfinite(v) || fabs(v) > 3.0e38) return 0;
  *out = (float)v;
  return 1;
}

int cli_parse_i64_list(const char *s, int64_t lo, int64_t hi, int64_t *out, int max, int *count) {
  if (!s || !*s) return 0;
  int n = 0;
  const char *p = s;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char item[32];
    if (len == 0 || len >= sizeof item || n == max) return 0;
    memcpy(item, p, len);
    item[len] = '\0';
    if (!cli_parse_i64(item, lo, hi, &out[n])) return 0;
    n++;
    if (!comma) break;
    p = comma + 1;
  }
  *count = n;
  return 1;
}

int cli_parse_grid(const char *s, int64_t grid[3]) {
  if (!s || !*s) return 0;
  int64_t parts[3];
  int n = 0;
  const char *p = s;
  for (;;) {
    const char *x = strchr(p, 'x');
    size_t len = x ? (size_t)(x - p) : strlen(p);
    char item[32];
    if (len == 0 || len >= sizeof item || n == 3) return 0;
    memcpy(item, p, len);
    item[len] = '\0';
    if (!cli_parse_i64(item, 1, INT64_C(1) << 31, &parts[n])) return 0;
    n++;
    if (!x) break;
    p = x + 1;
  }
  if (n == 2) return 0;
  grid[0] = n == 3 ? parts[0] : 1;
  grid[1] = n == 3 ? parts[1] : 1;
  grid[2] = n == 3 ? parts[2] : parts[0];
  return 1;
}

static void vprint_error(const char *fmt, va_list ap) {
  fputs("ditattn: error: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
}

int cli_usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprint_error(fmt, ap);
  va_end(ap);
  return 2;
}

int cli_runtime_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprint_error(fmt, ap);
  va_end(ap);
  return 1;
}

double cli_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
