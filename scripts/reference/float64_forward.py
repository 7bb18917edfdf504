#!/usr/bin/env python3
"""Float64 forward pass (llama, qwen2, gemma3) in numpy, as an independent check of llama.cpp.

Produces: a "float64" section inside each Tests/Golden/llamacpp-<modelstem>.json
(written by llamacpp_golden.py, which must run first).  For every text of that
file's "logits" list it takes the SAME token ids, runs the forward pass below
in float64 and stores the per-position next-token NLL (nats) and the top-20
(ids, logits) per position, rounded to 7 significant digits.  It also prints
and stores the comparison with the llama.cpp numbers of the same file.

Independent reference: weights are read with gguf.GGUFReader and dequantized
with gguf.quants.dequantize (gguf-py, the llama.cpp project's Python package);
the forward pass is written here from the llama.cpp conventions below and
shares no code with the Swift runtime or with llama.cpp.

llama.cpp conventions used (architecture "llama"):
  * GGUF dims: ne[0] is the contiguous (fastest) dimension.  A weight stored
    with GGUF shape [n_in, n_out] is, in numpy row-major order, an array W of
    shape (n_out, n_in) and y = x @ W.T.  token_embd.weight [n_embd, n_vocab]
    is E (n_vocab, n_embd): row t is the embedding of token t.
  * RMSNorm: y = x / sqrt(mean(x^2) + eps) * w   (eps from
    llama.attention.layer_norm_rms_epsilon; the weight multiplies after).
  * RoPE, LLAMA_ROPE_TYPE_NORM (what llama.cpp uses for LLM_ARCH_LLAMA): within
    each head the ADJACENT pairs (x[2i], x[2i+1]), i < n_rot/2, are rotated by
    angle pos * base^(-2i/n_rot):
        x'[2i]   = x[2i] cos - x[2i+1] sin
        x'[2i+1] = x[2i] sin + x[2i+1] cos
    (the HF->GGUF converter permuted the rows of Q and K so that this equals
    HF's rotate_half on halves).  Dimensions >= n_rot are left unrotated.
    pos is the 0-based position in the sequence; base = llama.rope.freq_base.
  * Attention: Q (n_head heads), K/V (n_head_kv heads); query head h uses
    kv head h // (n_head / n_head_kv) (consecutive groups, ggml's broadcast
    rule in mul_mat).  scores = q.k / sqrt(head_dim), causal mask (key pos <=
    query pos), softmax over keys, weighted sum of V; heads are concatenated in
    head order and multiplied by attn_output.
  * Residuals: x = x + attn(norm(x)); x = x + ffn(norm(x)).
  * FFN (SwiGLU): down( silu(gate(h)) * up(h) ), silu(z) = z / (1 + e^-z).
  * Output: logits = output_norm(x) @ O.T, O = output.weight if present,
    otherwise the tied token_embd.weight.

Architecture "qwen2" (llama.cpp src/models/qwen2.cpp, HF modeling_qwen2.py): as llama,
except
  * q, k, v projections add their biases blk.N.attn_{q,k,v}.bias before RoPE;
  * RoPE NEOX (LLAMA_ROPE_TYPE_NEOX, what llama_model_rope_type gives qwen2): within
    each head the pairs (x[i], x[i + n_rot/2]), i < n_rot/2, are rotated by the same
    angle pos * base^(-2i/n_rot) (HF's rotate_half, no permutation by the converter).

Architecture "gemma3" (llama.cpp src/models/gemma3.cpp, HF modeling_gemma3.py):
  * x = token_embd[ids] * sqrt(n_embd) (llama.cpp scales by sqrtf(n_embd) in float;
    HF rounds the factor to the activation dtype, which is not what llama.cpp does);
  * head_dim = gemma3.attention.key_length (256 on the 270M; not n_embd / n_head);
  * per block: h = rmsnorm(x) * attn_norm; q = Wq h, k = Wk h, v = Wv h;
    q and k get a per-head RMSNorm (over head_dim, weights attn_q_norm / attn_k_norm)
    BEFORE RoPE; RoPE NEOX; scores = q.k / sqrt(key_length); sliding window on
    blocks with index % 6 < 5: a key is masked when q_pos - k_pos >= sliding_window;
    those blocks rotate with base 10000, the others (5, 11, 17, ...) with
    gemma3.rope.freq_base;
    x = x + rmsnorm(Wo attn) * post_attention_norm;
    h = rmsnorm(x) * ffn_norm; x = x + rmsnorm(down(gelu_tanh(gate h) * up h)) * post_ffw_norm,
    gelu_tanh(z) = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)));
  * norm weights are used as stored: llama.cpp's converter (Gemma3Model in
    convert_hf_to_gguf.py) already added 1 to every *norm.weight;
  * output tied to token_embd.weight (no logit soft-capping in Gemma 3).

Memory: weights are dequantized (gguf-py, float32, the values the quantized file
encodes) one block at a time and used in float64; every text goes through that block
before the next is dequantized (forward_many), so a 1.5B file needs about one block
plus the output matrix in memory.  Float64 matmuls on the 1.5B model take minutes on two
cores: its texts are kept short (llamacpp_golden.py's per-model text lists).

Usage (from the repo root; default model path is
models/SmolLM2-135M-Instruct.Q4_1.gguf):
    python3 scripts/reference/float64_forward.py [MODEL.gguf ...]
    python3 scripts/reference/float64_forward.py --all
(--all: the reference model plus models/tiny-*.gguf).  The golden file for a
model is Tests/Golden/llamacpp-<stem of the model file name>.json.
--emulate-check additionally reruns the forward pass with ggml's CPU rounding
of activations emulated (Q8_0/Q8_1 blocks before quantized matmuls, F16/BF16
before F16/BF16 matmuls, F16 K/V cache, F16 q and softmax output in attention)
and prints its agreement with llama.cpp.  That run is a diagnostic only (it
shows the float64-vs-llama.cpp gap is llama.cpp's activation quantization, not
a convention error); nothing from it is written to the golden files.
"""
import argparse
import datetime
import glob
import json
import math
import os
import sys

import numpy as np

import gguf
from gguf import GGUFReader, GGMLQuantizationType as T

DEFAULT_MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
GOLDEN_DIR = os.path.join("Tests", "Golden")
TOPK = 20


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def tensor_f64(t) -> np.ndarray:
    """Dequantize one GGUFReader tensor to a float64 numpy array whose shape is
    the GGUF ne list reversed (numpy row-major)."""
    shape = tuple(int(d) for d in reversed(t.shape))
    if t.tensor_type == T.F32:
        a = np.asarray(t.data, dtype=np.float32)
    elif t.tensor_type == T.F16:
        a = np.asarray(t.data).view(np.float16).astype(np.float32)
    else:
        a = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    return np.asarray(a, dtype=np.float64).reshape(shape)


class Model:
    def __init__(self, path, emulate_llamacpp=False):
        self.emulate = emulate_llamacpp
        self.reader = r = GGUFReader(path)
        arch = _field(r, "general.architecture")
        if arch not in ("llama", "qwen2", "gemma3"):
            raise SystemExit(f"{path}: architecture {arch!r}, expected llama, qwen2 or gemma3")
        if emulate_llamacpp and arch != "llama":
            raise SystemExit("--emulate-check is written for llama files only")
        self.arch = arch
        p = arch + "."
        self.n_layer = int(_field(r, p + "block_count"))
        self.n_embd = int(_field(r, p + "embedding_length"))
        self.n_ff = int(_field(r, p + "feed_forward_length"))
        self.n_head = int(_field(r, p + "attention.head_count"))
        self.n_head_kv = int(_field(r, p + "attention.head_count_kv", self.n_head))
        self.eps = float(_field(r, p + "attention.layer_norm_rms_epsilon"))
        self.base = float(_field(r, p + "rope.freq_base", 10000.0))
        self.head_dim = int(_field(r, p + "attention.key_length", self.n_embd // self.n_head))
        self.n_rot = int(_field(r, p + "rope.dimension_count", self.head_dim))
        self.neox = arch in ("qwen2", "gemma3")
        self.window = [None] * self.n_layer
        self.layer_base = [self.base] * self.n_layer
        if arch == "gemma3":
            sw = int(_field(r, p + "attention.sliding_window"))
            for i in range(self.n_layer):
                if i % 6 < 5:
                    self.window[i] = sw
                    self.layer_base[i] = 10000.0
        self.tensors = {t.name: t for t in r.tensors}
        self.types = {t.name: t.tensor_type.name for t in r.tensors}
        self.w = {}   # dequantized weights kept (small models; the emulation diagnostic)
        # per-block minimums of Q4_1 weights (bytes 2..3 of each 20-byte block), for emulation only
        self.q4_1_min = {t.name: np.asarray(t.data).reshape(-1, 20)[:, 2:4].copy().view(np.float16)
                         .astype(np.float64).reshape(int(t.shape[1]), -1)
                         for t in r.tensors if t.tensor_type == T.Q4_1} if emulate_llamacpp else {}
        self.n_vocab = int(self.tensors["token_embd.weight"].shape[1])
        self.output_name = "output.weight" if "output.weight" in self.tensors else "token_embd.weight"
        self.keep = sum(int(t.n_elements) for t in r.tensors) < 50_000_000

    def get(self, name):
        """Weight `name` dequantized (float64 view of gguf-py's float32 values)."""
        if name in self.w:
            return self.w[name]
        a = tensor_f64(self.tensors[name])
        if self.keep:
            self.w[name] = a
        return a

    def mm(self, x, name, w=None):
        """x @ W.T for weight `name`.  With emulate_llamacpp, x is first rounded
        the way ggml's CPU backend converts activations for that weight type
        (its vec_dot_type): Q8_0 blocks for Q4_0/Q8_0, Q8_1 for Q4_1, F16 for
        F16, BF16 for BF16.  Diagnostic only; the golden data never uses it."""
        w = self.get(name) if w is None else w
        if not self.emulate:
            return x @ w.T
        wtype = self.types[name]
        xh = round_like_ggml_activation(x, wtype)
        y = xh @ w.T
        if wtype == "Q4_1":
            # vec_dot_q4_1_q8_1 adds m_w * s_a per block with s_a = fp16(d * sum(q))
            # (d in f32), not m_w * fp16(d) * sum(q) as the dequantized product would.
            xb = np.asarray(x, dtype=np.float32).reshape(*x.shape[:-1], -1, 32)
            amax = np.abs(xb).max(axis=-1)
            d = amax / np.float32(127)
            with np.errstate(divide="ignore"):
                inv = np.where(amax == 0, np.float32(0), np.float32(127) / amax)
            qsum = np.round(xb * inv[..., None]).sum(axis=-1)
            s_a = (d * qsum).astype(np.float16).astype(np.float64)
            s_deq = d.astype(np.float16).astype(np.float64) * qsum
            y = y + (s_a - s_deq) @ self.q4_1_min[name].T
        return y

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos, base):
        """x: (T, heads, head_dim).  NORM mode: adjacent pairs (2i, 2i+1); NEOX: (i, i + n_rot/2)."""
        half = self.n_rot // 2
        inv = base ** (-2.0 * np.arange(half, dtype=np.float64) / self.n_rot)
        ang = pos[:, None].astype(np.float64) * inv[None, :]        # (T, half)
        c = np.cos(ang)[:, None, :]
        s = np.sin(ang)[:, None, :]
        out = x.copy()
        if self.neox:
            i0, i1 = slice(0, half), slice(half, self.n_rot)
        else:
            i0, i1 = slice(0, self.n_rot, 2), slice(1, self.n_rot, 2)
        x0, x1 = x[..., i0], x[..., i1]
        out[..., i0] = x0 * c - x1 * s
        out[..., i1] = x0 * s + x1 * c
        return out

    def attention(self, x, i, n):
        """Attention sub-block of block i on hidden states x (n, n_embd), before Wo's residual."""
        pre = f"blk.{i}."
        hd, nh, nkv = self.head_dim, self.n_head, self.n_head_kv
        group = nh // nkv
        pos = np.arange(n)
        h = self.rmsnorm(x, self.get(pre + "attn_norm.weight"))
        q = self.mm(h, pre + "attn_q.weight")
        k = self.mm(h, pre + "attn_k.weight")
        v = self.mm(h, pre + "attn_v.weight")
        if self.arch == "qwen2":
            q = q + self.get(pre + "attn_q.bias")
            k = k + self.get(pre + "attn_k.bias")
            v = v + self.get(pre + "attn_v.bias")
        q, k, v = q.reshape(n, nh, hd), k.reshape(n, nkv, hd), v.reshape(n, nkv, hd)
        if self.arch == "gemma3":
            q = self.rmsnorm(q, self.get(pre + "attn_q_norm.weight"))
            k = self.rmsnorm(k, self.get(pre + "attn_k_norm.weight"))
        q = self.rope(q, pos, self.layer_base[i])
        k = self.rope(k, pos, self.layer_base[i])
        if self.emulate:   # F16 KV cache; q and softmax output meet F16 K/V as F16
            q, k, v = f16(q), f16(k), f16(v)
        # mask[qp, kp]: -inf for kp > qp, and for qp - kp >= window on windowed blocks
        d = pos[:, None] - pos[None, :]
        masked = d < 0
        if self.window[i] is not None:
            masked |= d >= self.window[i]
        mask = np.where(masked, -np.inf, 0.0)
        heads = []
        for hh in range(nh):
            kv = hh // group
            sc = (q[:, hh, :] @ k[:, kv, :].T) / math.sqrt(hd) + mask
            sc = sc - sc.max(axis=1, keepdims=True)
            p = np.exp(sc)
            p /= p.sum(axis=1, keepdims=True)
            if self.emulate:
                p = f16(p)
            heads.append(p @ v[:, kv, :])
        attn = np.concatenate(heads, axis=1)                    # (n, nh*hd)
        out = self.mm(attn, pre + "attn_output.weight")
        if self.arch == "gemma3":
            out = self.rmsnorm(out, self.get(pre + "post_attention_norm.weight"))
        return out

    def ffn(self, x, i, w):
        pre = f"blk.{i}."
        h = self.rmsnorm(x, self.get(pre + "ffn_norm.weight"))
        g = self.mm(h, pre + "ffn_gate.weight", w[0])
        u = self.mm(h, pre + "ffn_up.weight", w[1])
        if self.arch == "gemma3":
            act = 0.5 * g * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * g ** 3)))
        else:
            act = g / (1.0 + np.exp(-g))
        out = self.mm(act * u, pre + "ffn_down.weight", w[2])
        if self.arch == "gemma3":
            out = self.rmsnorm(out, self.get(pre + "post_ffw_norm.weight"))
        return out

    def hidden_many(self, texts):
        """Final normed hidden states (n, n_embd) of each id list, block by block."""
        emb = self.get("token_embd.weight")
        xs = [emb[np.asarray(ids, dtype=np.int64)].copy() for ids in texts]
        del emb
        if self.arch == "gemma3":
            xs = [x * math.sqrt(self.n_embd) for x in xs]
        for i in range(self.n_layer):
            pre = f"blk.{i}."
            ffn_w = [self.get(pre + m + ".weight") for m in ("ffn_gate", "ffn_up", "ffn_down")]
            for t, x in enumerate(xs):
                x = x + self.attention(x, i, len(x))
                xs[t] = x + self.ffn(x, i, ffn_w)
        return [self.rmsnorm(x, self.get("output_norm.weight")) for x in xs]

    def forward_many(self, texts):
        """Logits (n, n_vocab) of each id list (the output matrix dequantized once)."""
        hs = self.hidden_many(texts)
        out = self.get(self.output_name)
        return [self.mm(h, self.output_name, out) for h in hs]

    def forward(self, ids):
        return self.forward_many([ids])[0]


def f16(x):
    return np.asarray(x, dtype=np.float64).astype(np.float16).astype(np.float64)


def round_like_ggml_activation(x, wtype):
    """Emulate ggml's conversion of f32 activations to the weight's vec_dot_type."""
    x = np.asarray(x, dtype=np.float32)
    if wtype in ("Q4_0", "Q8_0", "Q4_1"):       # Q8_0 / Q8_1: d = amax/127 (fp16), q = round(x/d)
        b = x.reshape(-1, 32)
        amax = np.abs(b).max(axis=1, keepdims=True)
        d = amax / np.float32(127)
        with np.errstate(divide="ignore"):      # x86 quantize_row_q8_0/q8_1: id = 127/amax
            inv = np.where(amax == 0, np.float32(0), np.float32(127) / amax)
        q = np.round(b * inv)          # AVX path: _mm256_round_ps nearest-even
        return (q * d.astype(np.float16).astype(np.float64)).reshape(x.shape)
    if wtype == "F16":
        return x.astype(np.float16).astype(np.float64)
    if wtype == "BF16":
        u = x.view(np.uint32).astype(np.uint64)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
        return u.astype(np.uint32).view(np.float32).astype(np.float64)
    return x.astype(np.float64)


def log_softmax(logits):
    m = logits.max(axis=-1, keepdims=True)
    z = logits - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def next_token_nll(logits, ids):
    """NLL (nats) of ids[1:] given positions 0..n-2."""
    lp = log_softmax(np.asarray(logits, dtype=np.float64))
    ids = np.asarray(ids)
    return -lp[np.arange(len(ids) - 1), ids[1:]]


def topk(logits, k=TOPK):
    """Top-k per row: ids sorted by logit descending (ties: lower id first)."""
    idx = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return idx, np.take_along_axis(logits, idx, axis=-1)


def sig(x, digits):
    x = float(x)
    if x == 0.0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits - 1}e}")


def compare(ll, f64):
    """Agreement statistics between a llama.cpp logits entry and float64 results."""
    nll_b = np.array(ll["nll_batched"])
    nll_f = np.array(f64["nll"])
    out = {"mean_nll_llamacpp_batched": float(nll_b.mean()),
           "mean_nll_float64": float(nll_f.mean()),
           "mean_nll_diff_batched_minus_f64": float(nll_b.mean() - nll_f.mean()),
           "max_abs_nll_diff_batched": float(np.abs(nll_b - nll_f).max())}
    if ll.get("nll_one_token") is not None:
        nll_o = np.array(ll["nll_one_token"])
        out["mean_nll_diff_one_token_minus_f64"] = float(nll_o.mean() - nll_f.mean())
        out["max_abs_nll_diff_one_token"] = float(np.abs(nll_o - nll_f).max())
    top1_ll = np.array([t[0] for t in ll["top_ids"]])
    top1_f = np.array([t[0] for t in f64["top_ids"]])
    out["top1_agreement"] = float(np.mean(top1_ll == top1_f))
    # logit differences among llama.cpp's top-k ids (float64 logits of the same ids)
    full = f64["_full_logits"]
    diffs = []
    for p, (ids, vals) in enumerate(zip(ll["top_ids"], ll["top_logits"])):
        diffs.append(np.abs(full[p, np.array(ids)] - np.array(vals)).max())
    out["max_abs_logit_diff_topk"] = float(max(diffs))
    return out


def emulation_check(model_path, gold):
    """Diagnostic (printed only): rerun with llama.cpp's activation rounding emulated."""
    model = Model(model_path, emulate_llamacpp=True)
    for entry in gold["logits"]:
        logits = model.forward(entry["ids"])
        nll = next_token_nll(logits, entry["ids"])
        top1 = np.mean(np.argmax(logits, axis=1) == np.array([t[0] for t in entry["top_ids"]]))
        d = max(np.abs(logits[p, np.array(ids)] - np.array(v)).max()
                for p, (ids, v) in enumerate(zip(entry["top_ids"], entry["top_logits"])))
        print(f"  emulated {entry['name']:<14s} batched-emul={np.mean(entry['nll_batched']) - nll.mean():+.5f} "
              f"top1={top1:.3f} max|dlogit|top20={d:.4f}")


CONVENTIONS = {
    "llama": "GGUF [n_in,n_out] -> W (n_out,n_in); RMSNorm x/sqrt(mean(x^2)+eps)*w; "
             "RoPE NORM (adjacent pairs, theta=pos*base^(-2i/n_rot)); GQA head h -> kv h//(n_head/n_head_kv); "
             "scale 1/sqrt(head_dim); SwiGLU; final RMSNorm; output.weight or tied token_embd",
    "qwen2": "as llama, plus q/k/v biases before RoPE; RoPE NEOX (pairs i, i+n_rot/2); output.weight or tied token_embd",
    "gemma3": "embeddings * sqrt(n_embd); head_dim = key_length; per-head RMSNorm of q and k before RoPE NEOX; "
              "blocks i%6<5: window (masked if q_pos-k_pos >= sliding_window), rope base 10000, else rope.freq_base; "
              "scale 1/sqrt(key_length); post-attention and post-FFN RMSNorm before the residual adds; "
              "GeGLU with tanh GELU; norm weights as stored; tied output",
}


def process(model_path, golden_path, emulate_check=False):
    with open(golden_path) as f:
        gold = json.load(f)
    print(f"== {model_path} -> {golden_path}")
    model = Model(model_path)
    k = int(gold.get("settings", {}).get("topk", TOPK))
    section = {"generator": "scripts/reference/float64_forward.py",
               "date": datetime.date.today().isoformat(),
               "numpy_version": np.__version__,
               "conventions": CONVENTIONS[model.arch],
               "texts": []}
    hidden = model.hidden_many([entry["ids"] for entry in gold["logits"]])
    out = model.get(model.output_name)
    for entry, h in zip(gold["logits"], hidden):
        ids = entry["ids"]
        logits = model.mm(h, model.output_name, out)
        nll = next_token_nll(logits, ids)
        ti, tv = topk(logits, k)
        res = {"name": entry["name"], "ids": ids,
               "nll": [sig(v, 7) for v in nll],
               "top_ids": ti.tolist(),
               "top_logits": [[sig(v, 7) for v in row] for row in tv],
               "_full_logits": logits}
        cmp = compare(entry, res)
        del res["_full_logits"]
        res["agreement_with_llamacpp"] = {key: sig(v, 6) for key, v in cmp.items()}
        section["texts"].append(res)
        print(f"  {entry['name']:<14s} n={len(ids):3d} meanNLL f64={cmp['mean_nll_float64']:.5f} "
              f"batched-f64={cmp['mean_nll_diff_batched_minus_f64']:+.5f} "
              f"onetok-f64={cmp.get('mean_nll_diff_one_token_minus_f64', float('nan')):+.5f} "
              f"max|dNLL|b={cmp['max_abs_nll_diff_batched']:.4f} "
              f"top1={cmp['top1_agreement']:.3f} max|dlogit|topk={cmp['max_abs_logit_diff_topk']:.4f}")
    s = section["texts"]
    section["summary"] = {
        "max_abs_mean_nll_diff_batched": sig(max(abs(t["agreement_with_llamacpp"]["mean_nll_diff_batched_minus_f64"]) for t in s), 6),
        "max_abs_mean_nll_diff_one_token": sig(max(abs(t["agreement_with_llamacpp"].get("mean_nll_diff_one_token_minus_f64", 0.0)) for t in s), 6),
        "top1_agreement": sig(sum(t["agreement_with_llamacpp"]["top1_agreement"] * len(t["ids"]) for t in s)
                              / sum(len(t["ids"]) for t in s), 6),      # over all positions
        "max_abs_logit_diff_topk": sig(max(t["agreement_with_llamacpp"]["max_abs_logit_diff_topk"] for t in s), 6),
    }
    print("  summary:", section["summary"])
    if emulate_check and model.arch == "llama":
        del model
        emulation_check(model_path, gold)
    gold["float64"] = section
    with open(golden_path, "w") as f:
        json.dump(gold, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", help="GGUF model paths")
    ap.add_argument("--all", action="store_true", help="reference model and models/tiny-*.gguf")
    ap.add_argument("--golden-dir", default=GOLDEN_DIR)
    ap.add_argument("--emulate-check", action="store_true",
                    help="also print agreement when ggml's activation rounding is emulated (not stored)")
    a = ap.parse_args()
    models = list(a.models)
    if a.all:
        models = [DEFAULT_MODEL] + sorted(glob.glob("models/tiny-*.gguf"))
    if not models:
        models = [DEFAULT_MODEL]
    for m in models:
        stem = os.path.splitext(os.path.basename(m))[0]
        process(m, os.path.join(a.golden_dir, f"llamacpp-{stem}.json"), a.emulate_check)


if __name__ == "__main__":
    main()
