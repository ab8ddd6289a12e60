/* Small command-line helpers shared by the `ditattn` subcommands and the
 * algorithm entries: option matching ("--name VALUE" or "--name=VALUE") and
 * strict number/list parsing. Parsers return 1 on success, 0 on a bad value,
 * and never print. */
#ifndef DITATTN_TOOLS_CLI_ARGS_H
#define DITATTN_TOOLS_CLI_ARGS_H

#include <stddef.h>
#include <stdint.h>

/* If argv[*i] is `name` (value in argv[*i + 1]) or `name=VALUE`: stores the
 * value, moves *i to the last argument used, returns 1. A missing value
 * returns -1 with a message in err. Any other argument returns 0. */
int cli_opt(int argc, char **argv, int *i, const char *name, const char **value, char *err,
            size_t err_size);

/* Integer in [lo, hi] (decimal, whole string). */
int cli_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
/* Finite float (whole string). */
int cli_parse_float(const char *s, float *out);
/* Comma-separated integers, each in [lo, hi]: at most max of them. */
int cli_parse_i64_list(const char *s, int64_t lo, int64_t hi, int64_t *out, int max, int *count);
/* "TxHxW", each >= 1 (a single number N means 1x1xN). */
int cli_parse_grid(const char *s, int64_t grid[3]);

/* Prints "ditattn: error: ..." on stderr. Returns 2 (usage) for convenience. */
int cli_usage_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* Prints "ditattn: error: ..." on stderr. Returns 1 (runtime failure). */
int cli_runtime_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Seconds from a monotonic clock. */
double cli_now(void);

#endif
