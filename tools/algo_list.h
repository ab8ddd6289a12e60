/* The CLI's algorithms, one line each (X-macro, see algos.h). Table order is
 * bench order: dense first, since the others are compared with it. */
DT_ALGO(dense)
DT_ALGO(llsa)
DT_ALGO(ropeslr)
