#!/usr/bin/env python3
"""Compares a ditattn backend with the NumPy oracle on random cases.

For each case it runs `ditattn_oracle_driver OP DIR key=value...` (the library
draws its own seeded, strided inputs and writes inputs and outputs as .npy),
recomputes the outputs with ditattn_oracle.py from the same inputs, and checks
||out - oracle|| / ||oracle|| <= tol (NaN never passes) and exact selections.
Every failure prints one line with the case and the command reproducing it.

  compare.py --driver PATH [--backend ref] [--seed S] [--cases N] [--ops a,b]
             [--time-limit SEC] [--require-all] [--tol 1e-5]

Exit 0 only if every case ran and matched. An op the library answers with
UNSUPPORTED is reported loudly; with --require-all it is a failure.
"""
import argparse
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
except ImportError:  # never skip silently
    sys.exit("FAIL: NumPy is missing for %s (apt-get install python3-numpy)" % sys.executable)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ditattn_oracle as O  # noqa: E402

POLICIES = ("keep_fraction", "fixed_k", "sqrt")
FEATURES = ("elu1", "softmax")
ORDER_KINDS = ("raster", "morton", "tile")


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return math.inf
    if not np.all(np.isfinite(got)):
        return math.inf
    # RMS floor 1e-2 (as verify/cases.c): outputs that are ~0 by cancellation
    # compare absolutely instead of relative to rounding noise.
    denom = max(np.linalg.norm(want), 1e-2 * math.sqrt(want.size))
    return float(np.linalg.norm(got - want) / denom)


# ------------------------------------------------------------------ case generators
def layout(r):
    return {"pad": r.choice([0, 0, 3]), "bnhd": r.randint(0, 1), "amp": r.choice([1.0, 3.0])}


def maybe_scale(r):
    return r.choice([0.0, 0.0, round(r.uniform(0.05, 2.0), 4)])


def gen_dense(r):
    return dict(B=r.randint(1, 2), H=r.randint(1, 3), N=r.randint(1, 40), Nk=r.randint(1, 40),
                D=r.randint(1, 20), scale=maybe_scale(r), **layout(r))


def even_dims(r, D):
    dims, left = [], D
    for _ in range(3):
        d = 2 * r.randint(0, left // 2)
        dims.append(d)
        left -= d
    r.shuffle(dims)
    return dims


def gen_rope(r):
    D = r.randint(1, 12) * 2
    dims = even_dims(r, D if r.random() < 0.7 else D - 2)
    c = dict(B=r.randint(1, 2), H=r.randint(1, 2), D=D, T=r.randint(1, 4), Hg=r.randint(1, 5),
             W=r.randint(1, 5), dt=dims[0], dh=dims[1], dw=dims[2],
             theta=r.choice([10000.0, 256.0, round(r.uniform(2, 1e5), 2)]),
             pairing=r.randint(0, 1), inverse=r.randint(0, 1), randpos=r.randint(0, 1),
             inplace=r.randint(0, 1), **layout(r))
    if c["randpos"]:
        c["N"] = r.randint(1, 50)
    return c


def gen_order(r):
    return dict(kind=r.randint(0, 2), T=r.randint(1, 5), Hg=r.randint(1, 9), W=r.randint(1, 9),
                tt=r.randint(1, 3), th=r.randint(1, 4), tw=r.randint(1, 4), B=r.randint(1, 2),
                H=r.randint(1, 2), D=r.randint(1, 4), **layout(r))


def gen_pool(r):
    return dict(B=r.randint(1, 2), H=r.randint(1, 2), N=r.randint(1, 50), D=r.randint(1, 6),
                block=r.randint(1, 10), **layout(r))


def gen_merge(r):
    return dict(B=r.randint(1, 2), H=r.randint(1, 2), N=r.randint(1, 30), D=r.randint(1, 6),
                empty=0.3, **layout(r))


def pow2_counts(N, b, levels):
    """Every block count of every level is a power of two, so pooled means of
    quantized inputs, and hence their scores, are exact: exact ties are then
    well-defined and must follow the tie rule (score desc, index asc)."""
    return all(int(c) & (int(c) - 1) == 0 for l in range(1, levels + 1)
               for c in O.block_counts(N, b**l))


def tie_case(r, c, N_key, b, levels, n_max):
    """Turns c into a quantized (tie-heavy) case with power-of-two counts."""
    for _ in range(100):
        N = r.randint(1, n_max)
        if pow2_counts(N, b, levels):
            c.update({N_key: N, "quant": 1, "amp": 1.0})
            return c
    return c


def gen_llsa(r):
    b = r.choice([2, 2, 3, 4, 16])
    L = r.choice([1, 2, 3]) if b < 16 else r.choice([1, 2])
    N = r.randint(1, min(b**L * 3 + 5, 300))
    K = [r.choice([1, 2, 3, 5, 100]) for _ in range(L)]
    c = dict(B=r.randint(1, 2), H=r.randint(1, 2), N=N, D=r.randint(1, 8), b=b,
             K=",".join(map(str, K)), scale=maybe_scale(r), **layout(r))
    if b in (2, 4, 16) and r.random() < 0.3:
        tie_case(r, c, "N", b, L, min(b**L * 3 + 5, 300))
    return c


def gen_ropeslr(r):
    c = dict(B=r.randint(1, 2), H=r.randint(1, 2), D=r.randint(1, 8), T=r.randint(1, 3),
             Hg=r.randint(1, 4), W=r.randint(1, 4), b=r.randint(1, 8), policy=r.randint(0, 2),
             rho=round(r.uniform(0.05, 1.0), 3), topk=r.randint(1, 10),
             sqrt_c=round(r.uniform(0.3, 2.0), 3), own=r.randint(0, 1), r=r.randint(1, 9),
             feature=r.randint(0, 1), scale=maybe_scale(r), randpos=r.randint(0, 1),
             wamp=r.choice([0.3, 1.0]), **layout(r))
    if c["randpos"]:
        c["N"] = r.randint(1, 40)
        if c["b"] in (1, 2, 4, 8) and r.random() < 0.3:
            tie_case(r, c, "N", c["b"], 1, 40)
    return c


GENERATORS = {"dense": gen_dense, "rope": gen_rope, "order": gen_order, "pool": gen_pool,
              "merge": gen_merge, "llsa": gen_llsa, "ropeslr": gen_ropeslr}


# ------------------------------------------------------------------ oracle checks
def check_dense(c, f):
    out, lse = O.dense_forward(f["q"], f["k"], f["v"], c["scale"])
    return [("out", rel_err(f["out"], out)), ("lse", rel_err(f["lse"], lse))]


def check_rope(c, f):
    dims = (c["dt"], c["dh"], c["dw"])
    pairing = ("interleaved", "half_split")[c["pairing"]]
    y = O.rope_apply(f["x"], f["pos"], dims, c["theta"], pairing, inverse=bool(c["inverse"]))
    return [("y", rel_err(f["y"], y))]


def check_order(c, f):
    kind = ORDER_KINDS[c["kind"]]
    grid = (c["T"], c["Hg"], c["W"])
    perm = O.order_seq_to_raster(kind, grid, (c["tt"], c["th"], c["tw"]))
    pos = O.raster_positions(*grid)[perm]
    res = [("perm", 0.0 if np.array_equal(f["perm"], perm) else math.inf),
           ("pos", 0.0 if np.array_equal(f["pos"], pos) else math.inf)]
    res.append(("fwd", rel_err(f["fwd"], O.order_apply(f["x"], perm))))
    res.append(("inv", rel_err(f["inv"], O.order_apply(f["x"], perm, inverse=True))))
    return res


def check_pool(c, f):
    return [("y", rel_err(f["y"], O.pool_mean(f["x"], c["block"])))]


def check_merge(c, f):
    out, lse = O.lse_merge(f["out_acc"], f["lse_acc"], f["out_part"], f["lse_part"])
    return [("out", rel_err(f["out"], out)), ("lse", rel_err(f["lse"], lse))]


def check_llsa(c, f):
    K = [int(x) for x in str(c["K"]).split(",")]
    out, lse, sel = O.llsa_forward(f["q"], f["k"], f["v"], c["b"], K, c["scale"])
    res = [("out", rel_err(f["out"], out)), ("lse", rel_err(f["lse"], lse))]
    for l, s in enumerate(sel):
        got = f["sel%d" % (l + 1)]
        res.append(("sel%d" % (l + 1), 0.0 if np.array_equal(got, s) else math.inf))
    return res


def check_ropeslr(c, f):
    N = f["q"].shape[2]
    K = O.ropeslr_topk(N, c["b"], POLICIES[c["policy"]], c["rho"], c["topk"], c["sqrt_c"])
    weights = {name: f[name][0] for name in ("A", "Bk", "Et", "Ey", "Ex", "W")}
    out, lse, sel = O.ropeslr_forward(f["q"], f["k"], f["v"], f["pos"], weights, c["b"], K,
                                      c["r"], FEATURES[c["feature"]], c["scale"],
                                      bool(c["own"]))
    return [("K", 0.0 if f["sel"].shape[-1] == K else math.inf),
            ("out", rel_err(f["out"], out)), ("lse", rel_err(f["lse"], lse)),
            ("sel", 0.0 if np.array_equal(f["sel"], sel) else math.inf)]


CHECKS = {"dense": check_dense, "rope": check_rope, "order": check_order, "pool": check_pool,
          "merge": check_merge, "llsa": check_llsa, "ropeslr": check_ropeslr}


# ------------------------------------------------------------------ runner
def case_args(op, c, backend, seed):
    return ["%s=%s" % (k, v) for k, v in c.items()] + ["backend=%s" % backend, "seed=%d" % seed]


def repro(cmd):
    return "mkdir -p /tmp/case && %s %s /tmp/case %s" % (cmd[0], cmd[1], " ".join(cmd[3:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", required=True)
    ap.add_argument("--backend", default="ref")
    ap.add_argument("--seed", type=int,
                    default=int(os.environ.get("DITATTN_TEST_SEED", "0")) or int(time.time()))
    ap.add_argument("--cases", type=int, default=40, help="cases per op")
    ap.add_argument("--ops", default=",".join(GENERATORS))
    ap.add_argument("--time-limit", type=float, default=0, help="stop starting cases after SEC")
    ap.add_argument("--require-all", action="store_true", help="UNSUPPORTED ops fail")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    args.driver = os.path.abspath(args.driver)
    print("compare.py: backend %s seed %d (rerun with --seed %d)" %
          (args.backend, args.seed, args.seed), flush=True)
    rng = random.Random(args.seed)
    ops = args.ops.split(",")
    stats = {op: [0, 0, 0] for op in ops}  # passed, failed, unsupported
    worst = {op: 0.0 for op in ops}
    unsupported = set()
    tmp = tempfile.mkdtemp(prefix="ditattn_oracle_")
    start = time.time()
    try:
        for i in range(args.cases):
            if args.time_limit and time.time() - start > args.time_limit:
                print("compare.py: time limit reached after %d rounds" % i)
                break
            for op in ops:
                c = GENERATORS[op](rng)
                if op in unsupported:
                    continue
                case_seed = rng.randrange(1, 2**31)
                d = os.path.join(tmp, "%s_%d" % (op, i))
                os.mkdir(d)
                cmd = [args.driver, op, d] + case_args(op, c, args.backend, case_seed)
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode == 3 and "UNSUPPORTED" in p.stderr:
                    unsupported.add(op)
                    stats[op][2] += 1
                    print("UNSUPPORTED %s on %s: %s" % (op, args.backend, p.stderr.strip()))
                    continue
                if p.returncode != 0:
                    stats[op][1] += 1
                    print("FAIL %s: driver exit %d: %s\n  reproduce: %s" %
                          (op, p.returncode, p.stderr.strip(), repro(cmd)))
                    continue
                files = {n[:-4]: np.load(os.path.join(d, n)) for n in os.listdir(d)}
                results = CHECKS[op](c, files)
                bad = [(n, e) for n, e in results if not e <= args.tol]
                worst[op] = max([worst[op]] + [e for _, e in results])
                if bad:
                    stats[op][1] += 1
                    print("FAIL %s %s: %s\n  reproduce: %s" %
                          (op, " ".join(case_args(op, c, args.backend, case_seed)),
                           ", ".join("%s rel err %.3g" % b for b in bad), repro(cmd)))
                else:
                    stats[op][0] += 1
                shutil.rmtree(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total_fail = sum(s[1] for s in stats.values())
    for op in ops:
        print("  %-8s %4d passed %3d failed%s  worst rel err %.2e" %
              (op, stats[op][0], stats[op][1],
               "  UNSUPPORTED" if op in unsupported else "", worst[op]))
    passed = sum(s[0] for s in stats.values())
    print("compare.py: %d cases passed, %d failed, %d ops unsupported (%.1f s, seed %d)" %
          (passed, total_fail, len(unsupported), time.time() - start, args.seed))
    if total_fail or (args.require_all and unsupported) or passed == 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
