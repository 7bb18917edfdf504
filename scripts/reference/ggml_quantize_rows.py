#!/usr/bin/env python3
"""Quantizes float32 rows with ggml's own reference quantizer (quantize_row_<type>_ref from
the libggml-base that llama-cpp-python ships), for bit-exact tests of our quantizers.

    python3 scripts/reference/ggml_quantize_rows.py TYPE IN.f32 OUT.bin

IN.f32 holds little-endian float32 values (a whole number of TYPE's blocks); OUT.bin gets
the blocks as ggml writes them. TYPE: q4_K, q6_K, q5_0, q8_0, q4_0, q4_1, q5_1.
Exit status 3 when llama-cpp-python is not installed (the test is then skipped).
"""
import ctypes
import os
import sys

import numpy as np

BLOCK = {"q4_K": (256, 144), "q6_K": (256, 210), "q5_0": (32, 22), "q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q5_1": (32, 24)}


def library():
    try:
        import llama_cpp  # noqa: F401  (only to find its libraries)
    except ImportError:
        sys.exit(3)
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    return ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"))


def main():
    kind, src, dst = sys.argv[1:4]
    size, nbytes = BLOCK[kind]
    x = np.fromfile(src, dtype="<f4")
    if x.size % size:
        sys.exit(f"{src}: {x.size} values is not a whole number of {kind} blocks of {size}")
    lib = library()
    fn = getattr(lib, f"quantize_row_{kind}_ref")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros(x.size // size * nbytes, dtype=np.uint8)
    fn(x.ctypes.data, out.ctypes.data, x.size)
    out.tofile(dst)


if __name__ == "__main__":
    main()
