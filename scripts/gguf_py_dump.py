#!/usr/bin/env python3
"""Print what gguf-py (the Python reference reader of llama.cpp's project) reads from a
GGUF file, as JSON: version, metadata (scalars and arrays), and every tensor's name,
type, shape (ne0 first) and SHA-256 of its bytes.

The test suite runs this on files written by EdgeFinetune's GGUF writer and compares
the result with what it wrote, so the writer is checked by an independent reader.

    python3 scripts/gguf_py_dump.py FILE.gguf
"""
import hashlib
import json
import math
import sys

import gguf
import numpy as np


def field_value(field):
    types = field.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        return field.contents()
    value = field.contents()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def clean(value):
    """JSON cannot carry inf/nan; spell them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def main(path):
    reader = gguf.GGUFReader(path)
    out = {"metadata": {}, "tensors": []}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            if name == "GGUF.version":
                out["version"] = int(field.parts[field.data[0]][0])
            continue
        out["metadata"][name] = {
            "type": field.types[0].name.lower(),
            "value": clean(field_value(field)),
        }
    for t in reader.tensors:
        data = np.ascontiguousarray(t.data).tobytes()
        out["tensors"].append({
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv[1])
