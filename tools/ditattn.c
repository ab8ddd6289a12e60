/* `ditattn`: the command-line front end of the library (run, bench, info). */
#include "algos.h"
#include "commands.h"
#include "verify/verify_cmd.h"

#include "ditattn/ditattn.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
  const char *name;
  int (*main)(int argc, char **argv);
  const char *summary;
} command;

static const command commands[] = {
    {"run", cmd_run, "one forward pass of an algorithm on .npy inputs"},
    {"bench", cmd_bench, "time dense vs sparse attention on video-like inputs (the main job)"},
    {"info", cmd_info, "version, backends, supported operations and dtypes"},
    {"verify", dt_verify_main, "check a backend against the golden vectors; sweep backends vs ref"},
};
enum { NUM_COMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *f) {
  fprintf(f, "usage: ditattn <command> [options]    (ditattn <command> --help for its options)\n"
             "\ncommands:\n");
  for (int i = 0; i < NUM_COMMANDS; i++)
    fprintf(f, "  %-7s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\nalgorithms: %s\n", dt_algo_names());
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("ditattn %s\n", ditattn_version());
    return 0;
  }
  for (int i = 0; i < NUM_COMMANDS; i++)
    if (strcmp(argv[1], commands[i].name) == 0) return commands[i].main(argc - 1, argv + 1);
  fprintf(stderr, "ditattn: error: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
