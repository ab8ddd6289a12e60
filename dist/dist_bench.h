/* `ditattn bench --dist`: strong scaling of the dist operations. */
#ifndef DITATTN_DIST_BENCH_H
#define DITATTN_DIST_BENCH_H

/* Runs under mpiexec (calls MPI_Init/MPI_Finalize itself unless MPI is
 * already initialized). Returns a process exit code. */
int dt_dist_bench_main(int argc, char **argv);

#endif
