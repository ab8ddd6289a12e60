"""PyTorch SDPA forward times for bench/device.sh, in the lines its tables read.

  python3 bench/sdpa_time.py sides 128,256,512
      B=2 H=4 D=64, N = side^2, bf16 and f32 (f32 up to N = 65536):
      "N sdpa dtype ms TFLOP/s"
  python3 bench/sdpa_time.py ropeslr
      B=H=1, N = 16*80*80 (the RoPeSLR timing's size), D = 64 and 128:
      "N D sdpa dtype ms TFLOP/s"

Each time is the median of CUDA-event timings after one warm-up call.
"""
import statistics
import sys

import torch
import torch.nn.functional as F

DTYPES = ((torch.bfloat16, "bf16"), (torch.float32, "f32"))


def median_ms(shape, dtype, reps):
    """Median milliseconds of one SDPA call on uniform [-1, 1) q, k, v of `shape`."""
    q, k, v = (torch.rand(*shape, device="cuda", dtype=dtype) * 2 - 1 for _ in range(3))
    F.scaled_dot_product_attention(q, k, v)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        F.scaled_dot_product_attention(q, k, v)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def time_sides(sides):
    """The issue's sizes, as bench/gpu_check.c --time times ditattn at them."""
    B, H, D = 2, 4, 64
    for side in [int(s) for s in sides.split(",") if s]:
        N = side * side
        for dtype, name in DTYPES:
            if dtype == torch.float32 and N > 65536:
                continue
            ms = median_ms((B, H, N, D), dtype, 3 if N >= 262144 else 7)
            tflops = B * H * 4.0 * N * N * D / ms * 1e-9
            print(f"{N:<8} sdpa   {name:<5} {ms:10.3f} {tflops:12.2f}", flush=True)
            torch.cuda.empty_cache()


def time_ropeslr():
    """The size bench/gpu_check_ropeslr.c --time times RoPeSLR at."""
    N = 16 * 80 * 80
    for D in (64, 128):
        for dtype, name in DTYPES:
            ms = median_ms((1, 1, N, D), dtype, 5)
            tflops = 4.0 * N * N * D / ms * 1e-9
            print(f"{N:<8} {D:<4} {'sdpa':<8} {name:<5} {ms:10.3f} {tflops:12.2f}", flush=True)


def main(argv):
    if argv[1:2] == ["sides"] and len(argv) == 3:
        mode = "sides"
    elif argv[1:] == ["ropeslr"]:
        mode = "ropeslr"
    else:
        print(f"usage: {argv[0]} sides 128,256,512 | ropeslr", file=sys.stderr)
        return 2
    assert torch.cuda.is_available(), "torch sees no CUDA device"
    torch.manual_seed(0)
    if mode == "sides":
        time_sides(argv[2])
    else:
        time_ropeslr()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
