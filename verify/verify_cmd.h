/* `ditattn verify`: checks a backend against the golden vectors and sweeps
 * random cases across backends. argv[0] is the subcommand's name; returns
 * the exit code (0 all passed, 1 a check failed, 2 usage or I/O error).
 *
 *   verify --golden DIR [--backend NAME] [--filter SUBSTR] [--tol-scale X]
 *          [--set key=value ...] [--require-all]
 *   verify --sweep N [--seed S] [--only I] [--backend NAME]
 */
#ifndef DITATTN_VERIFY_CMD_H
#define DITATTN_VERIFY_CMD_H

#ifdef __cplusplus
extern "C" {
#endif

int dt_verify_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
