#!/usr/bin/env python3
"""Checks the golden vectors (verify/golden/) against the independent NumPy
oracle: every case's stored outputs must match the oracle recomputed from the
stored inputs (f32: relative norm error <= the case's tol; int32: exact).
Backward cases are checked against central finite differences (float64) of
the oracle's forward, loss = sum(dout * out), with the selection recomputed
at each point (the random inputs keep it away from ties).

  check_golden.py GOLDEN_DIR
"""
import json
import math
import os
import sys

try:
    import numpy as np
except ImportError:  # never skip silently
    sys.exit("FAIL: NumPy is missing for %s (apt-get install python3-numpy)" % sys.executable)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ditattn_oracle as O  # noqa: E402
from compare import FEATURES, ORDER_KINDS, POLICIES, rel_err  # noqa: E402


def oracle_outputs(op, p, f):
    """The oracle's outputs for one case: a dict name -> array."""
    g = lambda k, d: p.get(k, d)  # noqa: E731
    if op == "dense":
        out, lse = O.dense_forward(f["q"], f["k"], f["v"], g("scale", 0.0))
        return {"out": out, "lse": lse}
    if op == "rope":
        pairing = ("interleaved", "half_split")[g("pairing", 0)]
        y = O.rope_apply(f["x"], f["pos"], (g("dt", 2), g("dh", 0), g("dw", 0)),
                         g("theta", 10000.0), pairing, inverse=bool(g("inverse", 0)))
        return {"y": y}
    if op == "order":
        grid = (g("T", 2), g("Hg", 2), g("W", 2))
        perm = O.order_seq_to_raster(ORDER_KINDS[g("kind", 1)], grid,
                                     (g("tt", 1), g("th", 1), g("tw", 1)))
        return {"perm": perm, "pos": O.raster_positions(*grid)[perm],
                "fwd": O.order_apply(f["x"], perm), "inv": O.order_apply(f["x"], perm, True)}
    if op == "pool":
        return {"y": O.pool_mean(f["x"], g("block", 2))}
    if op == "merge":
        out, lse = O.lse_merge(f["out_acc"], f["lse_acc"], f["out_part"], f["lse_part"])
        return {"out": out, "lse": lse}
    if op == "llsa":
        out, lse, sel = O.llsa_forward(f["q"], f["k"], f["v"], g("b", 2), list(g("K", [1])),
                                       g("scale", 0.0))
        res = {"out": out, "lse": lse}
        res.update({"sel%d" % (i + 1): s for i, s in enumerate(sel)})
        return res
    if op == "ropeslr":
        N = f["q"].shape[2]
        K = O.ropeslr_topk(N, g("b", 2), POLICIES[g("policy", 1)], g("rho", 0.1), g("topk", 1),
                           g("sqrt_c", 1.0))
        w = {n: f[n][0] for n in ("A", "Bk", "Et", "Ey", "Ex", "W")}
        out, lse, sel = O.ropeslr_forward(f["q"], f["k"], f["v"], f["pos"], w, g("b", 2), K,
                                          g("r", 3), FEATURES[g("feature", 0)], g("scale", 0.0),
                                          bool(g("own", 1)))
        return {"out": out, "lse": lse, "sel": sel}
    if op in ("dense_bwd", "llsa_bwd", "ropeslr_bwd"):
        return fd_backward(op, p, f)
    return None


def forward_fn(op, p):
    """out = forward(tensors, weights) for one (batch, head) slice."""
    g = lambda k, d: p.get(k, d)  # noqa: E731
    if op == "dense_bwd":
        return lambda t, w: O.dense_forward(t["q"], t["k"], t["v"], g("scale", 0.0))[0]
    if op == "llsa_bwd":
        return lambda t, w: O.llsa_forward(t["q"], t["k"], t["v"], g("b", 2), list(g("K", [1])),
                                           g("scale", 0.0))[0]

    def ropeslr(t, w, pos):
        N = t["q"].shape[2]
        K = O.ropeslr_topk(N, g("b", 2), POLICIES[g("policy", 1)], g("rho", 0.1), g("topk", 1),
                           g("sqrt_c", 1.0))
        return O.ropeslr_forward(t["q"], t["k"], t["v"], pos, {n: a[0] for n, a in w.items()},
                                 g("b", 2), K, g("r", 3), FEATURES[g("feature", 0)],
                                 g("scale", 0.0), bool(g("own", 1)))[0]
    return ropeslr


def fd_backward(op, p, f, h=1e-5):
    """Gradients of sum(dout * out) by central differences, per (batch, head)."""
    tensors = {n: f[n].astype(np.float64) for n in ("q", "k", "v")}
    weights = {n: f[n].astype(np.float64) for n in ("A", "Bk", "Et", "Ey", "Ex", "W") if n in f}
    dout = f["dout"].astype(np.float64)
    fwd = forward_fn(op, p)
    if op == "ropeslr_bwd":
        base, pos = fwd, f["pos"]
        fwd = lambda t, w: base(t, w, pos)  # noqa: E731
    grads = {"d" + n: np.zeros_like(a) for n, a in list(tensors.items()) + list(weights.items())}
    B, H = tensors["q"].shape[:2]
    for b in range(B):
        for hh in range(H):
            t = {n: a[b:b + 1, hh:hh + 1].copy() for n, a in tensors.items()}
            w = {n: a[:, hh:hh + 1].copy() for n, a in weights.items()}
            d = dout[b:b + 1, hh:hh + 1]
            for group, is_weight in ((t, False), (w, True)):
                for n, a in group.items():
                    for idx in np.ndindex(a.shape):
                        x = a[idx]
                        a[idx] = x + h
                        lp = (fwd(t, w) * d).sum()
                        a[idx] = x - h
                        lm = (fwd(t, w) * d).sum()
                        a[idx] = x
                        gi = (lp - lm) / (2 * h)
                        if is_weight:
                            grads["d" + n][0, hh][idx[2:]] += gi
                        else:
                            grads["d" + n][b, hh][idx[2:]] = gi
    return grads


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    with open(os.path.join(root, "manifest.json")) as fh:
        manifest = json.load(fh)
    passed = failed = not_covered = 0
    for case in manifest["cases"]:
        d = os.path.join(root, case["dir"])
        f = {n: np.load(os.path.join(d, fn)) for n, fn in case["inputs"].items()}
        want = oracle_outputs(case["op"], case["params"], f)
        if want is None:
            not_covered += 1
            print("not covered by the oracle: %s (%s)" % (case["name"], case["op"]))
            continue
        bad = []
        for name, fn in case["outputs"].items():
            got = np.load(os.path.join(d, fn))
            if got.dtype.kind == "i":
                ok = np.array_equal(got, want[name])
                err = 0.0 if ok else math.inf
            else:
                err = rel_err(np.where(np.isneginf(want[name]), 0, got),
                              np.where(np.isneginf(want[name]), 0, want[name]))
                ok = err <= case["tol"] and np.array_equal(np.isneginf(got),
                                                           np.isneginf(want[name]))
            if not ok:
                bad.append("%s (rel err %.3g)" % (name, err))
        if bad:
            failed += 1
            print("FAIL %s: %s" % (case["name"], ", ".join(bad)))
        else:
            passed += 1
    print("check_golden.py: %d cases match the oracle, %d fail, %d not covered" %
          (passed, failed, not_covered))
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
