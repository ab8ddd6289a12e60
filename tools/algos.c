/* The algorithm table, built from algo_list.h. */
#include "algos.h"

#include <string.h>

#define DT_ALGO(name) extern const dt_algo dt_algo_##name;
#include "algo_list.h"
#undef DT_ALGO

const dt_algo *const dt_algos[] = {
#define DT_ALGO(name) &dt_algo_##name,
#include "algo_list.h"
#undef DT_ALGO
    NULL};

const dt_algo *dt_algo_find(const char *name) {
  for (int i = 0; dt_algos[i]; i++)
    if (strcmp(dt_algos[i]->name, name) == 0) return dt_algos[i];
  return NULL;
}

const char *dt_algo_names(void) {
  static char names[256];
  if (names[0]) return names;
  size_t n = 0;
  for (int i = 0; dt_algos[i] && n + 1 < sizeof names; i++) {
    size_t len = strlen(dt_algos[i]->name);
    if (n + len + 2 > sizeof names) break;
    if (i) names[n++] = '|';
    memcpy(names + n, dt_algos[i]->name, len);
    n += len;
    names[n] = '\0';
  }
  return names;
}
