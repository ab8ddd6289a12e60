#!/usr/bin/env python3
"""`ditattn` error paths: every bad input or option gives a non-zero exit and
a message on stderr that says what is wrong (and nothing is written)."""
import os

# cli_util first: it fails with a clear message when NumPy is missing.
from cli_util import Checker
import numpy as np  # noqa: E402


c = Checker("test_cli_errors")
shape = (16, 4)
for name in "qkv":
    np.save(c.path(f"{name}.npy"), c.rng.uniform(-1, 1, size=shape).astype(np.float32))
Q, K, V, OUT = c.path("q.npy"), c.path("k.npy"), c.path("v.npy"), c.path("out.npy")
good = ["--q", Q, "--k", K, "--v", V, "-o", OUT, "--backend", "ref"]


def expect_fail(args, needles, what, code=None):
    if os.path.exists(OUT):
        os.remove(OUT)
    rc, out, err = c.run(*args)
    c.check(rc != 0, f"{what}: exit code {rc}, expected non-zero")
    if code is not None:
        c.check(rc == code, f"{what}: exit code {rc}, expected {code}")
    for n in needles:
        c.check(n in err, f"{what}: stderr lacks '{n}': {err.strip()!r}")
    c.check("ditattn: error:" in err, f"{what}: stderr has no 'ditattn: error:' line: {err!r}")
    c.check(not os.path.exists(OUT), f"{what}: an output file was written anyway")


# Malformed .npy files (the reader's message is passed on, with the file name).
with open(c.path("bad_magic.npy"), "wb") as f:
    f.write(b"not a numpy file at all")
expect_fail(["run", "--algo", "dense", "--q", c.path("bad_magic.npy"), "--k", K, "--v", V, "-o",
             OUT], ["bad magic", "bad_magic.npy", "--q"], "bad magic")
with open(c.path("short.npy"), "wb") as f:
    raw = open(Q, "rb").read()
    f.write(raw[:-5])
expect_fail(["run", "--algo", "dense", "--q", Q, "--k", c.path("short.npy"), "--v", V, "-o", OUT],
            ["data too short", "short.npy"], "truncated data")
np.save(c.path("fortran.npy"), np.asfortranarray(c.rng.uniform(size=shape).astype(np.float32)))
expect_fail(["run", "--algo", "dense", "--q", Q, "--k", K, "--v", c.path("fortran.npy"), "-o",
             OUT], ["fortran_order"], "fortran order")
np.save(c.path("ints.npy"), np.arange(64, dtype=np.int32).reshape(shape))
expect_fail(["run", "--algo", "dense", "--q", c.path("ints.npy"), "--k", K, "--v", V, "-o", OUT],
            ["'<i4'"], "integer input")
np.save(c.path("big_endian.npy"), c.rng.uniform(size=shape).astype(">f4"))
expect_fail(["run", "--algo", "dense", "--q", c.path("big_endian.npy"), "--k", K, "--v", V, "-o",
             OUT], ["big-endian"], "big-endian input")
expect_fail(["run", "--algo", "dense", "--q", c.path("missing.npy"), "--k", K, "--v", V, "-o",
             OUT], ["cannot open", "missing.npy"], "missing file")
np.save(c.path("rank3.npy"), c.rng.uniform(size=(2, 16, 4)).astype(np.float32))
expect_fail(["run", "--algo", "dense", "--q", c.path("rank3.npy"), "--k", K, "--v", V, "-o", OUT],
            ["3 dimensions"], "3-d input")
np.save(c.path("k_other.npy"), c.rng.uniform(size=(16, 8)).astype(np.float32))
expect_fail(["run", "--algo", "dense", "--q", Q, "--k", c.path("k_other.npy"), "--v", V, "-o",
             OUT], ["differ"], "k and v shapes differ")

# Options.
expect_fail(["run", "--algo", "dense", "--k", K, "--v", V, "-o", OUT], ["required"],
            "missing --q", code=2)
expect_fail(["run", "--algo", "dense", "--q", Q, "--k", K, "--v", V], ["-o"], "missing -o", code=2)
expect_fail(["run"] + good, ["--algo"], "missing --algo", code=2)
expect_fail(["run", "--algo", "flash"] + good, ["unknown --algo 'flash'"], "unknown algo", code=2)
expect_fail(["run", "--algo", "llsa", "--topk", "8,x"] + good, ["--topk '8,x'"], "bad --topk",
            code=2)
expect_fail(["run", "--algo", "llsa", "--topk", "0"] + good, ["--topk '0'"], "--topk 0", code=2)
expect_fail(["run", "--algo", "llsa", "--levels", "2", "--topk", "1,1,1"] + good,
            ["--topk has 3 value(s) but --levels is 2"], "--topk/--levels mismatch", code=2)
expect_fail(["run", "--algo", "llsa", "--block", "1"] + good, ["--block '1'"], "--block 1", code=2)
expect_fail(["run", "--algo", "llsa", "--block"] + good[:0], ["--block needs a value"],
            "--block without value", code=2)
expect_fail(["run", "--algo", "dense", "--block", "4"] + good, ["unknown option '--block'"],
            "llsa option given to dense", code=2)
expect_fail(["run", "--algo", "dense", "--scale", "abc"] + good, ["--scale 'abc'"], "bad --scale",
            code=2)
expect_fail(["run", "--algo", "dense"] + good + ["--backend", "tpu"], ["--backend 'tpu'"],
            "bad --backend", code=2)
expect_fail(["run", "--algo", "dense", "--grid", "2x2x5"] + good, ["N = 16"], "grid != N", code=2)
np.save(c.path("pos_bad.npy"), np.array([[0, 0, x + 1] for x in range(16)], np.int64))
expect_fail(["run", "--algo", "dense", "--grid", "1x1x16", "--pos", c.path("pos_bad.npy")] + good,
            ["token 15", "outside the grid"], "--pos outside the grid", code=2)
expect_fail(["run", "--algo", "dense", "--pos", c.path("pos_bad.npy")] + good, ["--pos needs --grid"],
            "--pos without --grid", code=2)
expect_fail(["run", "--algo", "dense", "--grid", "1x1x16", "--pos", Q] + good, ["'<f4'", "integer"],
            "--pos with floats", code=1)
expect_fail(["frobnicate"], ["unknown command"], "unknown command", code=2)
expect_fail(["bench", "--grid", "8x"], ["--grid '8x'"], "bench bad grid", code=2)
expect_fail(["bench", "--algo", "dense,nope"], ["unknown algorithm 'nope'"], "bench bad algo",
            code=2)
expect_fail(["bench", "--heads", "0"], ["--heads '0'"], "bench --heads 0", code=2)
expect_fail(["bench", "--wat"], ["unknown option '--wat'"], "bench unknown option", code=2)

# A backend that is not compiled in names itself.
rc, info, _ = c.run("info")
for line in info.splitlines():
    p = line.split()
    if len(p) >= 4 and p[0] == "backend" and p[3] == "no":
        expect_fail(["run", "--algo", "dense"] + good + ["--backend", p[1]],
                    [f"backend {p[1]}", "not compiled"], f"uncompiled backend {p[1]}", code=1)

# Errors found by the library come with its ditattn_last_error text.
np.save(c.path("q_long.npy"), c.rng.uniform(size=(20, 4)).astype(np.float32))
expect_fail(["run", "--algo", "llsa", "--q", c.path("q_long.npy"), "--k", K, "--v", V, "-o", OUT,
             "--backend", "ref"], ["llsa forward on backend ref failed:", "shape"],
            "llsa with Nq != Nk (library error)", code=1)

# Help works everywhere and exits 0.
for args in (["--help"], ["run", "--help"], ["bench", "--help"], ["info", "--help"]):
    rc, out, err = c.run(*args)
    c.check(rc == 0 and "usage: ditattn" in out, f"{' '.join(args)}: exit {rc}, out {out[:80]!r}")
rc, out, err = c.run("run", "--help")
c.check("--topk" in out and "--sel-prefix" in out, "run --help lists llsa's options")

c.finish()
