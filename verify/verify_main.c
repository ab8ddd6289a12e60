/* Stand-alone `ditattn_verify`, the same as `ditattn verify`. */
#include "verify_cmd.h"

int main(int argc, char **argv) { return dt_verify_main(argc, argv); }
