/* Which ranks share a host. The device routes copy between the GPUs of one
 * host by IPC, and between hosts only through MPI. Finding the hosts takes
 * two collectives and a communicator split, so the answer is kept as an
 * attribute of the caller's communicator (a sampler calls with the same one
 * every step; the job's own communicator is a fresh duplicate per call). */
#include "dist_device.h"

#include <stdlib.h>
#include <string.h>

typedef struct host_table {
  int size, count, per_host;
  int ranks_per_host_hook; /* DITATTN_DIST_RANKS_PER_HOST it was made with (0: none) */
  int data[];              /* host_of[size], local_of[size], rank_at[size] */
} host_table;

static int g_hosts_keyval = MPI_KEYVAL_INVALID;

static int table_delete(MPI_Comm comm, int keyval, void *attr, void *extra) {
  (void)comm, (void)keyval, (void)extra;
  dt_free(attr);
  return MPI_SUCCESS;
}

/* DITATTN_DIST_RANKS_PER_HOST=n (n >= 1; a test hook, the same on every
 * rank): ranks [0, n) form host 0, [n, 2n) host 1, ... (0: unset). */
static int ranks_per_host_hook(void) {
  const char *env = getenv("DITATTN_DIST_RANKS_PER_HOST");
  if (!env) return 0;
  char *end;
  const long n = strtol(env, &end, 10);
  return end != env && *end == '\0' && n >= 1 && n <= 1 << 20 ? (int)n : 0;
}

/* The table from each rank's host leader (any rank id naming its host). */
static host_table *table_new(int size, const int *leader, int hook) {
  host_table *t = dt_malloc(sizeof *t + 3 * (size_t)size * sizeof(int));
  int *ranks_on = dt_calloc((size_t)size, sizeof(int)); /* per host */
  if (!t || !ranks_on) {
    dt_free(t);
    dt_free(ranks_on);
    return NULL;
  }
  t->size = size;
  t->count = 0;
  t->ranks_per_host_hook = hook;
  int *host_of = t->data, *local_of = t->data + size, *rank_at = t->data + 2 * size;
  for (int r = 0; r < size; r++) {
    host_of[r] = -1;
    for (int e = 0; e < r && host_of[r] < 0; e++)
      if (leader[e] == leader[r]) host_of[r] = host_of[e];
    if (host_of[r] < 0) host_of[r] = t->count++;
    local_of[r] = ranks_on[host_of[r]]++;
  }
  t->per_host = ranks_on[0];
  for (int h = 1; h < t->count; h++)
    if (ranks_on[h] != t->per_host) t->per_host = 0;
  for (int r = 0; r < size && t->per_host > 0; r++)
    rank_at[host_of[r] * t->per_host + local_of[r]] = r;
  dt_free(ranks_on);
  return t;
}

/* Each rank's host leader (the lowest rank of its host). Collective. */
static ditattn_status find_leaders(dt_dist_job *job, int hook, int *leader) {
  if (hook > 0) {
    for (int r = 0; r < job->size; r++) leader[r] = r / hook;
    return DITATTN_OK;
  }
  MPI_Comm node = MPI_COMM_NULL;
  int mine = job->rank, lowest = job->rank;
  int err = MPI_Comm_split_type(job->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  if (err == MPI_SUCCESS) err = MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, node);
  if (node != MPI_COMM_NULL) MPI_Comm_free(&node);
  if (err == MPI_SUCCESS) err = MPI_Allgather(&lowest, 1, MPI_INT, leader, 1, MPI_INT, job->comm);
  return err == MPI_SUCCESS ? DITATTN_OK : dt_dist_mpi_fail(job->ctx, err, "finding the hosts");
}

/* The caller's kept table, if it is still right for this call. */
static host_table *kept_table(const dt_dist_job *job, int hook) {
  host_table *t = NULL;
  int found = 0;
  if (g_hosts_keyval == MPI_KEYVAL_INVALID ||
      MPI_Comm_get_attr(job->caller, g_hosts_keyval, &t, &found) != MPI_SUCCESS || !found)
    return NULL;
  return t->size == job->size && t->ranks_per_host_hook == hook ? t : NULL;
}

ditattn_status dt_dist_hosts_find(dt_dist_job *job) {
  if (job->hosts.count > 0) return DITATTN_OK;
  const int hook = ranks_per_host_hook();
  if (g_hosts_keyval == MPI_KEYVAL_INVALID &&
      MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, table_delete, &g_hosts_keyval, NULL) !=
          MPI_SUCCESS)
    g_hosts_keyval = MPI_KEYVAL_INVALID;
  host_table *t = kept_table(job, hook);
  /* Every rank uses its kept table, or all find the hosts together (one
   * rank without a table, e.g. its attribute failed, must not be left
   * alone in the collectives). */
  int have = t != NULL, all = 0;
  int err = MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, job->comm);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Allreduce (hosts)");
  if (!all) {
    int *leader = dt_calloc((size_t)job->size, sizeof(int));
    TRY(dt_dist_agree(job, leader ? DITATTN_OK
                                  : dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY,
                                            "host table of %d ranks", job->size)));
    ditattn_status local = find_leaders(job, hook, leader);
    t = local == DITATTN_OK ? table_new(job->size, leader, hook) : NULL;
    dt_free(leader);
    if (local == DITATTN_OK && !t)
      local = dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "host table of %d ranks", job->size);
    const ditattn_status agreed = dt_dist_agree(job, local);
    if (agreed != DITATTN_OK) {
      dt_free(t);
      return agreed;
    }
    /* Kept on the caller's communicator (replacing an older table frees
     * it); where that fails, the job owns it. */
    if (g_hosts_keyval == MPI_KEYVAL_INVALID ||
        MPI_Comm_set_attr(job->caller, g_hosts_keyval, t) != MPI_SUCCESS)
      job->hosts.owned = t;
  }
  job->hosts.count = t->count;
  job->hosts.per_host = t->per_host;
  job->hosts.host_of = t->data;
  job->hosts.local_of = t->data + t->size;
  job->hosts.rank_at = t->data + 2 * t->size;
  return DITATTN_OK;
}

int dt_dist_hosts_rank(const dt_dist_hosts *hosts, int host, int local) {
  return hosts->rank_at[host * hosts->per_host + local];
}

int dt_dist_hosts_holder(const dt_dist_hosts *hosts, int reader, int src) {
  return hosts ? dt_dist_hosts_rank(hosts, hosts->host_of[reader], hosts->local_of[src]) : src;
}

int dt_dist_hosts_reads_from(const dt_dist_hosts *hosts, int dst, int src, int from) {
  return src != dst && from != dst && dt_dist_hosts_holder(hosts, dst, src) == from;
}
