#!/usr/bin/env python3
"""Golden data for GGML block (de)quantization: F32, F16, BF16, Q4_0, Q4_1, Q5_0,
Q5_1, Q8_0 (quantized and dequantized) and Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (dequantized).

Produces Tests/Golden/quant/:
  <TYPE>.input.f32    raw little-endian float32 input, ROWS x COLS, row-major
                      (types gguf-py can quantize)
  <TYPE>.quant.bin    raw bytes returned by gguf.quants.quantize(input, TYPE)
                      (ggml block layout, rows back to back); for the K-quants,
                      random but valid super-blocks (see make_kquant_blocks)
  <TYPE>.dequant.f32  raw little-endian float32 from gguf.quants.dequantize(quant, TYPE)
  manifest.json       rows, cols per type, file names, sha256 of each file, the gguf-py
                      version and a description of every 32-value block (and of
                      every K-quant super-block).

gguf-py has no quantizer for the K-quants, so their bytes are made directly:
random bytes (every bit pattern of codes, scales and mins is a valid block) with
the half-precision d (and dmin) fields overwritten by finite values, plus edge
cases (all-zero and all-one bits, d = -0, subnormal d, negative dmin, the
largest half).  That is enough to test dequantization bit for bit.

Independent reference: gguf-py (the `gguf` package from the llama.cpp project);
its quantize_blocks/dequantize_blocks for these types reproduce ggml's reference
C code (quantize_row_q4_0_ref etc.) bit for bit.  Nothing in this script comes
from the Swift code.

Input: ROWS=12 rows of COLS=96 values (3 blocks of 32 per row, 36 blocks).  The
first 12 blocks are random (normal, uniform, Student-t heavy tail); the other
24 blocks are hand-made edge cases (zeros incl. -0.0, constant blocks, largest
|value| negative / positive, ties of |max| with both signs, values exactly on
the rounding boundaries of Q8_0, Q4_0 and Q4_1, tiny values whose f16 scale is
subnormal or underflows to 0, one huge outlier, F16/BF16 round-to-even ties).
The same input is used for every type (one file per type so the test can treat
each type on its own).  Deterministic: numpy seed 20240601.

Run from the repo root:  python3 scripts/reference/quant_golden.py
"""
import hashlib
import json
import os
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

ROWS, COLS, BLOCK = 12, 96, 32
TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
KQUANT_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
# K-quant golden rows: 8 rows of 512 values (2 super-blocks of 256 per row).
K_ROWS, K_COLS, QK_K = 8, 512, 256
# Byte offsets of the half-precision d and dmin in each K-quant super-block
# (ggml-common.h: block_q2_K ... block_q6_K).
K_SCALE_FIELDS = {"Q2_K": (80, 82), "Q3_K": (108, None), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208, None)}
OUT_DIR = os.path.join("Tests", "Golden", "quant")
SEED = 20240601


def gguf_py_version() -> str:
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # pragma: no cover
        return "unknown"


def make_input():
    rng = np.random.default_rng(SEED)
    blocks = []   # list of (label, 32 float32 values)

    # 12 random blocks
    for i in range(4):
        blocks.append(("normal(0,1)", rng.standard_normal(BLOCK)))
    for i in range(4):
        blocks.append(("uniform(-2,3)", rng.uniform(-2.0, 3.0, BLOCK)))
    for i in range(4):
        blocks.append(("student_t(df=2)*0.5", rng.standard_t(2.0, BLOCK) * 0.5))

    # --- edge-case blocks (24) ---
    z = np.zeros(BLOCK)
    blocks.append(("all zeros", z.copy()))
    nz = np.where(np.arange(BLOCK) % 2 == 0, -0.0, 0.0)
    blocks.append(("zeros, even indices -0.0", nz))
    blocks.append(("constant 0.7", np.full(BLOCK, 0.7)))
    blocks.append(("constant -1.25", np.full(BLOCK, -1.25)))

    b = rng.uniform(-1.0, 1.0, BLOCK)
    b[7] = -3.0
    blocks.append(("largest |x| is negative (-3.0 at index 7)", b))
    b = rng.uniform(-1.0, 1.0, BLOCK)
    b[20] = 2.5
    blocks.append(("largest |x| is positive (2.5 at index 20)", b))
    b = rng.uniform(-1.0, 1.0, BLOCK)
    b[3] = -2.0
    b[11] = 2.0
    blocks.append(("|max| tie: -2.0 at index 3 before +2.0 at index 11 (first wins)", b))
    b = rng.uniform(-1.0, 1.0, BLOCK)
    b[3] = 2.0
    b[11] = -2.0
    blocks.append(("|max| tie: +2.0 at index 3 before -2.0 at index 11 (first wins)", b))

    # Q8_0: d = amax/127.  amax = 127*s with s = 2^-6 gives d = s, id = 1/s exactly,
    # so x = (k + 0.5) * s lands exactly on a .5 boundary (roundf: away from zero).
    s = 2.0 ** -6
    k = np.arange(-15, 16)  # 31 values
    b = np.concatenate([[127 * s], (k + 0.5) * s])
    blocks.append(("Q8_0 rounding boundaries: amax=127*2^-6, x=(k+0.5)*2^-6", b))
    b = np.concatenate([[-127 * s], -(k[::-1] + 0.5) * s * 3])
    blocks.append(("Q8_0 rounding boundaries, negative amax, x=(k+0.5)*3*2^-6", b))

    # Q4_0: max (signed, largest |x|) = -8*s gives d = s, id = 1/s exactly;
    # q = trunc(x/s + 8.5) so x = (k + 0.5) * s sits exactly on a boundary.
    s = 2.0 ** -3
    kk = np.arange(-8, 8)
    b = np.concatenate([[-8 * s], (kk + 0.5) * s, kk * s + 0.0])[:BLOCK]
    blocks.append(("Q4_0 rounding boundaries: max=-8*2^-3, x=(k+0.5)*2^-3", b))
    b = np.concatenate([[8 * s], (kk + 0.5) * s, -(kk + 0.5) * s])[:BLOCK]
    blocks.append(("Q4_0 boundaries with positive max (d negative)", b))

    # Q4_1: min = 0, max = 15*s gives d = s; q = trunc((x-min)/s + 0.5), so
    # x = (k + 0.5) * s is exactly on a boundary.
    s = 2.0 ** -4
    kq = np.arange(0, 15)
    b = np.concatenate([[0.0, 15 * s], (kq + 0.5) * s, kq * s])[:BLOCK]
    blocks.append(("Q4_1 rounding boundaries: min=0,max=15*2^-4, x=(k+0.5)*2^-4", b))
    b = np.concatenate([[-1.0, -1.0 + 15 * s], -1.0 + (kq + 0.5) * s, -1.0 + kq * s])[:BLOCK]
    blocks.append(("Q4_1 rounding boundaries, min=-1", b))

    blocks.append(("tiny: normal*1e-6 (f16 scale subnormal)", rng.standard_normal(BLOCK) * 1e-6))
    blocks.append(("tiny: normal*1e-9 (f16 scale underflows to 0)", rng.standard_normal(BLOCK) * 1e-9))
    blocks.append(("tiny: normal*1e-30 (1/d finite in f32, f16 scale is 0)", rng.standard_normal(BLOCK) * 1e-30))
    b = rng.standard_normal(BLOCK) * 0.1
    b[13] = 1000.0
    blocks.append(("one huge outlier: normal*0.1 with 1000.0 at index 13", b))
    b = rng.standard_normal(BLOCK) * 0.1
    b[29] = -4000.0
    blocks.append(("one huge negative outlier: -4000.0 at index 29", b))

    # F16 ties: halfway between neighbouring f16 values -> round to even
    e16 = 2.0 ** -10
    ties16 = []
    for base in [1.0, 2.0, 0.5, -1.0, 1024.0]:
        ties16 += [base * (1 + e16 / 2), base * (1 + 3 * e16 / 2), base * (1 + 5 * e16 / 2)]
    b = np.array((ties16 + list(rng.uniform(-1, 1, BLOCK)))[:BLOCK])
    blocks.append(("F16 round-to-nearest-even ties", b))
    # BF16 ties: halfway between neighbouring bf16 values
    e = 2.0 ** -7
    ties = []
    for base in [1.0, 3.0, -0.75, 1e-3, 256.0]:
        ties += [base * (1 + e / 2), base * (1 + 3 * e / 2), base * (1 + 5 * e / 2)]
    b = np.array((ties + list(rng.uniform(-1, 1, BLOCK)))[:BLOCK])
    blocks.append(("BF16 round-to-nearest-even ties", b))

    blocks.append(("alternating +-1", np.where(np.arange(BLOCK) % 2 == 0, 1.0, -1.0)))
    blocks.append(("normal*100 (large range)", rng.standard_normal(BLOCK) * 100.0))
    blocks.append(("all positive uniform(0.5,1.5)", rng.uniform(0.5, 1.5, BLOCK)))

    assert len(blocks) == ROWS * COLS // BLOCK, len(blocks)
    data = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in blocks]).astype(np.float32)
    data = data.reshape(ROWS, COLS)
    labels = [lab for lab, _ in blocks]
    return data, labels


def ggml_c_crosscheck(data, results):
    """Optional second opinion: ggml's own C code (libggml-base from llama-cpp-python):
    ggml_quantize_chunk (reference quantizers, no imatrix) and the type's to_float.
    Returns a dict for the manifest, or None when llama-cpp-python is absent."""
    import ctypes
    try:
        import llama_cpp
    except ImportError:
        return None
    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))

    class Traits(ctypes.Structure):
        _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                    ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                    ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                    ("from_float_ref", ctypes.c_void_p)]
    lib.ggml_get_type_traits.restype = ctypes.POINTER(Traits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    to_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    inp = np.ascontiguousarray(data, dtype="<f4")
    out = {"library": "libggml-base from llama-cpp-python " + llama_cpp.__version__, "types": {}}
    for name, (qbytes, deq) in results.items():
        qt = int(T[name])
        c_q = np.zeros(qbytes.size, dtype=np.uint8)
        n = lib.ggml_quantize_chunk(qt, inp.ctypes.data, c_q.ctypes.data, 0, ROWS, COLS, None)
        assert n == qbytes.size
        ref = qbytes.reshape(-1)
        diff = np.nonzero(c_q != ref)[0]
        type_size = gguf.GGML_QUANT_SIZES[T[name]][1]
        entry = {"quant_identical": diff.size == 0,
                 "differing_bytes": [{"offset": int(i), "block": int(i // type_size),
                                      "byte_in_block": int(i % type_size),
                                      "gguf_py": int(ref[i]), "ggml_c": int(c_q[i])} for i in diff]}
        tf = lib.ggml_get_type_traits(qt).contents.to_float
        if tf:
            c_deq = np.zeros(ROWS * COLS, dtype=np.float32)
            to_float_t(tf)(ref.ctypes.data, c_deq.ctypes.data, ROWS * COLS)
            entry["dequant_bitwise_identical"] = bool(np.array_equal(c_deq.view(np.uint32), deq.reshape(-1).view(np.uint32)))
            entry["dequant_value_identical"] = bool(np.array_equal(c_deq, deq.reshape(-1)))
        out["types"][name] = entry
        print(f"  ggml C cross-check {name:5s}: quant identical={entry['quant_identical']} "
              f"({diff.size} bytes differ), dequant identical={entry.get('dequant_bitwise_identical')}")
    return out


def make_kquant_blocks(name, rng):
    """K_ROWS * K_COLS / 256 super-blocks of `name`: random bytes with finite d/dmin,
    then edge cases. Returns (bytes (K_ROWS, row bytes), labels)."""
    qt = T[name]
    block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
    n = K_ROWS * K_COLS // block_size
    blocks = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    d_off, m_off = K_SCALE_FIELDS[name]

    def put(i, off, value):
        blocks[i, off:off + 2] = np.array([value], dtype="<f2").view(np.uint8)

    labels = []
    n_edge = 6
    for i in range(n - n_edge):
        put(i, d_off, rng.choice([-1, 1]) * 10 ** rng.uniform(-4, -1))
        if m_off is not None:
            put(i, m_off, 10 ** rng.uniform(-4, -1))
        labels.append("random bytes, d (and dmin) random finite")
    e = n - n_edge
    blocks[e] = 0
    put(e, d_off, 0.5)
    labels.append("all code, scale and min bits 0, d = 0.5")
    blocks[e + 1] = 0xFF
    put(e + 1, d_off, 0.01)
    if m_off is not None:
        put(e + 1, m_off, 0.02)
    labels.append("all code, scale and min bits 1, d = 0.01, dmin = 0.02")
    put(e + 2, d_off, -0.0)
    if m_off is not None:
        put(e + 2, m_off, -0.0)
    labels.append("random bytes, d = -0.0 (and dmin = -0.0)")
    put(e + 3, d_off, 3e-7)
    if m_off is not None:
        put(e + 3, m_off, 5e-8)
    labels.append("random bytes, subnormal d (and dmin)")
    put(e + 4, d_off, 65504.0)
    if m_off is not None:
        put(e + 4, m_off, -65504.0)
    labels.append("random bytes, d = 65504 (largest half), dmin = -65504")
    put(e + 5, d_off, -0.03)
    if m_off is not None:
        put(e + 5, m_off, -0.002)
    labels.append("random bytes, negative d and dmin")
    return blocks.reshape(K_ROWS, -1), labels


def ggml_c_kquant_crosscheck(results):
    """ggml's own to_float for the K-quant golden bytes (libggml-base from llama-cpp-python)."""
    import ctypes
    try:
        import llama_cpp
    except ImportError:
        return None
    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))

    class Traits(ctypes.Structure):
        _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                    ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                    ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                    ("from_float_ref", ctypes.c_void_p)]
    lib.ggml_get_type_traits.restype = ctypes.POINTER(Traits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    to_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    out = {"library": "libggml-base from llama-cpp-python " + llama_cpp.__version__, "types": {}}
    for name, (qbytes, deq) in results.items():
        ref = np.ascontiguousarray(qbytes.reshape(-1))
        c_deq = np.zeros(K_ROWS * K_COLS, dtype=np.float32)
        to_float_t(lib.ggml_get_type_traits(int(T[name])).contents.to_float)(ref.ctypes.data, c_deq.ctypes.data, K_ROWS * K_COLS)
        ours = deq.reshape(-1)
        bits = c_deq.view(np.uint32) != ours.view(np.uint32)
        close = np.abs(c_deq.astype(np.float64) - ours.astype(np.float64)) <= 1e-6 * np.maximum(1, np.abs(ours.astype(np.float64)))
        out["types"][name] = {"dequant_bitwise_identical": bool(not bits.any()),
                              "values_differing_in_bits": int(bits.sum()),
                              "all_within_1e-6_relative": bool(close.all())}
        print(f"  ggml C cross-check {name}: dequant bitwise identical={not bits.any()} "
              f"({int(bits.sum())} values differ in their bits, all within 1e-6 relative={bool(close.all())})")
    return out


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    data, labels = make_input()
    assert np.all(np.isfinite(data))
    manifest = {
        "generator": "scripts/reference/quant_golden.py",
        "reference": "gguf-py gguf.quants.quantize / gguf.quants.dequantize",
        "gguf_py_version": gguf_py_version(),
        "numpy_version": np.__version__,
        "seed": SEED,
        "rows": ROWS,
        "cols": COLS,
        "block_size": BLOCK,
        "layout": "row-major float32 little-endian; quant.bin is the ggml block "
                  "layout of each row, rows back to back",
        "blocks": [{"row": i // (COLS // BLOCK), "block_in_row": i % (COLS // BLOCK),
                    "label": lab} for i, lab in enumerate(labels)],
        "types": {},
    }
    results = {}
    for name in TYPES:
        qt = T[name]
        inp = np.ascontiguousarray(data, dtype="<f4")
        q = quants.quantize(inp, qt)
        qbytes = np.ascontiguousarray(q).view(np.uint8).reshape(ROWS, -1)
        if name in ("F32", "F16"):
            # quantize() returns float arrays for these; make them little-endian bytes
            qbytes = np.ascontiguousarray(q.astype("<f4" if name == "F32" else "<f2")).view(np.uint8).reshape(ROWS, -1)
        block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
        assert qbytes.shape[1] == COLS // block_size * type_size, (name, qbytes.shape)
        deq = quants.dequantize(qbytes, qt).reshape(ROWS, COLS).astype("<f4")
        results[name] = (qbytes, deq)

        files = {"input": f"{name}.input.f32", "quant": f"{name}.quant.bin",
                 "dequant": f"{name}.dequant.f32"}
        inp.tofile(os.path.join(OUT_DIR, files["input"]))
        qbytes.tofile(os.path.join(OUT_DIR, files["quant"]))
        deq.tofile(os.path.join(OUT_DIR, files["dequant"]))
        err = np.abs(deq.astype(np.float64) - inp.astype(np.float64))
        manifest["types"][name] = {
            "ggml_type_id": int(qt),
            "rows": ROWS, "cols": COLS,
            "block_size": block_size, "type_size": type_size,
            "bytes_per_row": int(qbytes.shape[1]),
            "files": files,
            "sha256": {k: sha256(os.path.join(OUT_DIR, v)) for k, v in files.items()},
            "max_abs_error": float(err.max()),
        }
        print(f"{name:5s} quant bytes/row={qbytes.shape[1]:4d} max|deq-in|={err.max():.6g}")
    rng = np.random.default_rng(SEED + 1)
    kresults = {}
    for name in KQUANT_TYPES:
        qt = T[name]
        qbytes, klabels = make_kquant_blocks(name, rng)
        block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
        deq = quants.dequantize(qbytes, qt).reshape(K_ROWS, K_COLS).astype("<f4")
        assert np.all(np.isfinite(deq)), name
        kresults[name] = (qbytes, deq)
        files = {"quant": f"{name}.quant.bin", "dequant": f"{name}.dequant.f32"}
        qbytes.tofile(os.path.join(OUT_DIR, files["quant"]))
        deq.tofile(os.path.join(OUT_DIR, files["dequant"]))
        manifest["types"][name] = {
            "ggml_type_id": int(qt),
            "rows": K_ROWS, "cols": K_COLS,
            "block_size": block_size, "type_size": type_size,
            "bytes_per_row": int(qbytes.shape[1]),
            "files": files,
            "sha256": {k: sha256(os.path.join(OUT_DIR, v)) for k, v in files.items()},
            "super_blocks": klabels,
        }
        print(f"{name:5s} random valid super-blocks, bytes/row={qbytes.shape[1]:4d}")
    cc = ggml_c_crosscheck(data, results)
    if cc is not None:
        cc["note"] = ("Expected differences are confined to block 13 (zeros, -0.0 at even indices): "
                      "the sign of a zero f16 field (the same for Q5_0 as for Q4_0, and for Q5_1 as for Q4_1). Q4_0: ggml C keeps its initial max=+0.0 (it "
                      "replaces max only when |v| > amax), so d = +0.0/-8 = -0.0 (0x8000); gguf-py "
                      "takes the first element, max=-0.0, so d = +0.0. Q4_1: ggml C's min is the first "
                      "element -0.0 (0x8000); numpy's min() returned +0.0 (signed-zero order is not "
                      "specified for numpy min). Dequantized values are zeros either way.")
        manifest["ggml_c_crosscheck"] = cc
    kcc = ggml_c_kquant_crosscheck(kresults)
    if kcc is not None:
        kcc["note"] = ("The K-quant golden bytes dequantized by ggml's own to_float, compared bit "
                       "for bit with gguf-py's dequantize (the golden values).")
        manifest["ggml_c_kquant_crosscheck"] = kcc
    with open(os.path.join(OUT_DIR, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT_DIR, p)) for p in os.listdir(OUT_DIR))
    print(f"wrote {OUT_DIR} ({total} bytes)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        OUT_DIR = sys.argv[1]
    main()
