"""Helpers for the `ditattn` CLI tests: run the binary, write/read .npy, report.

Every test script takes the path of the built `ditattn` binary as argv[1].
NumPy is required: without it the tests FAIL (exit 1) with a clear message,
they never pass silently."""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np  # noqa: F401
except ImportError:
    sys.stderr.write("FAIL: these CLI tests need NumPy (run them with /usr/bin/python3 and "
                     "apt-get install python3-numpy)\n")
    sys.exit(1)


class Checker:
    """Collects failures; each one is a one-line reproducible description."""

    def __init__(self, name):
        self.name = name
        self.failures = 0
        self.checks = 0
        if len(sys.argv) < 2:
            sys.stderr.write(f"usage: {sys.argv[0]} PATH/TO/ditattn\n")
            sys.exit(2)
        self.binary = sys.argv[1]
        self.tmp = tempfile.TemporaryDirectory(prefix="ditattn_cli_")
        seed_env = os.environ.get("DITATTN_TEST_SEED")
        self.seed = int(seed_env) if seed_env else int.from_bytes(os.urandom(4), "little")
        print(f"[seed] DITATTN_TEST_SEED={self.seed}")
        self.rng = np.random.default_rng(self.seed)

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def run(self, *args, timeout=120):
        cmd = [self.binary] + [str(a) for a in args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        # Under ASan/UBSan a leak or UB on an error path must fail too.
        self.check("Sanitizer" not in p.stderr and "runtime error:" not in p.stderr,
                   f"{' '.join(cmd)}: sanitizer report: {p.stderr[-2000:]}")
        return p.returncode, p.stdout, p.stderr

    def check(self, cond, what):
        self.checks += 1
        if not cond:
            self.failures += 1
            print(f"FAIL: {what} (seed {self.seed})")
        return cond

    def run_ok(self, *args, what=""):
        rc, out, err = self.run(*args)
        self.check(rc == 0, f"{what or ' '.join(map(str, args))}: exit {rc}, stderr: {err.strip()}")
        return rc == 0, out, err

    def backends(self):
        """ref always; plus every other backend `ditattn info` says is available."""
        rc, out, _ = self.run("info")
        found = ["ref"]
        for line in out.splitlines():
            parts = line.split()
            if (len(parts) >= 6 and parts[0] == "backend" and parts[1] != "ref"
                    and "available: yes" in line):
                found.append(parts[1])
        return found

    def finish(self):
        print(f"{self.name}: {self.checks - self.failures}/{self.checks} checks passed")
        self.tmp.cleanup()
        sys.exit(1 if self.failures else 0)


def rel_err(a, ref):
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape or not np.all(np.isfinite(a)):
        return float("inf")
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(a - ref) / (den if den > 0 else 1.0))


def dense_attention(q, k, v, scale):
    """Softmax attention over the last two axes, in float64; returns (o, lse)."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    z = scale * np.einsum("...nd,...md->...nm", q, k)
    m = z.max(axis=-1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=-1, keepdims=True)
    o = np.einsum("...nm,...md->...nd", e / s, v)
    lse = (m + np.log(s))[..., 0]
    return o, lse
