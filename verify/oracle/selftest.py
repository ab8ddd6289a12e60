#!/usr/bin/env python3
"""Checks the NumPy oracle against the specs' own vectors and properties
before it is trusted as an oracle: llsa.md §7 (worked example) and §5 (Morton
table), ropeslr.md §7 (rho = 1 is dense, W = 0 is sparse only, the factor form
equals the direct sum, permutation equivariance) and RoPE's relative-position
property. Exit status 0 only if every check passes."""
import math
import os
import sys

try:
    import numpy as np
except ImportError:  # never skip silently
    sys.exit("FAIL: NumPy is missing for %s (apt-get install python3-numpy)" % sys.executable)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ditattn_oracle as O  # noqa: E402

failures = 0
checks = 0


def check(name, ok, detail=""):
    global failures, checks
    checks += 1
    if not ok:
        failures += 1
        print("FAIL %s %s" % (name, detail))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)):
        return math.inf
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def t4(x):
    return np.asarray(x, np.float64).reshape(1, 1, -1, 1)


def worked_example():
    """llsa.md §7 (values given to 6 significant digits)."""
    q = t4([1, 0, 0, 1, -1, 0, 2, 1])
    k = t4([0.5, 1, -1, 0, 2, 2, 0, -0.5])
    v = t4([1, 2, 3, 4, 5, 6, 7, 8])
    check("§7 pk", np.allclose(O.pool_mean(k, 2).ravel(), [0.75, -0.5, 2, -0.25]))
    check("§7 pv", np.allclose(O.pool_mean(v, 2).ravel(), [1.5, 3.5, 5.5, 7.5]))
    out, lse, sel = O.llsa_forward(q, k, v, 2, [1], scale=1.0)
    check("§7 selection", sel[0].ravel().tolist() == [2, 2, 1, 2], str(sel[0].ravel()))
    want_o = [5.05562, 4.7, 4.7, 5.05562, 4.24681, 4.3, 5.34781, 5.05562]
    want_l = [3.59898, 2.30259, 2.30259, 3.59898, 2.37947, 2.30259, 5.43505, 3.59898]
    check("§7 out", np.allclose(out.ravel(), want_o, atol=6e-6), str(out.ravel()))
    check("§7 lse", np.allclose(lse.ravel(), want_l, atol=6e-6), str(lse.ravel()))


def morton_table():
    """llsa.md §5: S = 4 image, raster -> sequence position."""
    perm = O.order_seq_to_raster("morton", (1, 4, 4))
    seq_of_raster = np.empty(16, np.int64)
    seq_of_raster[perm] = np.arange(16)
    want = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    check("§5 morton 4x4", seq_of_raster.tolist() == want, str(seq_of_raster))
    # 16x16 Morton: aligned runs of 16 tokens are 4x4 patches.
    perm = O.order_seq_to_raster("morton", (1, 16, 16))
    ys, xs = perm // 16, perm % 16
    ok = all(np.ptp(ys[s:s + 16]) == 3 and np.ptp(xs[s:s + 16]) == 3 for s in range(0, 256, 16))
    check("§5 morton patches", ok)
    # Tile order: every tile is a contiguous run, raster inside.
    perm = O.order_seq_to_raster("tile", (3, 5, 7), (2, 2, 3))
    check("tile is a permutation", sorted(perm.tolist()) == list(range(105)))
    check("tile first run", perm[:12].tolist() ==
          [0, 1, 2, 7, 8, 9, 35, 36, 37, 42, 43, 44], str(perm[:12]))


def rope_properties(rng):
    """Rotations preserve norms, invert, and make q.k depend on pos differences."""
    D, dims = 16, (4, 6, 4)
    for pairing in ("interleaved", "half_split"):
        x = rng.uniform(-1, 1, (1, 1, 5, D))
        pos = rng.integers(0, 9, (5, 3))
        y = O.rope_apply(x, pos, dims, 100.0, pairing)
        check("rope norm " + pairing,
              np.allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1)))
        back = O.rope_apply(y, pos, dims, 100.0, pairing, inverse=True)
        check("rope inverse " + pairing, rel(back, x) < 1e-14)
        check("rope tail untouched " + pairing, np.array_equal(y[..., 14:], x[..., 14:]))
        a, b = rng.uniform(-1, 1, (2, 1, 1, 1, D))
        shift = np.array([[2, 3, 1]])
        p0, p1 = np.array([[1, 4, 2]]), np.array([[3, 0, 5]])
        d0 = (O.rope_apply(a, p0, dims, 100.0, pairing) * O.rope_apply(b, p1, dims, 100.0,
                                                                      pairing)).sum()
        d1 = (O.rope_apply(a, p0 + shift, dims, 100.0, pairing) *
              O.rope_apply(b, p1 + shift, dims, 100.0, pairing)).sum()
        check("rope relative " + pairing, abs(d0 - d1) < 1e-12, "%g vs %g" % (d0, d1))
    # A known rotation: D = 2, t-part only, pos_t = 1, theta irrelevant for j = 0.
    y = O.rope_apply(t4([1.0, 0.0]).reshape(1, 1, 1, 2), [[1, 0, 0]], (2, 0, 0), 10.0)
    check("rope j=0 angle", np.allclose(y.ravel(), [math.cos(1), math.sin(1)]))


def llsa_properties(rng):
    """L = 1 with K_1 >= n: fine part is every token, so LLSA equals dense
    attention over [all tokens, w = 1] + [pooled tokens, w = cnt]."""
    N, D, b = 11, 3, 4
    q, k, v = rng.uniform(-1, 1, (3, 1, 1, N, D))
    out, lse, sel = O.llsa_forward(q, k, v, b, [9])
    pk, pv = O.pool_mean(k, b), O.pool_mean(v, b)
    cnt = O.block_counts(N, b)
    sc = 1 / math.sqrt(D)
    z = sc * np.concatenate([k[0, 0] @ q[0, 0].T, pk[0, 0] @ q[0, 0].T]).T
    z += np.concatenate([np.zeros(N), np.log(cnt)])
    want_lse = np.log(np.exp(z).sum(axis=1))
    want = np.exp(z - want_lse[:, None]) @ np.concatenate([v[0, 0], pv[0, 0]])
    check("llsa L1 all-selected = dense", rel(out[0, 0], want) < 1e-13)
    check("llsa L1 lse", rel(lse[0, 0], want_lse) < 1e-13)
    check("llsa K>n pads -1", (sel[0][..., 3:] == -1).all() and (sel[0][..., :3] >= 0).all())
    # Ties: equal scores keep ascending block order.
    check("topk ties", O.top_k([5, 1, 3, 2], [1.0, 2.0, 1.0, 1.0], 3) == [1, 2, 3])
    # L = 3 runs and selects inside the candidates.
    N, b = 70, 2
    q, k, v = rng.uniform(-1, 1, (3, 1, 1, N, D))
    out, lse, sel = O.llsa_forward(q, k, v, b, [2, 1, 2])
    s, cand = O.llsa_select(q[0, 0], k[0, 0], b, [2, 1, 2])
    ok = all(set(s[l][g]) <= set(cand[l][g]) for l in (1, 2) for g in range(len(s[l])))
    check("llsa L3 sel within candidates", ok and np.all(np.isfinite(out)))


def lowrank_by_factors(q, k, v, pos, w, block, sel, feature):
    """ropeslr.md §3's O(N r D) factor form, to cross-check the direct sum."""
    N, D = q.shape
    pe = w["Et"][pos[:, 0]] + w["Ey"][pos[:, 1]] + w["Ex"][pos[:, 2]]
    f = O.feature_map(q @ w["A"] + pe, feature)
    g = O.feature_map(k @ w["Bk"] + pe, feature)
    n = -(-N // block)
    S_C = [g[C * block:(C + 1) * block].T @ v[C * block:(C + 1) * block] for C in range(n)]
    z_C = [g[C * block:(C + 1) * block].sum(axis=0) for C in range(n)]
    o = np.zeros((N, D))
    for G in range(n):
        if len(sel[G]) == n:
            continue
        S = sum(S_C) - sum(S_C[C] for C in sel[G])
        z = sum(z_C) - sum(z_C[C] for C in sel[G])
        for i in range(G * block, min((G + 1) * block, N)):
            o[i] = f[i] @ S / (f[i] @ z)
    return o


def ropeslr_properties(rng):
    Hh, T, Hg, Wg, D, r = 2, 2, 3, 4, 6, 5
    N = T * Hg * Wg
    pos = O.raster_positions(T, Hg, Wg)
    q, k, v = rng.uniform(-1, 1, (3, 1, Hh, N, D))

    def weights(zero_w=False):
        w = {"A": rng.uniform(-1, 1, (Hh, D, r)), "Bk": rng.uniform(-1, 1, (Hh, D, r)),
             "Et": rng.uniform(-1, 1, (Hh, T, r)), "Ey": rng.uniform(-1, 1, (Hh, Hg, r)),
             "Ex": rng.uniform(-1, 1, (Hh, Wg, r)), "W": rng.uniform(-1, 1, (Hh, D, D))}
        if zero_w:
            w["W"][:] = 0
        return w

    w = weights()
    n = -(-N // 5)
    out, lse, _ = O.ropeslr_forward(q, k, v, pos, w, 5, n, r)
    d_out, d_lse = O.dense_forward(q, k, v)
    check("ropeslr rho=1 is dense", rel(out, d_out) < 1e-13 and rel(lse, d_lse) < 1e-13)
    w0 = weights(zero_w=True)
    out_w0, lse_w0, sel = O.ropeslr_forward(q, k, v, pos, w0, 5, 2, r)
    # Sparse only: recompute it as dense attention restricted to the selected blocks.
    ok = True
    for h in range(Hh):
        for G in range(n):
            idx = np.concatenate([np.arange(C * 5, min(C * 5 + 5, N)) for C in sel[0, h, G]])
            rows = np.arange(G * 5, min(G * 5 + 5, N))
            o_s, _ = O.dense_forward(q[:, h:h + 1, rows], k[:, h:h + 1, idx], v[:, h:h + 1, idx])
            ok &= rel(out_w0[0, h, rows], o_s[0, 0]) < 1e-13
            ok &= G in sel[0, h, G]
    check("ropeslr W=0 is sparse only, own block kept", ok)
    for feature in ("elu1", "softmax"):
        out_f, _, sel = O.ropeslr_forward(q, k, v, pos, w, 5, 2, r, feature=feature)
        out_f0, _, _ = O.ropeslr_forward(q, k, v, pos, dict(w, W=w0["W"]), 5, 2, r,
                                         feature=feature)
        good = True
        for h in range(Hh):
            wh = {name: a[h] for name, a in w.items()}
            o_lr = lowrank_by_factors(q[0, h], k[0, h], v[0, h], pos, wh, 5,
                                      [list(s) for s in sel[0, h]], feature)
            good &= rel(out_f[0, h] - out_f0[0, h], o_lr @ w["W"][h]) < 1e-11
        check("ropeslr factors = direct sum " + feature, good)
    # Permuting tokens with their positions permutes the output (block = 1
    # makes the selection a per-token set, so the permutation commutes with it).
    perm = rng.permutation(N)
    o1, _, _ = O.ropeslr_forward(q, k, v, pos, w, 1, 3, r, force_own_block=True)
    o2, _, _ = O.ropeslr_forward(q[:, :, perm], k[:, :, perm], v[:, :, perm], pos[perm], w, 1,
                                 3, r, force_own_block=True)
    check("ropeslr permutation equivariance", rel(o2, o1[:, :, perm]) < 1e-12)
    check("ropeslr topk policies",
          O.ropeslr_topk(1000, 64, "keep_fraction", rho=0.1) == 2 and
          O.ropeslr_topk(1000, 64, "sqrt", sqrt_c=1.0) == 4 and
          O.ropeslr_topk(10, 4, "fixed_k", topk=9) == 3)


def main():
    rng = np.random.default_rng(int(os.environ.get("DITATTN_TEST_SEED", "12345")))
    worked_example()
    morton_table()
    rope_properties(rng)
    llsa_properties(rng)
    ropeslr_properties(rng)
    print("oracle selftest: %d checks, %d failed" % (checks, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
