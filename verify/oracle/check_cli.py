#!/usr/bin/env python3
"""Runs the golden cases through the CLI contract: for every case whose
manifest entry has a "cli" command (dense, llsa), runs

    PROGRAM <cli with {in} = the case's folder, {out} = a temporary folder> [EXTRA...]

and compares the files it writes (out.npy, lse.npy, sel1.npy ...) with the
stored outputs (f32: relative norm error <= tol x --tol-scale; int32: exact).
PROGRAM is `ditattn` or any port that implements `ditattn run`'s options.

  check_cli.py GOLDEN_DIR PROGRAM [--tol-scale X] [-- EXTRA ARGS, e.g. --backend cpu]
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:  # never skip silently
    sys.exit("FAIL: NumPy is missing for %s (apt-get install python3-numpy)" % sys.executable)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import rel_err  # noqa: E402


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    tol_scale = 1.0
    if "--tol-scale" in argv:
        i = argv.index("--tol-scale")
        tol_scale = float(argv[i + 1])
        del argv[i:i + 2]
    if len(argv) != 2:
        sys.exit(__doc__)
    root, program = argv
    with open(os.path.join(root, "manifest.json")) as fh:
        manifest = json.load(fh)
    passed = failed = 0
    for case in manifest["cases"]:
        if not case.get("cli"):
            continue
        with tempfile.TemporaryDirectory(prefix="ditattn_cli_") as out:
            cmd = case["cli"].replace("{in}", os.path.join(root, case["dir"]))
            cmd = [program] + shlex.split(cmd.replace("{out}", out)) + extra
            p = subprocess.run(cmd, capture_output=True, text=True)
            bad = []
            if p.returncode != 0:
                bad.append("exit %d: %s" % (p.returncode, p.stderr.strip()))
            else:
                for name, fn in case["outputs"].items():
                    path = os.path.join(out, fn)
                    if not os.path.exists(path):
                        bad.append("%s not written" % fn)
                        continue
                    got, want = np.load(path), np.load(os.path.join(root, case["dir"], fn))
                    if want.dtype.kind == "i":
                        if not np.array_equal(got, want):
                            bad.append("%s differs" % name)
                    elif not rel_err(got, want) <= case["tol"] * tol_scale:
                        bad.append("%s rel err %.3g" % (name, rel_err(got, want)))
            if bad:
                failed += 1
                print("FAIL %s: %s\n  command: %s" % (case["name"], "; ".join(bad),
                                                     " ".join(cmd)))
            else:
                passed += 1
                print("ok   %s" % case["name"])
    print("check_cli.py: %d cases passed, %d failed (%s %s)" %
          (passed, failed, program, " ".join(extra)))
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
