#!/usr/bin/env python3
"""`ditattn run --algo ropeslr` with weights written by NumPy (directory of
.npy, np.savez, np.savez_compressed) against the independent NumPy oracle
verify/oracle/ditattn_oracle.py (spec ropeslr.md); bad weights; and
`ditattn bench --algo ropeslr --json` (dense, llsa, ropeslr, FLOPs per branch,
random weights said so)."""
import json
import math
import os
import sys

import numpy as np

from cli_util import Checker, rel_err

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "verify", "oracle"))
import ditattn_oracle as oracle  # noqa: E402

c = Checker("test_cli_ropeslr")
TOL = 1e-5
NAMES = ("A", "B", "Et", "Ey", "Ex", "W")


def make_weights(H, D, r, grid, dtype=np.float32):
    """Random weights of the spec's shapes (ropeslr.md §1), O(1) features."""
    T, Hg, W = grid
    g = c.rng
    w = {"A": g.uniform(-1, 1, (H, D, r)) / math.sqrt(D),
         "B": g.uniform(-1, 1, (H, D, r)) / math.sqrt(D),
         "Et": g.uniform(-0.5, 0.5, (H, T, r)), "Ey": g.uniform(-0.5, 0.5, (H, Hg, r)),
         "Ex": g.uniform(-0.5, 0.5, (H, W, r)),
         "W": g.uniform(-1, 1, (H, D, D)) / math.sqrt(D)}
    return {k: v.astype(dtype) for k, v in w.items()}


def write_weights(w, kind, name):
    """kind: 'dir' (one .npy per weight), 'npz' or 'npz_compressed'."""
    if kind == "dir":
        path = c.path(name)
        os.makedirs(path, exist_ok=True)
        for k, v in w.items():
            np.save(os.path.join(path, k + ".npy"), v)
        return path
    path = c.path(name + ".npz")
    (np.savez if kind == "npz" else np.savez_compressed)(path, **w)
    return path


def oracle_weights(w):
    ow = {k: np.asarray(v, np.float64) for k, v in w.items() if k != "B"}
    ow["Bk"] = np.asarray(w["B"], np.float64)
    return ow


# One case each: weights format, policy, feature, own block, positions, rank of the inputs.
CASES = [
    dict(kind="dir", B=1, H=2, D=16, r=6, grid=(2, 4, 8), block=8, policy=("--topk", 3),
         feature="elu1", own=True, rank4=True, pos=False, scale=None, dtype=np.float32),
    dict(kind="npz", B=2, H=2, D=8, r=20, grid=(3, 5, 4), block=7, policy=("--rho", 0.3),
         feature="softmax", own=True, rank4=True, pos=True, scale=None, dtype=np.float64),
    dict(kind="npz_compressed", B=1, H=1, D=16, r=4, grid=(2, 6, 6), block=9,
         policy=("--sqrt-c", 1.0), feature="elu1", own=False, rank4=False, pos=True, scale=0.3,
         dtype=np.float32),
]

for ci, cs in enumerate(CASES):
    B, H, D, r, grid, b = cs["B"], cs["H"], cs["D"], cs["r"], cs["grid"], cs["block"]
    N = grid[0] * grid[1] * grid[2]
    desc = (f"case {ci}: {cs['kind']} B={B} H={H} N={N} grid={grid} D={D} r={r} b={b} "
            f"{cs['policy'][0]} {cs['policy'][1]} {cs['feature']} own={cs['own']} "
            f"pos={cs['pos']} rank4={cs['rank4']} scale={cs['scale']}")
    q, k, v = (c.rng.standard_normal((B, H, N, D)).astype(np.float32) for _ in range(3))
    w = make_weights(H, D, r, grid, cs["dtype"])
    wpath = write_weights(w, cs["kind"], f"w{ci}")
    files = {}
    for name, x in (("q", q), ("k", k), ("v", v)):
        files[name] = c.path(f"{name}{ci}.npy")
        np.save(files[name], x if cs["rank4"] else x[0, 0])
    if cs["pos"]:
        pos = oracle.raster_positions(*grid)[c.rng.permutation(N)]
        np.save(c.path(f"pos{ci}.npy"), pos.astype(np.int64))
    else:
        pos = oracle.raster_positions(*grid)
    args = ["run", "--algo", "ropeslr", "--weights", wpath, "--q", files["q"], "--k", files["k"],
            "--v", files["v"], "-o", c.path(f"o{ci}.npy"), "--lse", c.path(f"lse{ci}.npy"),
            "--sel-out", c.path(f"sel{ci}.npy"), "--grid", "x".join(map(str, grid)),
            "--block", b, cs["policy"][0], cs["policy"][1], "--feature", cs["feature"],
            "--backend", "ref"]
    if cs["pos"]:
        args += ["--pos", c.path(f"pos{ci}.npy")]
    if not cs["own"]:
        args.append("--no-own-block")
    if cs["scale"] is not None:
        args += ["--scale", cs["scale"]]
    pol = {"--topk": ("fixed_k", {"topk": cs["policy"][1]}),
           "--rho": ("keep_fraction", {"rho": cs["policy"][1]}),
           "--sqrt-c": ("sqrt", {"sqrt_c": cs["policy"][1]})}[cs["policy"][0]]
    K = oracle.ropeslr_topk(N, b, pol[0], **pol[1])
    want_o, want_lse, want_sel = oracle.ropeslr_forward(
        q, k, v, pos, oracle_weights(w), b, K, r, feature=cs["feature"],
        scale=cs["scale"] or 0.0, force_own_block=cs["own"])
    for be in c.backends():
        args[args.index("--backend") + 1] = be
        ok, _, err = c.run_ok(*args, what=f"{desc} on {be}")
        if not ok:
            continue
        c.check("random" not in err, f"{desc} on {be}: random-weights note with --weights: {err}")
        o = np.load(c.path(f"o{ci}.npy"))
        lse = np.load(c.path(f"lse{ci}.npy"))
        sel = np.load(c.path(f"sel{ci}.npy"))
        shape = (B, H, N, D) if cs["rank4"] else (N, D)
        if not c.check(o.shape == shape and o.dtype == np.float32,
                       f"{desc} on {be}: output {o.shape} {o.dtype}, expected {shape} f32"):
            continue
        o_ref = want_o if cs["rank4"] else want_o[0, 0]
        e = rel_err(o, o_ref)
        c.check(e <= TOL, f"{desc} on {be}: rel err of o {e:.3g} > {TOL} vs the NumPy oracle")
        lse_ref = want_lse if cs["rank4"] else want_lse[0, 0]
        e = rel_err(lse, lse_ref)
        c.check(e <= TOL, f"{desc} on {be}: rel err of the sparse LSE {e:.3g} > {TOL}")
        sel_ref = want_sel if cs["rank4"] else want_sel[0, 0]
        c.check(sel.shape == sel_ref.shape and sel.dtype == np.int32
                and np.array_equal(np.sort(sel, axis=-1), np.sort(sel_ref, axis=-1)),
                f"{desc} on {be}: selection {sel.shape} differs from the oracle's "
                f"{sel_ref.shape} (as sets per query block)")

# Bad weights: non-zero exit, a clear message, no output written.
H, D, r, grid = 2, 16, 5, (2, 4, 8)
N = 64
w = make_weights(H, D, r, grid)
q = c.rng.standard_normal((1, H, N, D)).astype(np.float32)
np.save(c.path("bq.npy"), q)
bad = {}
wrong = dict(w, W=np.zeros((H, D, D + 1), np.float32))
bad["wrong shape W (dir)"] = (write_weights(wrong, "dir", "bad_shape_dir"), ["W", "17"])
wrong = dict(w, Ey=np.zeros((H, 3, r), np.float32))
bad["wrong grid in Ey (npz)"] = (write_weights(wrong, "npz", "bad_grid"), ["grid"])
wrong = dict(w, B=np.zeros((H, D, r + 1), np.float32))
bad["rank of B != A (npz)"] = (write_weights(wrong, "npz_compressed", "bad_rank"), ["B"])
missing = {n: x for n, x in w.items() if n != "Ex"}
bad["missing Ex (npz)"] = (write_weights(missing, "npz", "missing"), ["Ex"])
bad["missing Ex (npz compressed)"] = (write_weights(missing, "npz_compressed", "missing_c"),
                                      ["Ex"])
bad["missing Ex.npy (dir)"] = (write_weights(missing, "dir", "missing_dir"), ["Ex.npy"])
with open(c.path("notzip.npz"), "w") as f:
    f.write("this is not a zip archive\n")
bad["not a zip"] = (c.path("notzip.npz"), ["zip"])
bad["no such path"] = (c.path("nowhere"), ["nowhere"])
for what, (path, words) in bad.items():
    out = c.path("bad_out.npy")
    if os.path.exists(out):
        os.remove(out)
    rc, _, err = c.run("run", "--algo", "ropeslr", "--weights", path, "--q", c.path("bq.npy"),
                       "--k", c.path("bq.npy"), "--v", c.path("bq.npy"), "-o", out, "--grid",
                       "2x4x8", "--block", 8, "--backend", "ref")
    msg = [l for l in err.splitlines() if l.startswith("ditattn: error:")]
    c.check(rc in (1, 2), f"bad weights, {what}: exit {rc}, expected 1 or 2")
    c.check(len(msg) == 1 and all(word in msg[0] for word in words),
            f"bad weights, {what}: expected one 'ditattn: error:' line naming {words}: {err!r}")
    c.check(not os.path.exists(out), f"bad weights, {what}: an output was written")


# bench: dense vs LLSA vs RoPeSLR with FLOPs per branch, random weights said so.
def slr_branches(N, D, b, K, r, heads):
    """Spec ropeslr.md §6 (+ 2ND² for the W projection), over all heads."""
    n = -(-N // b)
    return {"sparse": 4 * N * min(K * b, N) * D * heads,
            "low-rank": (4 * N * D * r + 4 * N * r * D + n * K * r * D) * heads,
            "projection": 2 * N * D * D * heads}


def bench_json(*extra):
    rc, out, err = c.run("bench", "--algo", "ropeslr", "--grid", "2x8x8", "--json", "--repeat", 1,
                         "--seed", c.seed % 1000, *extra)
    if not c.check(rc == 0, f"bench --algo ropeslr {extra}: exit {rc}: {err.strip()[-500:]}"):
        return None, err
    try:
        return json.loads(out), err
    except json.JSONDecodeError as e:
        c.check(False, f"bench --algo ropeslr --json {extra}: not JSON ({e}): {out[:200]!r}")
        return None, err


for be in c.backends():
    doc, err = bench_json("--backend", be)
    if not doc:
        continue
    res = {x["algo"]: x for x in doc["results"]}
    c.check(list(res) == ["dense", "llsa", "ropeslr"],
            f"bench --algo ropeslr on {be}: algos {list(res)}, expected dense, llsa, ropeslr")
    for name, x in res.items():
        br = x.get("flops_branches")
        c.check(x.get("ok") is True, f"bench {be} {name}: not ok: {x.get('error')}")
        c.check(isinstance(br, dict) and br and math.isclose(sum(br.values()), x["flops"],
                                                             rel_tol=1e-9),
                f"bench {be} {name}: flops_branches {br} do not sum to flops {x.get('flops')}")
    if "llsa" in res:
        c.check(list(res["llsa"]["flops_branches"] or {}) == ["attention", "pooling", "selection"],
                f"bench {be}: llsa branches {res['llsa']['flops_branches']}")
    if "dense" in res:
        c.check(res["dense"]["rel_err"] == 0 and res["dense"]["speedup"] == 1,
                f"bench {be}: dense is not the baseline: {res['dense']}")
    if "ropeslr" in res and res["ropeslr"].get("ok"):
        x = res["ropeslr"]
        K = oracle.ropeslr_topk(128, 64, "keep_fraction", rho=0.1)
        want = slr_branches(128, 64, 64, K, 64, 2)
        got = x["flops_branches"] or {}
        c.check(list(got) == list(want)
                and all(math.isclose(got[n], want[n], rel_tol=1e-9) for n in want),
                f"bench {be}: ropeslr flops_branches {got}, expected {want} (N=128 D=64 b=64 "
                f"K={K} r=64, 2 heads)")
        c.check(x["note"] is not None and "random weights" in x["note"] and "w=rand" in x["params"],
                f"bench {be}: ropeslr does not say its weights are random: note {x['note']!r} "
                f"params {x['params']!r}")
        c.check(x["rel_err"] is not None and 0 < x["rel_err"] < 10 and x["speedup"] is not None,
                f"bench {be}: ropeslr rel_err {x['rel_err']} speedup {x['speedup']}")
    c.check("random weights" in err, f"bench {be}: no random-weights note on stderr")

# --no-baseline: only ropeslr, nothing compared.
doc, _ = bench_json("--no-baseline", "--backend", "ref")
if doc:
    x = doc["results"]
    c.check([y["algo"] for y in x] == ["ropeslr"] and x[0]["speedup"] is None
            and x[0]["rel_err"] is None,
            f"bench --no-baseline: {[(y['algo'], y['speedup'], y['rel_err']) for y in x]}")

# Weights from a file: the note names it; --block 16 goes to llsa and ropeslr alike.
wpath = write_weights(make_weights(2, 64, 8, (2, 8, 8)), "npz", "bench_w")
doc, err = bench_json("--weights", wpath, "--block", 16, "--backend", "ref")
if doc:
    res = {x["algo"]: x for x in doc["results"]}
    x = res.get("ropeslr", {})
    c.check(x.get("ok") is True and wpath in (x.get("note") or "")
            and "w=file" in x.get("params", "") and "r=8" in x.get("params", ""),
            f"bench --weights: ropeslr {x}")
    c.check("random weights" not in err, f"bench --weights: random-weights note: {err[-300:]}")
    c.check(res.get("llsa", {}).get("params", "").startswith("b=16")
            and x.get("params", "").startswith("b=16"),
            f"bench --block 16: params {[y.get('params') for y in res.values()]}")

# Table output: branch rows under the algorithm rows, the random-weights note.
rc, out, err = c.run("bench", "--algo", "ropeslr", "--grid", "1x8x8", "--repeat", 1, "--backend",
                     "ref", "--heads", 1, "--dim", 16)
if c.check(rc == 0, f"bench table: exit {rc}: {err[-300:]}"):
    lines = out.splitlines()
    names = [l.split()[0] for l in lines if l.split()]
    for row in ("dense", "llsa", "ropeslr", "sparse", "low-rank", "projection", "attention",
                "pooling", "selection"):
        c.check(row in names, f"bench table: no '{row}' row: {out[:1200]!r}")
    c.check(any(l.startswith("note: ropeslr: random weights") for l in lines),
            f"bench table: no random-weights note: {out[-600:]!r}")

c.finish()
