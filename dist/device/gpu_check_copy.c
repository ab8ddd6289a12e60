/* The batched device copy (dt_backend_ops.copy_2d_batch) against the same
 * copies done on the host, byte for byte. Entries get their own regions of
 * one source and one destination buffer, at offsets of every word
 * alignment the kernel picks between (16, 8, 4, 1 bytes), with random
 * widths, heights and pitches; the destination is poisoned first, so bytes
 * written outside an entry's rows, or rows left unwritten, both show. */
#include "gpu_check_copy.h"

#include "backends/backend.h" /* the table's copy_2d_batch */
#include "dist_test_util.h"   /* dtu_rng */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { GCC_ENTRIES = 45, GCC_POISON = 0xa5 }; /* > 32: two launches */

typedef struct gcc_layout {
  dt_copy_2d_desc desc[GCC_ENTRIES]; /* offsets into the buffers until placed */
  size_t bytes;                      /* of each buffer */
} gcc_layout;

/* Random entries of all four alignments; src/dst hold byte offsets. */
static void draw(dtu_rng *rng, gcc_layout *l) {
  static const size_t words[4] = {16, 8, 4, 1};
  size_t at = 0;
  for (int i = 0; i < GCC_ENTRIES; i++) {
    const size_t w = words[i % 4];
    dt_copy_2d_desc *d = &l->desc[i];
    d->width = w * (size_t)dtu_int(rng, 1, 300);
    d->height = (size_t)dtu_int(rng, 1, 40);
    d->dpitch = d->width + w * (size_t)dtu_int(rng, 0, 6);
    d->spitch = d->width + w * (size_t)dtu_int(rng, 0, 6);
    if (i == 5) d->width = 0;                                  /* nothing to copy */
    if (i == 6) d->height = 1, d->dpitch = d->spitch = 1;      /* one row: pitches unused */
    at = (at + 15) / 16 * 16 + (w == 1 ? 3 : w == 16 ? 0 : w); /* the entry's alignment */
    const size_t pitch = d->dpitch > d->spitch ? d->dpitch : d->spitch;
    d->dst = (void *)at;
    d->src = (const void *)at;
    at += d->height * (pitch > d->width ? pitch : d->width);
  }
  l->bytes = at + 16;
}

/* Entries with their offsets turned into addresses in dst and src. */
static void place(const gcc_layout *l, char *dst, const char *src, dt_copy_2d_desc *out) {
  for (int i = 0; i < GCC_ENTRIES; i++) {
    out[i] = l->desc[i];
    out[i].dst = dst + (size_t)l->desc[i].dst;
    out[i].src = src + (size_t)l->desc[i].src;
  }
}

/* One batch on the device and on the host; the count of bytes that differ
 * (SIZE_MAX: a call failed). */
static size_t run_batch(ditattn_context *gpu, const gcc_layout *l, const unsigned char *host_src,
                        void *dev_src, void *dev_dst, unsigned char *want, unsigned char *got) {
  dt_copy_2d_desc dev[GCC_ENTRIES], host[GCC_ENTRIES];
  memset(want, GCC_POISON, l->bytes);
  place(l, (char *)want, (const char *)host_src, host);
  for (int i = 0; i < GCC_ENTRIES; i++)
    for (size_t r = 0; r < host[i].height; r++)
      memcpy((char *)host[i].dst + r * host[i].dpitch,
             (const char *)host[i].src + r * host[i].spitch, host[i].width);
  memset(got, GCC_POISON, l->bytes);
  place(l, dev_dst, dev_src, dev);
  if (ditattn_copy_to_backend(gpu, dev_dst, got, l->bytes) != DITATTN_OK ||
      gpu->ops->copy_2d_batch(gpu, dev, GCC_ENTRIES) != DITATTN_OK ||
      ditattn_copy_to_host(gpu, got, dev_dst, l->bytes) != DITATTN_OK ||
      ditattn_synchronize(gpu) != DITATTN_OK)
    return SIZE_MAX;
  size_t wrong = 0;
  for (size_t b = 0; b < l->bytes; b++) wrong += got[b] != want[b];
  return wrong;
}

int gcc_check_copy_batch(ditattn_context *gpu, uint64_t seed, int rank) {
  if (!gpu->ops->copy_2d_batch) {
    if (rank == 0) printf("gpu_check: copy_2d_batch: the backend has none (skipped)\n");
    return 1;
  }
  dtu_rng rng = {seed};
  gcc_layout l;
  draw(&rng, &l);
  unsigned char *host_src = malloc(l.bytes), *want = malloc(l.bytes), *got = malloc(l.bytes);
  void *dev_src = NULL, *dev_dst = NULL;
  int ok = host_src && want && got && ditattn_malloc(gpu, l.bytes, &dev_src) == DITATTN_OK &&
           ditattn_malloc(gpu, l.bytes, &dev_dst) == DITATTN_OK;
  size_t wrong[2] = {SIZE_MAX, SIZE_MAX};
  int refused = 0;
  if (ok) {
    for (size_t b = 0; b < l.bytes; b++) host_src[b] = (unsigned char)dtu_next(&rng);
    ok = ditattn_copy_to_backend(gpu, dev_src, host_src, l.bytes) == DITATTN_OK;
  }
  if (ok) {
    wrong[0] = run_batch(gpu, &l, host_src, dev_src, dev_dst, want, got);
    /* A pitch under the width (two rows) is refused as copy_2d would. */
    dt_copy_2d_desc bad = {dev_dst, dev_src, 8, 16, 16, 2};
    refused = gpu->ops->copy_2d_batch(gpu, &bad, 1) == DITATTN_ERR_INVALID_ARGUMENT;
    dt_clear_error(gpu);
    wrong[1] = run_batch(gpu, &l, host_src, dev_src, dev_dst, want, got); /* still right */
  }
  const int pass = ok && wrong[0] == 0 && wrong[1] == 0 && refused;
  if (rank == 0)
    printf("%s copy_2d_batch: %d entries (alignments 16/8/4/1, %zu bytes): %zu then %zu bytes "
           "wrong; pitch under width refused: %s\n",
           pass ? "PASS" : "FAIL", GCC_ENTRIES, l.bytes, wrong[0], wrong[1],
           refused ? "yes" : "no");
  if (dev_src) (void)ditattn_free(gpu, dev_src);
  if (dev_dst) (void)ditattn_free(gpu, dev_dst);
  free(host_src);
  free(want);
  free(got);
  return pass;
}
