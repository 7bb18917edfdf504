#!/usr/bin/env python3
"""Checks, with gguf-py only (independent of EdgeFinetune's reader), what `edge-finetune
export` wrote for new tokens:
  - the vocabulary is the base's, then (when the base's is shorter than token_embd)
    unused [PADn] entries, then the adapter's tokens, each USER_DEFINED (type 4) with
    score 0 when the base has scores;
  - token_embd (and output.weight, when the base has one) keep the base's rows byte for
    byte, and each new row is the adapter's trained row quantized into the tensor's format
    by the reference quantizer (gguf-py's for Q8_0/Q5_0/Q4_0/..., ggml's own for Q4_K);
    it prints how far the dequantized row is from the trained one. An adapter whose new
    tokens keep the init token's output row (edge_finetune.textual_inversion.output "init")
    must have that row of output.weight copied instead.

    python3 scripts/check_export_rows.py EXPORTED.gguf BASE.gguf ADAPTER.gguf

Exit status 0 when every check passes.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    return f.parts[-1][0].item() if f.types[0] != gguf.GGUFValueType.STRING else bytes(f.parts[-1]).decode()


def tensors(reader):
    return {t.name: t for t in reader.tensors}


def reference_quantize(rows, qtype):
    """Rows (n, dim) float32 -> bytes (n, row_bytes), by the reference quantizer of qtype."""
    if qtype == Q.Q4_K:
        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, "x.f32"), os.path.join(d, "y.bin")
            rows.astype("<f4").tofile(src)
            r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "reference", "ggml_quantize_rows.py"),
                                "q4_K", src, dst])
            if r.returncode != 0:
                sys.exit("Q4_K rows need ggml's quantizer from llama-cpp-python, which is not installed")
            return np.fromfile(dst, dtype=np.uint8).reshape(rows.shape[0], -1)
    return np.ascontiguousarray(gguf.quants.quantize(rows.astype(np.float32), qtype)).view(np.uint8).reshape(rows.shape[0], -1)


def main():
    exported, base, adapter = (gguf.GGUFReader(p) for p in sys.argv[1:4])
    ok = True
    new_tokens = field(adapter, "edge_finetune.textual_inversion.tokens")
    trained = np.asarray(tensors(adapter)["textual_inversion.embedding"].data, dtype=np.float32).reshape(len(new_tokens), -1)
    k, dim = trained.shape

    # Vocabulary entries.
    rows = int(tensors(base)["token_embd.weight"].shape[1])
    base_tokens = field(base, "tokenizer.ggml.tokens")
    padding = [f"[PAD{i}]" for i in range(len(base_tokens), rows)]
    expected = base_tokens + padding + new_tokens
    got = field(exported, "tokenizer.ggml.tokens")
    if got != expected:
        print(f"tokens: {len(got)} entries, expected {len(expected)}; last {got[-k:]!r}, expected {new_tokens!r}")
        ok = False
    types = field(exported, "tokenizer.ggml.token_type")
    base_types = field(base, "tokenizer.ggml.token_type")
    if base_types is not None and types != base_types + [5] * len(padding) + [4] * k:
        print(f"token types: last {types[-k:]}, expected {[4] * k} (USER_DEFINED) after the base's")
        ok = False
    scores = field(exported, "tokenizer.ggml.scores")
    base_scores = field(base, "tokenizer.ggml.scores")
    if base_scores is not None and (scores[:len(base_scores)] != base_scores or scores[len(base_scores):] != [0.0] * (len(padding) + k)):
        print("scores: the base's then 0 for every added entry expected")
        ok = False

    # Rows.
    names = ["token_embd.weight"] + (["output.weight"] if "output.weight" in tensors(base) else [])
    for name in names:
        b, e = tensors(base)[name], tensors(exported)[name]
        if e.tensor_type != b.tensor_type or list(e.shape) != [dim, int(b.shape[1]) + k]:
            print(f"{name}: {e.tensor_type.name} {list(e.shape)}, expected {b.tensor_type.name} {[dim, int(b.shape[1]) + k]}")
            ok = False
            continue
        eb = np.asarray(e.data).reshape(int(e.shape[1]), -1)
        bb = np.asarray(b.data).reshape(int(b.shape[1]), -1)
        if not np.array_equal(eb[: bb.shape[0]], bb):
            print(f"{name}: the base's rows changed")
            ok = False
        ours = eb[bb.shape[0]:]
        if name == "output.weight" and field(adapter, "edge_finetune.textual_inversion.output") == "init":
            init = field(adapter, "edge_finetune.textual_inversion.output_init_token")
            same = all(np.array_equal(ours[i], bb[init]) for i in range(k))
            print(f"{name} ({e.tensor_type.name}): new rows {'are copies of' if same else 'DIFFER from'} the init token's row {init}")
            ok &= same
            continue
        ref = reference_quantize(trained, e.tensor_type)
        same = np.array_equal(ours.view(np.uint8).reshape(k, -1), ref)
        back = gguf.quants.dequantize(ours, e.tensor_type).reshape(k, dim)
        err = np.abs(back.astype(np.float64) - trained).max()
        rel = np.linalg.norm(back - trained) / np.linalg.norm(trained)
        print(f"{name} ({e.tensor_type.name}): new rows {'identical to' if same else 'DIFFER from'} the reference quantizer's; "
              f"dequantized vs trained: max |diff| {err:.3g}, relative {rel:.3%}")
        ok &= same
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
