/* The `ditattn` subcommands. argv[0] is the subcommand's name; each returns
 * the process exit code (0 ok, 1 runtime failure, 2 usage error). */
#ifndef DITATTN_TOOLS_COMMANDS_H
#define DITATTN_TOOLS_COMMANDS_H

int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_info(int argc, char **argv);

#endif
