#!/usr/bin/env python3
"""Dequantize the K-quant tensors of a GGUF file with gguf-py (the reference reader of
llama.cpp's project) and write each as raw little-endian float32, ne0 fastest, to
OUT_DIR/<tensor name>.f32; print the names written, one a line.

The QZO tests export K-quant models with tuned scales and compare these values with the
ones they trained, after the rounding the format imposes.

    python3 scripts/reference/kquant_dequant.py FILE.gguf OUT_DIR
"""
import os
import sys

import gguf
import numpy as np

KQUANTS = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


def main():
    path, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for t in gguf.GGUFReader(path).tensors:
        if t.tensor_type.name not in KQUANTS:
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype("<f4")
        values.tofile(os.path.join(out, t.name + ".f32"))
        print(t.name)


if __name__ == "__main__":
    main()
