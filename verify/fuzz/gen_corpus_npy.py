#!/usr/bin/env python3
"""Writes the .npy seed corpus (corpus_npy/): small valid files of every
accepted kind and invalid ones for each rejection rule of tools/npy.h.
Deterministic; rerun after changing it and commit the files."""
import io
import os
import struct
import sys

try:
    import numpy as np
except ImportError:
    sys.exit("FAIL: NumPy is missing for %s (apt-get install python3-numpy)" % sys.executable)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_npy")


def npy_bytes(arr, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, arr)
    else:
        np.lib.format.write_array(buf, arr, version=version)
    return buf.getvalue()


def raw(dict_text, data=b"", version=(1, 0), magic=b"\x93NUMPY"):
    """A file with a hand-written header dict (padded to 64 bytes like NumPy)."""
    text = dict_text.encode("latin1")
    hlen_size = 2 if version[0] == 1 else 4
    pad = (-(len(magic) + 2 + hlen_size + len(text) + 1)) % 64
    text += b" " * pad + b"\n"
    head = magic + bytes(version) + struct.pack("<H" if hlen_size == 2 else "<I", len(text))
    return head + text + data


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)
    f4 = rng.uniform(-1, 1, (2, 3)).astype("<f4")
    cases = {
        "valid_f4_2d": npy_bytes(f4),
        "valid_f4_1d": npy_bytes(np.arange(5, dtype="<f4")),
        "valid_f4_4d": npy_bytes(rng.uniform(-1, 1, (1, 2, 3, 2)).astype("<f4")),
        "valid_f8": npy_bytes(rng.uniform(-1, 1, (3,)).astype("<f8")),
        "valid_f8_overflow": npy_bytes(np.array([1e300, -1e300, 1.0], "<f8")),
        "valid_i4": npy_bytes(np.arange(6, dtype="<i4").reshape(2, 3)),
        "valid_i8": npy_bytes(np.arange(4, dtype="<i8")),
        "valid_i8_too_big": npy_bytes(np.array([2**40], "<i8")),
        "valid_v2": npy_bytes(f4, version=(2, 0)),
        "valid_v3": raw("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                        f4.tobytes()[:8], version=(3, 0)),
        "valid_dquote_keys_order": raw('{"shape": (2, 3), "fortran_order": False, '
                                       '"descr": "<f4"}', f4.tobytes()),
        "valid_shape_trailing_comma": raw("{'descr': '<f4', 'fortran_order': False, "
                                          "'shape': (6,), }", f4.tobytes()),
        "bad_magic": b"\x93NUMPZ" + npy_bytes(f4)[6:],
        "bad_version": raw("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                           b"\0" * 8, version=(9, 0)),
        "bad_truncated_data": npy_bytes(f4)[:-3],
        "bad_trailing_bytes": npy_bytes(f4) + b"\0\0\0\0",
        "bad_truncated_header": npy_bytes(f4)[:20],
        "bad_fortran": raw("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                           f4.tobytes()),
        "bad_big_endian": raw("{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }",
                              f4.tobytes()),
        "bad_u1": npy_bytes(np.arange(4, dtype="|u1")),
        "bad_complex": npy_bytes(np.zeros(2, "<c8")),
        "bad_scalar_0d": npy_bytes(np.float32(1.5)),
        "bad_empty": npy_bytes(np.zeros((0, 3), "<f4")),
        "bad_negative_dim": raw("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }"),
        "bad_huge_shape": raw("{'descr': '<f4', 'fortran_order': False, "
                              "'shape': (4611686018427387904, 4), }"),
        "bad_too_many_dims": raw("{'descr': '<f4', 'fortran_order': False, "
                                 "'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1), }", b"\0" * 4),
        "bad_missing_key": raw("{'descr': '<f4', 'shape': (1,), }", b"\0" * 4),
        "bad_extra_key": raw("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), "
                             "'x': 1, }", b"\0" * 4),
        "bad_unterminated": raw("{'descr': '<f4', 'fortran_order': False, 'shape': (1,",
                                b"\0" * 4),
        "bad_header_len": b"\x93NUMPY\x01\x00\xff\xff{'descr': '<f4'",
        "empty_file": b"",
    }
    for name, data in cases.items():
        with open(os.path.join(OUT, name + ".npy"), "wb") as f:
            f.write(data)
    print("wrote %d seed files to %s" % (len(cases), OUT))


if __name__ == "__main__":
    main()
