#!/usr/bin/env python3
"""Digests of every tensor of the three real Q4_K_M files, dequantized by gguf-py.

Produces Tests/Golden/quant/real-files.json: for each file (pinned by the SHA-256
of the whole file, as scripts/setup checks it) and each of its tensors, the ggml
type, the shape (ne0 first) and the SHA-256 of the tensor dequantized to float32
by gguf-py's `gguf.quants.dequantize`, as little-endian bytes in row-major order
(row 0's ne0 values, then row 1's, ...). F32 tensors are hashed as stored.

Independent reference: gguf-py (the llama.cpp project's Python package). The
Swift test (Tests/QuantTests/RealFileDequantTests.swift) dequantizes every tensor
with our code and compares the same digest; since the files are pinned, the
digests are stable.

Run from the repo root after `scripts/setup --all`:
    python3 scripts/reference/real_file_digests.py
Takes a few minutes (gguf-py dequantizes in numpy, about 9 GB of float32 in all).
"""
import hashlib
import json
import os
import sys
import time

import numpy as np

import gguf
from gguf import GGUFReader
from gguf import quants

FILES = [
    ("Qwen2.5-Coder-0.5B-Instruct.Q4_K_M", "models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
     "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    ("Qwen2.5-Coder-1.5B-Instruct.Q4_K_M", "models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
     "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    ("gemma-3-270m.Q4_K_M", "models/gemma-3-270m.Q4_K_M.gguf",
     "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
]
OUT = os.path.join("Tests", "Golden", "quant", "real-files.json")
# Rows dequantized per numpy call: bounds the memory of the largest tensors
# (token_embd of Qwen2.5-1.5B is 151936 x 1536).
ROWS_PER_CHUNK = 8192


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 24)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def tensor_digest(t):
    qtype = t.tensor_type
    data = t.data
    h = hashlib.sha256()
    ne0 = int(t.shape[0])
    if qtype == gguf.GGMLQuantizationType.F32:
        h.update(np.ascontiguousarray(data, dtype="<f4").tobytes())
        return h.hexdigest()
    rows = data.reshape((-1, data.shape[-1]))
    for start in range(0, rows.shape[0], ROWS_PER_CHUNK):
        deq = quants.dequantize(rows[start:start + ROWS_PER_CHUNK], qtype)
        deq = np.ascontiguousarray(deq, dtype="<f4")
        assert deq.shape[-1] == ne0, (t.name, deq.shape, ne0)
        h.update(deq.tobytes())
    return h.hexdigest()


def main():
    out = {
        "generator": "scripts/reference/real_file_digests.py",
        "reference": "gguf-py gguf.quants.dequantize; SHA-256 of float32 little-endian, row-major",
        "gguf_py_version": __import__("importlib.metadata").metadata.version("gguf"),
        "numpy_version": np.__version__,
        "files": [],
    }
    for name, path, sha in FILES:
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run scripts/setup --all first")
        got = file_sha256(path)
        if got != sha:
            sys.exit(f"{path}: SHA-256 {got}, expected {sha}")
        t0 = time.time()
        reader = GGUFReader(path)
        tensors = []
        for t in reader.tensors:
            tensors.append({"name": t.name, "type": t.tensor_type.name,
                            "shape": [int(d) for d in t.shape], "sha256": tensor_digest(t)})
        counts = {}
        for t in tensors:
            counts[t["type"]] = counts.get(t["type"], 0) + 1
        out["files"].append({"name": name, "path": path, "sha256": sha, "types": counts, "tensors": tensors})
        print(f"{name}: {len(tensors)} tensors {counts} in {time.time() - t0:.0f} s")
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
