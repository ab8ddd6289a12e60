/* key=value command-line arguments for the verify tools. */
#include "verify_args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int va_parse(va_args *a, int argc, char **argv) {
  memset(a, 0, sizeof *a);
  for (int i = 0; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq || a->count == VA_MAX_ARGS) {
      fprintf(stderr, "bad argument '%s' (want key=value, at most %d)\n", argv[i], VA_MAX_ARGS);
      return 1;
    }
    *eq = '\0';
    a->key[a->count] = argv[i];
    a->val[a->count] = eq + 1;
    a->count++;
  }
  return 0;
}

/* The used flags are bookkeeping, not a semantic change: cast away const. */
static const char *find(const va_args *a, const char *key) {
  for (int i = a->count - 1; i >= 0; i--)
    if (strcmp(a->key[i], key) == 0) {
      ((va_args *)a)->used[i] = 1;
      return a->val[i];
    }
  return NULL;
}

int64_t va_int(const va_args *a, const char *key, int64_t def) {
  const char *v = find(a, key);
  return v ? (int64_t)strtoll(v, NULL, 0) : def;
}

double va_num(const va_args *a, const char *key, double def) {
  const char *v = find(a, key);
  return v ? strtod(v, NULL) : def;
}

const char *va_str(const va_args *a, const char *key, const char *def) {
  const char *v = find(a, key);
  return v ? v : def;
}

int va_int_list(const va_args *a, const char *key, int64_t *out, int max) {
  const char *v = find(a, key);
  int n = 0;
  while (v && *v && n < max) {
    char *end;
    out[n++] = (int64_t)strtoll(v, &end, 0);
    v = *end == ',' ? end + 1 : NULL;
  }
  return n;
}

const char *va_unused(const va_args *a) {
  for (int i = 0; i < a->count; i++)
    if (!a->used[i]) return a->key[i];
  return NULL;
}
