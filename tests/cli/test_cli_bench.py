#!/usr/bin/env python3
"""`ditattn bench` (JSON and table output) and `ditattn info`."""
import json
import math

from cli_util import Checker

c = Checker("test_cli_bench")
backends = c.backends()

def llsa_flops(N, D, b, topk):
    """Spec llsa.md §6 per head (K clamped to the block counts)."""
    L = len(topk)
    n = [N]
    for _ in range(L):
        n.append(-(-n[-1] // b))
    kk = [min(topk[l], n[l + 1]) for l in range(L)]
    flops = 3 * N * D * b / (b - 1) + 2 * D * n[L] ** 2
    flops += sum(2 * D * n[l] * kk[l] * b for l in range(1, L))
    return flops + 4 * N * D * (sum(k * b for k in kk) + n[L])


# The spec's own example: N = 65536, D = 64, b = 16, L = 2, K = 8 gives about 8.6e9.
c.check(abs(llsa_flops(65536, 64, 16, [8, 8]) / 8.6e9 - 1) < 0.02,
        f"llsa_flops(65536) = {llsa_flops(65536, 64, 16, [8, 8]):.4g}, spec says 8.6e9")

TOP_KEYS = {"tool", "version", "backend", "threads", "grid", "batch", "heads", "tokens", "dim",
            "repeat", "seed", "inputs", "results"}
RESULT_KEYS = {"algo", "params", "ok", "ms", "ms_min", "flops", "flops_branches", "note", "gflops",
               "speedup", "rel_err", "error"}

for be in backends:
    args = ["bench", "--grid", "2x8x8", "--json", "--backend", be, "--repeat", 2,
            "--seed", c.seed % 1000]
    ok, out, err = c.run_ok(*args, what=f"bench --json on {be}")
    if not ok:
        continue
    try:
        doc = json.loads(out)
    except json.JSONDecodeError as e:
        c.check(False, f"bench --json on {be}: stdout is not JSON ({e}): {out[:200]!r}")
        continue
    c.check(TOP_KEYS <= doc.keys(), f"{be}: missing keys {TOP_KEYS - doc.keys()}")
    c.check(doc.get("backend") == be, f"{be}: backend field {doc.get('backend')}")
    c.check(doc.get("grid") == [2, 8, 8] and doc.get("tokens") == 128,
            f"{be}: grid {doc.get('grid')} tokens {doc.get('tokens')}")
    c.check(doc.get("heads") == 2 and doc.get("dim") == 64 and doc.get("batch") == 1,
            f"{be}: default heads/dim/batch {doc.get('heads')}/{doc.get('dim')}/{doc.get('batch')}")
    c.check("Morton" in doc.get("inputs", "") and "RoPE" in doc.get("inputs", ""),
            f"{be}: inputs description {doc.get('inputs')!r}")
    res = {r.get("algo"): r for r in doc.get("results", [])}
    c.check(list(res) == ["dense", "llsa", "ropeslr"], f"{be}: default algos {list(res)}")
    for name, r in res.items():
        c.check(RESULT_KEYS <= r.keys(), f"{be} {name}: missing keys {RESULT_KEYS - r.keys()}")
        c.check(r.get("ok") is True, f"{be} {name}: not ok: {r.get('error')}")
        if r.get("ok"):
            c.check(r["ms"] > 0 and r["ms_min"] <= r["ms"], f"{be} {name}: ms {r['ms']}")
            c.check(r["flops"] > 0 and math.isclose(r["gflops"], r["flops"] / (r["ms"] * 1e6),
                                                    rel_tol=1e-3),
                    f"{be} {name}: gflops {r['gflops']} vs flops {r['flops']} / ms {r['ms']}")
    if "dense" in res and res["dense"].get("ok"):
        d = res["dense"]
        c.check(d["rel_err"] == 0 and d["speedup"] == 1, f"{be}: dense rel_err/speedup {d}")
        # Spec llsa.md §6: dense = 4·N²·D per head.
        c.check(math.isclose(d["flops"], 4 * 128 * 128 * 64 * 2, rel_tol=1e-9),
                f"{be}: dense flops {d['flops']}")
    if "llsa" in res and res["llsa"].get("ok"):
        l = res["llsa"]
        c.check(l["params"] == "b=16 L=2 K=8,8", f"{be}: llsa params {l['params']!r}")
        c.check(l["rel_err"] is not None and 0 <= l["rel_err"] < 0.5,
                f"{be}: llsa rel_err {l['rel_err']} (expected finite, < 0.5 on local inputs)")
        want = 2 * llsa_flops(128, 64, 16, [8, 8])
        c.check(math.isclose(l["flops"], want, rel_tol=1e-9),
                f"{be}: llsa flops {l['flops']} expected {want} (spec §6, 2 heads)")
        br = l.get("flops_branches") or {}
        c.check(list(br) == ["attention", "pooling", "selection"]
                and math.isclose(sum(br.values()), l["flops"], rel_tol=1e-9),
                f"{be}: llsa flops_branches {br} (sum vs flops {l['flops']})")
    c.check("bench:" in err, f"{be}: no progress lines on stderr")

# Same seed, same inputs: the LLSA error is reproducible.
a = c.run("bench", "--grid", "2x8x8", "--json", "--backend", "ref", "--repeat", 1, "--seed", 7)
b = c.run("bench", "--grid", "2x8x8", "--json", "--backend", "ref", "--repeat", 1, "--seed", 7)
if c.check(a[0] == 0 and b[0] == 0, "bench --seed 7 twice"):
    ea = [r["rel_err"] for r in json.loads(a[1])["results"]]
    eb = [r["rel_err"] for r in json.loads(b[1])["results"]]
    c.check(ea == eb, f"same seed, different errors: {ea} vs {eb}")

# Table output, options passed to LLSA, one algorithm listed: dense joins as the baseline.
ok, out, _ = c.run_ok("bench", "--grid", "1x8x16", "--heads", 1, "--dim", 16, "--repeat", 1,
                      "--backend", "ref", "--algo", "llsa", "--block", 4, "--topk", "2,2")
if ok:
    c.check("b=4 L=2 K=2,2" in out and "inputs:" in out and "ms" in out,
            f"bench table: {out[:400]!r}")
    rows = [l.split()[0] for l in out.splitlines() if l.split()]
    c.check("dense" in rows and "ropeslr" not in rows and "selection" in rows,
            f"bench --algo llsa table: rows {rows}")
# --no-baseline: only what is listed, nothing compared.
ok, out, _ = c.run_ok("bench", "--grid", "1x8x8", "--heads", 1, "--dim", 16, "--repeat", 1,
                      "--backend", "ref", "--algo", "llsa", "--no-baseline", "--json")
if ok:
    rs = json.loads(out)["results"]
    c.check([r["algo"] for r in rs] == ["llsa"] and rs[0]["speedup"] is None
            and rs[0]["rel_err"] is None, f"bench --no-baseline: {rs}")
# An option only some selected algorithms accept: a note, not an error; none: an error.
ok, _, err = c.run_ok("bench", "--grid", "1x8x8", "--heads", 1, "--dim", 16, "--repeat", 1,
                      "--backend", "ref", "--topk", "2,2", "--json")
if ok:
    c.check("ropeslr keeps its default" in err, f"bench --topk 2,2: no note: {err[-400:]!r}")
rc, _, err = c.run("bench", "--grid", "1x8x8", "--repeat", 1, "--backend", "ref", "--topk", "x")
c.check(rc == 2 and "--topk" in err, f"bench --topk x: exit {rc}, stderr {err[-300:]!r}")
ok, out, _ = c.run_ok("bench", "--grid", "1x8x8", "--repeat", 1, "--backend", "ref")
if ok:
    c.check("dense" in out and "llsa" in out and "ropeslr" in out and "speedup" in out,
            f"bench table: {out[:400]!r}")

# --save-inputs: the reported LLSA error is reproduced by `run` on the saved inputs.
pre = c.path("in_")
ok, out, _ = c.run_ok("bench", "--grid", "2x8x8", "--heads", 1, "--dim", 16, "--repeat", 1,
                      "--backend", "ref", "--json", "--save-inputs", pre, "--block", 4)
if ok:
    import numpy as np
    from cli_util import rel_err
    reported = {r["algo"]: r for r in json.loads(out)["results"]}
    q = np.load(pre + "q.npy")
    c.check(q.shape == (1, 1, 128, 16) and q.dtype == np.float32, f"saved q {q.shape} {q.dtype}")
    files = ["--q", pre + "q.npy", "--k", pre + "k.npy", "--v", pre + "v.npy", "--backend", "ref"]
    ok_d, _, _ = c.run_ok("run", "--algo", "dense", *files, "-o", c.path("bd.npy"))
    ok_l, _, _ = c.run_ok("run", "--algo", "llsa", "--block", 4, *files, "-o", c.path("bl.npy"))
    if ok_d and ok_l and reported["llsa"]["ok"]:
        e = rel_err(np.load(c.path("bl.npy")), np.load(c.path("bd.npy")))
        c.check(math.isclose(e, reported["llsa"]["rel_err"], rel_tol=1e-4),
                f"bench rel_err {reported['llsa']['rel_err']} but run gives {e}")

# info
ok, out, _ = c.run_ok("info")
if ok:
    c.check(out.startswith("ditattn "), f"info first line: {out.splitlines()[:1]}")
    c.check("backend ref" in out and "dense_forward" in out and "f32" in out,
            f"info output: {out[:400]!r}")
    for name in ("ref", "cpu", "cuda", "hip"):
        c.check(f"backend {name}" in out, f"info lists no backend {name}")

c.finish()
