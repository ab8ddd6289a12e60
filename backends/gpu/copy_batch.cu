/* Batched strided copies (dt_backend_ops.copy_2d_batch). One launch moves
 * every entry, blockIdx.y choosing the entry: dist/'s key summary exchange
 * is a dozen small strided copies (one per peer and array, read from the
 * peers' memory over NVLink/xGMI), and as copy_2d each is a copy-engine
 * operation of its own, a few microseconds apiece in a row on the stream.
 * Each entry moves in the widest word (16, 8, 4 or 1 bytes) that its
 * addresses, pitches and width are all multiples of. */
#include "gpu_common.cuh"

namespace DT_GPU_NS {

static const int kCopyThreads = 256;
/* Entries per launch: 32 of 48 bytes, well inside the 4 KB of kernel
 * arguments that CUDA and HIP both take. */
static const int kCopyBatch = 32;
/* Words a thread moves per grid pass of the largest entry, at most. */
static const int kCopyWordsPerThread = 4;

struct CopyBatch {
  dt_gpu_copy_2d c[kCopyBatch];
};

/* Index type I: 32-bit where the entry's word count fits (cheaper
 * divisions), else 64-bit. */
template <typename W, typename I> DT_DEV void copy_words(const dt_gpu_copy_2d &c) {
  const I per_row = (I)(c.width / sizeof(W)), total = per_row * (I)c.height;
  const I step = (I)gridDim.x * (I)blockDim.x;
  for (I e = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; e < total; e += step) {
    const I row = e / per_row, col = e - row * per_row;
    const W *from = (const W *)((const char *)c.src + (size_t)row * c.spitch);
    W *to = (W *)((char *)c.dst + (size_t)row * c.dpitch);
    to[col] = from[col];
  }
}

template <typename W> DT_DEV void copy_entry(const dt_gpu_copy_2d &c) {
  if (c.width / sizeof(W) * c.height <= 0xffffffffu)
    copy_words<W, unsigned>(c);
  else
    copy_words<W, unsigned long long>(c);
}

__global__ void __launch_bounds__(kCopyThreads) copy_2d_batch_kernel(CopyBatch b) {
  const dt_gpu_copy_2d c = b.c[blockIdx.y];
  if (c.width == 0 || c.height == 0) return;
  /* One row: its pitches are never applied. Block-uniform branches. */
  const size_t align =
      (size_t)c.dst | (size_t)c.src | c.width | (c.height > 1 ? c.dpitch | c.spitch : (size_t)0);
  if (align % 16 == 0)
    copy_entry<uint4>(c);
  else if (align % 8 == 0)
    copy_entry<uint2>(c);
  else if (align % 4 == 0)
    copy_entry<unsigned>(c);
  else
    copy_entry<unsigned char>(c);
}

} // namespace DT_GPU_NS

using namespace DT_GPU_NS;

extern "C" {

int DT_GPU_FN(launch_copy_2d_batch)(const dt_gpu_copy_2d *copies, int count, void *stream) {
  gpuStream_t s = (gpuStream_t)stream;
  for (int at = 0; at < count; at += kCopyBatch) {
    const int n = count - at < kCopyBatch ? count - at : kCopyBatch;
    CopyBatch b;
    size_t most = 0; /* bytes of the largest entry */
    for (int i = 0; i < n; i++) {
      b.c[i] = copies[at + i];
      const size_t bytes = b.c[i].width * b.c[i].height;
      most = bytes > most ? bytes : most;
    }
    if (most == 0) continue;
    /* Enough blocks that the largest entry takes a few passes of 16-byte
     * words; the others finish early. */
    const size_t per_block = (size_t)kCopyThreads * 16 * kCopyWordsPerThread;
    size_t blocks = (most + per_block - 1) / per_block;
    if (blocks > 1024) blocks = 1024;
    copy_2d_batch_kernel<<<dim3((unsigned)blocks, (unsigned)n), kCopyThreads, 0, s>>>(b);
    const int err = launch_status();
    if (err) return err;
  }
  return 0;
}

} // extern "C"
