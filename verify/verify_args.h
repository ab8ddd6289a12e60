/* key=value command-line arguments for the verify tools. */
#ifndef DITATTN_VERIFY_ARGS_H
#define DITATTN_VERIFY_ARGS_H

#include <stdint.h>

#define VA_MAX_ARGS 64

typedef struct va_args {
  int count;
  const char *key[VA_MAX_ARGS];
  const char *val[VA_MAX_ARGS];
  int used[VA_MAX_ARGS];
} va_args;

/* Splits "key=value" words; returns nonzero (after printing why) on a word
 * without '=' or too many words. */
int va_parse(va_args *a, int argc, char **argv);
/* Value of key, or def when absent (marks the key used). */
int64_t va_int(const va_args *a, const char *key, int64_t def);
double va_num(const va_args *a, const char *key, double def);
const char *va_str(const va_args *a, const char *key, const char *def);
/* Comma-separated integers ("8,4"); returns how many were stored (0 if absent). */
int va_int_list(const va_args *a, const char *key, int64_t *out, int max);
/* First key never asked for (a typo), or NULL. */
const char *va_unused(const va_args *a);

#endif
