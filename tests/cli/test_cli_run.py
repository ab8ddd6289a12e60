#!/usr/bin/env python3
"""`ditattn run`: spec llsa.md §7's vector through the CLI, dense vs NumPy,
LLSA agreement between backends, [N,D] and [B,H,N,D] inputs."""
# cli_util first: it fails with a clear message when NumPy is missing.
from cli_util import Checker, dense_attention, rel_err
import numpy as np  # noqa: E402


c = Checker("test_cli_run")
backends = c.backends()
print("backends:", backends)

# --- spec §7: L = 1, N = 8, D = 1, b = 2, K_1 = 1, scale = 1 (exact expected values)
q = np.array([1, 0, 0, 1, -1, 0, 2, 1], np.float32).reshape(8, 1)
k = np.array([0.5, 1, -1, 0, 2, 2, 0, -0.5], np.float32).reshape(8, 1)
v = np.array([1, 2, 3, 4, 5, 6, 7, 8], np.float32).reshape(8, 1)
o_spec = np.array([5.05562, 4.7, 4.7, 5.05562, 4.24681, 4.3, 5.34781, 5.05562])
lse_spec = np.array([3.59898, 2.30259, 2.30259, 3.59898, 2.37947, 2.30259, 5.43505, 3.59898])
for name, x in (("q", q), ("k", k), ("v", v)):
    np.save(c.path(f"s7_{name}.npy"), x)
for be in backends:
    out, lse, sel = c.path(f"s7_o_{be}.npy"), c.path(f"s7_lse_{be}.npy"), c.path(f"s7_sel_{be}_")
    ok, _, _ = c.run_ok("run", "--algo", "llsa", "--q", c.path("s7_q.npy"), "--k",
                        c.path("s7_k.npy"), "--v", c.path("s7_v.npy"), "--block", 2, "--levels",
                        1, "--topk", 1, "--scale", 1, "--backend", be, "-o", out, "--lse", lse,
                        "--sel-prefix", sel, what=f"spec §7 llsa on {be}")
    if not ok:
        continue
    o = np.load(out)
    c.check(o.shape == (8, 1) and o.dtype == np.float32, f"§7 {be}: out shape {o.shape} {o.dtype}")
    c.check(np.allclose(o[:, 0], o_spec, rtol=0, atol=1e-5),
            f"§7 {be}: o = {o[:, 0].tolist()} expected {o_spec.tolist()}")
    l = np.load(lse)
    c.check(l.shape == (8,), f"§7 {be}: lse shape {l.shape}")
    c.check(np.allclose(l, lse_spec, rtol=0, atol=1e-5),
            f"§7 {be}: lse = {l.tolist()} expected {lse_spec.tolist()}")
    s1 = np.load(sel + "1.npy")
    c.check(s1.dtype == np.int32 and s1.shape == (4, 1) and s1[:, 0].tolist() == [2, 2, 1, 2],
            f"§7 {be}: selections {s1.tolist()} ({s1.dtype}) expected [[2],[2],[1],[2]]")

# --- dense vs NumPy on random inputs, [B,H,N,D] and [N,D], default and given scale
cases = [((2, 3, 37, 16), None), ((1, 1, 50, 8), 0.7), ((45, 12), None), ((30, 5), 2.0)]
for shape, scale in cases:
    tag = "x".join(map(str, shape)) + f"_s{scale}"
    qkv = [c.rng.uniform(-1, 1, size=shape).astype(np.float32) for _ in range(3)]
    for name, x in zip("qkv", qkv):
        np.save(c.path(f"d_{tag}_{name}.npy"), x)
    o_ref, lse_ref = dense_attention(*qkv, scale if scale else 1 / np.sqrt(shape[-1]))
    for be in backends:
        out, lse = c.path(f"d_{tag}_o_{be}.npy"), c.path(f"d_{tag}_lse_{be}.npy")
        args = ["run", "--algo", "dense", "--q", c.path(f"d_{tag}_q.npy"), "--k",
                c.path(f"d_{tag}_k.npy"), "--v", c.path(f"d_{tag}_v.npy"), "--backend", be,
                "-o", out, "--lse", lse]
        if scale:
            args += ["--scale", scale]
        ok, _, _ = c.run_ok(*args, what=f"dense {tag} on {be}")
        if not ok:
            continue
        o, l = np.load(out), np.load(lse)
        c.check(o.shape == shape, f"dense {tag} {be}: out shape {o.shape}")
        c.check(l.shape == shape[:-1], f"dense {tag} {be}: lse shape {l.shape}")
        # Our writer's header is byte-identical to NumPy's (same padding to 64 bytes).
        np.save(c.path("np_same.npy"), o)
        with open(out, "rb") as f1, open(c.path("np_same.npy"), "rb") as f2:
            h1, h2 = f1.read(), f2.read()
        c.check(h1 == h2, f"dense {tag} {be}: written file differs from np.save's: "
                          f"{h1[:80]!r} vs {h2[:80]!r}")
        e_o, e_l = rel_err(o, o_ref), rel_err(l, lse_ref)
        c.check(e_o <= 1e-5, f"dense {tag} {be}: rel err of o {e_o:.3g} > 1e-5")
        c.check(e_l <= 1e-5, f"dense {tag} {be}: rel err of lse {e_l:.3g} > 1e-5")

# --- dense cross-attention: Nq != Nk
qx = c.rng.uniform(-1, 1, size=(1, 2, 11, 8)).astype(np.float32)
kx = c.rng.uniform(-1, 1, size=(1, 2, 23, 8)).astype(np.float32)
vx = c.rng.uniform(-1, 1, size=(1, 2, 23, 8)).astype(np.float32)
for name, x in (("q", qx), ("k", kx), ("v", vx)):
    np.save(c.path(f"x_{name}.npy"), x)
o_ref, lse_ref = dense_attention(qx, kx, vx, 1 / np.sqrt(8))
for be in backends:
    ok, _, _ = c.run_ok("run", "--algo", "dense", "--q", c.path("x_q.npy"), "--k",
                        c.path("x_k.npy"), "--v", c.path("x_v.npy"), "--backend", be, "-o",
                        c.path("x_o.npy"), "--lse", c.path("x_lse.npy"),
                        what=f"dense Nq=11 Nk=23 on {be}")
    if ok:
        o, l = np.load(c.path("x_o.npy")), np.load(c.path("x_lse.npy"))
        c.check(o.shape == qx.shape and l.shape == (1, 2, 11), f"cross {be}: {o.shape} {l.shape}")
        c.check(rel_err(o, o_ref) <= 1e-5 and rel_err(l, lse_ref) <= 1e-5,
                f"cross {be}: rel err o {rel_err(o, o_ref):.3g} lse {rel_err(l, lse_ref):.3g}")

# --- '<f8' inputs are converted to float32
q64 = c.rng.uniform(-1, 1, size=(20, 4))
np.save(c.path("f8_q.npy"), q64)
ok, _, _ = c.run_ok("run", "--algo", "dense", "--q", c.path("f8_q.npy"), "--k",
                    c.path("f8_q.npy"), "--v", c.path("f8_q.npy"), "--backend", "ref", "-o",
                    c.path("f8_o.npy"), what="dense with <f8 inputs")
if ok:
    o_ref, _ = dense_attention(q64.astype(np.float32), q64.astype(np.float32),
                               q64.astype(np.float32), 0.5)
    e = rel_err(np.load(c.path("f8_o.npy")), o_ref)
    c.check(e <= 1e-5, f"dense <f8 20x4: rel err {e:.3g}")

# --- LLSA on random [B,H,N,D]: every backend agrees with ref (same selections, o, lse)
B, H, N, D = 1, 2, 96, 8
qkv = [c.rng.uniform(-1, 1, size=(B, H, N, D)).astype(np.float32) for _ in range(3)]
for name, x in zip("qkv", qkv):
    np.save(c.path(f"l_{name}.npy"), x)
results = {}
for be in backends:
    out, lse, sel = c.path(f"l_o_{be}.npy"), c.path(f"l_lse_{be}.npy"), c.path(f"l_sel_{be}_")
    ok, _, _ = c.run_ok("run", "--algo", "llsa", "--q", c.path("l_q.npy"), "--k",
                        c.path("l_k.npy"), "--v", c.path("l_v.npy"), "--block", 4, "--topk",
                        "3,2", "--backend", be, "-o", out, "--lse", lse, "--sel-prefix", sel,
                        what=f"llsa {B}x{H}x{N}x{D} b=4 K=3,2 on {be}")
    if not ok:
        continue
    s1, s2 = np.load(sel + "1.npy"), np.load(sel + "2.npy")
    c.check(s1.shape == (B, H, 24, 3) and s2.shape == (B, H, 6, 2),
            f"llsa {be}: selection shapes {s1.shape} {s2.shape}, expected (1,2,24,3) (1,2,6,2)")
    o = np.load(out)
    c.check(o.shape == (B, H, N, D) and np.all(np.isfinite(o)), f"llsa {be}: out {o.shape}")
    results[be] = (o, np.load(lse), s1, s2)
if "ref" in results:
    for be, (o, l, s1, s2) in results.items():
        ro, rl, r1, r2 = results["ref"]
        c.check(rel_err(o, ro) <= 1e-5, f"llsa {be} vs ref: o rel err {rel_err(o, ro):.3g}")
        c.check(rel_err(l, rl) <= 1e-5, f"llsa {be} vs ref: lse rel err {rel_err(l, rl):.3g}")
        c.check(np.array_equal(s1, r1) and np.array_equal(s2, r2), f"llsa {be} vs ref: selections")

c.finish()
