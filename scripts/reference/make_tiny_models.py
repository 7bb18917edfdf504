#!/usr/bin/env python3
"""Tiny LLaMA-architecture GGUF models with a working byte-level BPE tokenizer.

Produces models/tiny-q4_0.gguf, models/tiny-q4_1.gguf and models/tiny-mixed.gguf,
and models/tiny-qwen2.gguf and models/tiny-gemma3.gguf (see "Tiny qwen2 and gemma3
models" below) (each well under 1 MB), written with gguf-py's GGUFWriter and gguf.quants, i.e.
independently of the project's Swift GGUF writer and quantizers.

Model: architecture "llama", 2 layers, n_embd 64, n_ff 160, 4 heads, 2 KV heads
(head_dim 16), rope dimension 16, rope base 10000, rms eps 1e-5, context 256.
Tensor names/shapes are those of llama.cpp's llama loader (GGUF ne order):
  token_embd.weight [64, n_vocab]   blk.N.attn_norm.weight [64]
  blk.N.attn_q.weight [64, 64]      blk.N.attn_k.weight [64, 32]
  blk.N.attn_v.weight [64, 32]      blk.N.attn_output.weight [64, 64]
  blk.N.ffn_norm.weight [64]        blk.N.ffn_gate.weight [64, 160]
  blk.N.ffn_up.weight [64, 160]     blk.N.ffn_down.weight [160, 64]
  output_norm.weight [64]           output.weight [64, n_vocab] (tiny-mixed only)
Types:
  tiny-q4_0 : all matrices Q4_0, token_embd Q8_0, norms F32, output tied
  tiny-q4_1 : all matrices Q4_1, token_embd Q8_0, norms F32, output tied
  tiny-mixed: matrices spread over Q8_0, F16, F32, BF16, Q4_0, Q4_1 (see
              MIXED_TYPES), token_embd F16, untied output.weight Q4_0
All three share the same float weights (seed 1234) before quantization.

Tokenizer (llama.cpp "gpt2" style, pre-tokenizer "smollm" like SmolLM2):
  ids 0..2: <|endoftext|>, <|im_start|>, <|im_end|> (token_type 3 = control),
  ids 3..258: the 256 byte-level symbols of GPT-2's bytes_to_unicode, in that
  table's order (token_type 1), then one token per learned merge (type 1).
  Merges are learned by the small BPE trainer below (N_MERGES merges, ties
  broken by the pair string) on CORPUS, after the smollm pre-tokenizer split
  (digits one by one, then the GPT-2 regex).  bos = <|im_start|> (1),
  eos = <|im_end|> (2), unk = 0, pad = 2, add_bos_token false, ChatML template.

The script then checks the models with the float64 forward pass (top-1
probability statistics) and, when llama-cpp-python is importable, that
llama.cpp loads each model, tokenizes and generates.

Run from the repo root:  python3 scripts/reference/make_tiny_models.py
The K-quant models (make_kquant_models, models/tiny-q4_k_m.gguf etc.; wider, and
quantized by llama.cpp itself):  python3 scripts/reference/make_tiny_models.py --kquants
"""
import collections
import os
import sys

import unicodedata

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T

OUT_DIR = "models"
SEED = 1234
N_LAYER, N_EMBD, N_FF, N_HEAD, N_HEAD_KV, N_CTX = 2, 64, 160, 4, 2, 256
HEAD_DIM = N_EMBD // N_HEAD
N_MERGES = 400
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = """\
The morning was cold and the river was covered with a thin layer of mist.
She walked along the old stone bridge, counting the boats that passed below.
There were seven of them, and each one carried a different kind of cargo:
apples, wool, timber, bricks, letters, and two crates that nobody could name.
When the sun finally rose above the hills, the mist began to lift, and the
town woke up. Shops opened their doors, children ran to school, and the baker
put the first loaves of bread in the window. It's a small town, but it's ours,
she thought. We've lived here for a long time, and we'll stay for a while yet.

In the afternoon the weather changed. Heavy clouds came in from the west and
the wind started to blow through the narrow streets. People hurried home with
their collars turned up. The teacher closed the windows of the classroom and
told the students to finish their reading before the storm arrived. They'd
been learning about the history of the region: the farms, the mills, the
railway that was built more than a hundred years ago, and the great flood that
changed the shape of the valley.

A model that learns to predict the next word must first learn which words
belong together. It reads a large amount of text, and every time it makes a
mistake it adjusts its weights a little. After many steps the mistakes become
smaller. Training on a computer with only a few cores takes patience, so the
engineers made the model small and the data simple. They measured the loss,
they wrote tests, and they compared the results with a second implementation
to be sure that both gave the same numbers.

def add(a, b):
    return a + b

for i in range(10):
    print(i, add(i, 2))

The recipe is easy. Take two cups of flour, one cup of water, a pinch of salt
and a spoon of oil. Mix them in a bowl until the dough is smooth, then let it
rest for thirty minutes. Roll it out, cut it into strips and cook them in
boiling water for three minutes. Serve with butter, cheese, or a simple sauce
made from tomatoes, garlic and fresh herbs. If you're cooking for four people,
double the amounts. I'm sure you'll like it; everyone who has tried it says so.

Questions and answers:
What is the capital of France? The capital of France is Paris.
How many days are there in a week? There are seven days in a week.
What do bees make? Bees make honey, and they also help flowers to grow.
Where does the sun rise? The sun rises in the east and sets in the west.
Who wrote the letter? The letter was written by the mayor of the town.

Dear friend, thank you for your letter. We were very happy to hear from you.
The garden is growing well this year: the roses are red, the beans are tall,
and the old apple tree has more fruit than ever before. Father says that the
summer has been kind to us. Mother is busy with the market, where she sells
bread, cheese and honey every Saturday morning. The children are reading a
book about ships and sailors, and they want to travel across the ocean when
they are older. Please write again soon and tell us about your new home, your
work and your family. We think of you often and hope to see you next spring.

Shopping list for the week: 12 eggs, 2 kilos of potatoes, 3 onions, 1 bottle
of milk, 500 grams of rice, 4 apples, and 6 bananas. Total: 23.50 euros.
Meeting notes, 14 March: the team agreed to finish the report by Friday. Anna
will check the numbers, Peter will write the summary, and Maria will send the
final version to the director. The next meeting is on 21 March at 10:30.

The library is open every day except Sunday. Visitors can borrow up to five
books at a time, and they can keep them for three weeks. Students who study
in the reading room are asked to keep quiet and to turn off their phones. The
library also has a small collection of maps, newspapers and old photographs
of the town, which anyone can look at with the help of the librarian.
"""


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character table, in its order."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
          + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


def _cls(ch):
    cat = unicodedata.category(ch)
    if ch.isspace():
        return "S"
    if cat[0] == "L":
        return "L"
    if cat[0] == "N":
        return "N"
    return "P"


def pretokenize(text):
    """llama.cpp's smollm pre-tokenizer, written out by hand (no regex module):
    first every \\p{N} character becomes its own piece, then each piece is split
    with GPT-2's pattern
      's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
    (only used to train the merges; llama.cpp does its own splitting at run time)."""
    pieces = []
    cur = ""
    for ch in text:
        if _cls(ch) == "N":
            if cur:
                pieces.append(cur)
            pieces.append(ch)
            cur = ""
        else:
            cur += ch
    if cur:
        pieces.append(cur)
    out = []
    for t in pieces:
        i, n = 0, len(t)
        while i < n:
            if t[i] == "'":
                m = next((c for c in ("s", "t", "re", "ve", "m", "ll", "d") if t.startswith(c, i + 1)), None)
                if m is not None:
                    out.append(t[i:i + 1 + len(m)])
                    i += 1 + len(m)
                    continue
            j = i + 1 if (t[i] == " " and i + 1 < n and _cls(t[i + 1]) != "S") else i
            c = _cls(t[j])
            if c != "S":
                k = j + 1
                while k < n and _cls(t[k]) == c:
                    k += 1
                out.append(t[i:k])
                i = k
                continue
            k = i
            while k < n and _cls(t[k]) == "S":
                k += 1
            if k < n and k - i > 1:
                k -= 1           # \s+(?!\S): leave the last space for the next word
            out.append(t[i:k])
            i = k
    return out


def train_bpe(text, n_merges):
    """Plain BPE: repeatedly merge the most frequent adjacent pair (ties broken
    by the lexicographically smallest pair).  Returns the merges in order."""
    b2u = dict(bytes_to_unicode())
    words = collections.Counter(
        tuple(b2u[b] for b in w.encode("utf-8")) for w in pretokenize(text))
    words = {w: c for w, c in words.items()}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if best[1] < 2:
            break
        (a, b) = best[0]
        merges.append((a, b))
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    return merges


def build_vocab():
    tokens = list(SPECIALS)
    types = [gguf.TokenType.CONTROL] * len(SPECIALS)
    for _, ch in bytes_to_unicode():
        tokens.append(ch)
        types.append(gguf.TokenType.NORMAL)
    merges = train_bpe(CORPUS, N_MERGES)
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types], [f"{a} {b}" for a, b in merges]


def make_weights(n_vocab):
    """Float32 weights (numpy shapes = reversed GGUF shapes)."""
    rng = np.random.default_rng(SEED)
    w = {}

    def mat(n_out, n_in, gain):
        return (rng.standard_normal((n_out, n_in)) * gain / np.sqrt(n_in)).astype(np.float32)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32)

    w["token_embd.weight"] = (rng.standard_normal((n_vocab, N_EMBD)) * EMBD_STD).astype(np.float32)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm()
        w[p + "attn_q.weight"] = mat(N_HEAD * HEAD_DIM, N_EMBD, 2.0)
        w[p + "attn_k.weight"] = mat(N_HEAD_KV * HEAD_DIM, N_EMBD, 2.0)
        w[p + "attn_v.weight"] = mat(N_HEAD_KV * HEAD_DIM, N_EMBD, 1.0)
        w[p + "attn_output.weight"] = mat(N_EMBD, N_HEAD * HEAD_DIM, 1.0)
        w[p + "ffn_norm.weight"] = norm()
        w[p + "ffn_gate.weight"] = mat(N_FF, N_EMBD, 1.0)
        w[p + "ffn_up.weight"] = mat(N_FF, N_EMBD, 1.0)
        w[p + "ffn_down.weight"] = mat(N_EMBD, N_FF, 1.0)
    w["output_norm.weight"] = norm()
    w["output.weight"] = (rng.standard_normal((n_vocab, N_EMBD)) * OUTPUT_STD).astype(np.float32)
    return w


EMBD_STD = 0.35    # tied output: logit std ~ EMBD_STD * sqrt(n_embd)
OUTPUT_STD = 0.35

MATRICES = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
# tiny-mixed: every ggml type the runtime supports appears at least once
MIXED_TYPES = {
    0: {"attn_q": "Q8_0", "attn_k": "F16", "attn_v": "F32", "attn_output": "BF16",
        "ffn_gate": "Q4_0", "ffn_up": "Q4_1", "ffn_down": "Q8_0"},
    1: {"attn_q": "F16", "attn_k": "Q8_0", "attn_v": "Q4_1", "attn_output": "F32",
        "ffn_gate": "BF16", "ffn_up": "F16", "ffn_down": "Q4_0"},
}
VARIANTS = {
    # name: (matrix type per (layer, matrix), token_embd type, output.weight type or None, file_type)
    "tiny-q4_0": (lambda l, m: "Q4_0", "Q8_0", None, gguf.LlamaFileType.MOSTLY_Q4_0),
    "tiny-q4_1": (lambda l, m: "Q4_1", "Q8_0", None, gguf.LlamaFileType.MOSTLY_Q4_1),
    "tiny-mixed": (lambda l, m: MIXED_TYPES[l][m], "F16", "Q4_0", gguf.LlamaFileType.MOSTLY_Q8_0),
}


def encode(arr, tname):
    """Return (numpy array to hand to GGUFWriter, raw_dtype or None)."""
    qt = T[tname]
    if qt == T.F32:
        return arr.astype(np.float32), None
    if qt == T.F16:
        return arr.astype(np.float16), None
    return gguf.quants.quantize(arr.astype(np.float32), qt), qt


def write_model(name, tokens, toktypes, merges, weights):
    mat_type, embd_type, out_type, ftype = VARIANTS[name]
    path = os.path.join(OUT_DIR, name + ".gguf")
    wr = gguf.GGUFWriter(path, "llama")
    wr.add_name(name)
    wr.add_type("model")
    wr.add_context_length(N_CTX)
    wr.add_embedding_length(N_EMBD)
    wr.add_block_count(N_LAYER)
    wr.add_feed_forward_length(N_FF)
    wr.add_head_count(N_HEAD)
    wr.add_head_count_kv(N_HEAD_KV)
    wr.add_rope_freq_base(10000.0)
    wr.add_layer_norm_rms_eps(1e-5)
    wr.add_rope_dimension_count(HEAD_DIM)
    wr.add_vocab_size(len(tokens))
    wr.add_file_type(int(ftype))
    wr.add_quantization_version(gguf.GGML_QUANT_VERSION)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("smollm")
    wr.add_token_list(tokens)
    wr.add_token_types(toktypes)
    wr.add_token_merges(merges)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    wr.add_unk_token_id(0)
    wr.add_pad_token_id(2)
    wr.add_add_bos_token(False)
    wr.add_add_space_prefix(False)
    wr.add_chat_template(CHAT_TEMPLATE)

    def put(tname, arr, ttype):
        data, raw = encode(arr, ttype)
        wr.add_tensor(tname, data, raw_dtype=raw)

    put("token_embd.weight", weights["token_embd.weight"], embd_type)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        put(p + "attn_norm.weight", weights[p + "attn_norm.weight"], "F32")
        for m in MATRICES:
            put(p + m + ".weight", weights[p + m + ".weight"], mat_type(i, m))
        put(p + "ffn_norm.weight", weights[p + "ffn_norm.weight"], "F32")
    put("output_norm.weight", weights["output_norm.weight"], "F32")
    if out_type is not None:
        put("output.weight", weights["output.weight"], out_type)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


CHECK_TEXTS = [
    "The morning was cold and the river was covered with a thin layer of mist.",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "for i in range(10):\n    print(i, add(i, 2))\n",
]


def check_float64(path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import float64_forward as f64
    m = f64.Model(path)
    b2u = dict(bytes_to_unicode())
    p1 = []
    for text in CHECK_TEXTS:
        # byte-level ids are enough to check the logit scale
        ids = [3 + [c for _, c in bytes_to_unicode()].index(b2u[b]) for b in text.encode()][:64]
        lg = m.forward(ids)
        p = np.exp(f64.log_softmax(lg))
        p1.extend(p.max(axis=1).tolist())
    p1 = np.array(p1)
    frac = np.mean((p1 >= 0.05) & (p1 <= 0.9))
    print(f"  float64 top-1 prob: median {np.median(p1):.3f}, min {p1.min():.3f}, "
          f"max {p1.max():.3f}, fraction in [0.05,0.9] = {frac:.2f}")
    return frac


def check_llamacpp(path):
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from llamacpp_golden import load_llama
    except ImportError as e:  # pragma: no cover
        print(f"  llama-cpp-python not available ({e}); skipping llama.cpp check")
        return
    llm = load_llama(model_path=path, n_ctx=N_CTX, n_batch=256, n_threads=2,
                          logits_all=True, verbose=False, seed=0)
    text = "The weather was cold, and we've lived here for 10 years."
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)
    back = llm.detokenize(ids).decode("utf-8")
    assert back == text, (back, text)
    chat = llm.tokenize("<|im_start|>user\nHi<|im_end|>\n".encode(), add_bos=False, special=True)
    assert chat[0] == 1 and 2 in chat, chat
    p1 = []
    for t in CHECK_TEXTS:
        tids = llm.tokenize(t.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(tids)
        lg = np.asarray(llm.scores[: len(tids)], dtype=np.float64)
        pr = np.exp(lg - lg.max(axis=1, keepdims=True))
        p1.extend((pr.max(axis=1) / pr.sum(axis=1)).tolist())
    p1 = np.array(p1)
    print(f"  llama.cpp top-1 prob: median {np.median(p1):.3f}, min {p1.min():.3f}, max {p1.max():.3f}, "
          f"fraction in [0.05,0.9] = {np.mean((p1 >= 0.05) & (p1 <= 0.9)):.2f}")
    llm.reset()
    out = llm.create_completion("The teacher closed the", max_tokens=12, temperature=0.0)
    print(f"  llama.cpp: {len(text)} chars -> {len(ids)} tokens, round-trip ok; chat ids {chat}; "
          f"greedy continuation {out['choices'][0]['text']!r}")
    del llm


# ---- Tiny qwen2 and gemma3 models (same tokenizer, other architectures) ----------------
#
# models/tiny-qwen2.gguf: architecture "qwen2", 2 layers, n_embd 64, n_ff 160, 4 heads,
#   2 KV heads (head_dim 16), q/k/v biases (F32), rope base 1e6, rms eps 1e-6, context 256,
#   untied output.weight (Q4_0), token_embd Q8_0.
# models/tiny-gemma3.gguf: architecture "gemma3", 6 layers (blocks 0-4 local, 5 global),
#   n_embd 64, n_ff 128, 4 heads, 1 KV head, key_length = value_length = 32 (so q is 128
#   wide, not n_embd), sliding_window 8 (shorter than the golden texts), rope base 1e6
#   (local blocks use 10,000), rms eps 1e-6, per-head q/k norms and post-attention /
#   post-FFN norms, tied output (token_embd Q8_0).  Norm weights are stored the way
#   llama.cpp's converter stores Gemma's (the 1 already added): plain multipliers around 1,
#   a few of them large (up to 8) as in the real file.
# Matrices of both spread over F32, Q8_0 and Q4_0 (ARCH_TYPES); norms and biases F32.
# Both use the byte-level BPE vocabulary above, so that they do not depend on a
# SentencePiece tokenizer; the forward golden tests take token ids from llama.cpp.

ARCH_TYPES = [  # per layer (cycled): attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down
    ["Q8_0", "Q4_0", "F32", "Q4_0", "Q8_0", "Q4_0", "Q8_0"],
    ["Q4_0", "Q8_0", "Q4_0", "F32", "Q4_0", "Q8_0", "Q4_0"],
    ["F32", "Q4_0", "Q8_0", "Q8_0", "Q4_0", "F32", "Q4_0"],
]
ARCH_MODELS = {
    # name: dict of hyperparameters
    "tiny-qwen2": dict(arch="qwen2", n_layer=2, n_embd=64, n_ff=160, n_head=4, n_head_kv=2, head_dim=16,
                       rope_base=1e6, eps=1e-6, seed=4321),
    "tiny-gemma3": dict(arch="gemma3", n_layer=6, n_embd=64, n_ff=128, n_head=4, n_head_kv=1, head_dim=32,
                        rope_base=1e6, eps=1e-6, sliding_window=8, seed=5678),
}


def make_arch_weights(h, n_vocab):
    """Float32 weights of a tiny qwen2 or gemma3 model (numpy shapes = reversed GGUF shapes)."""
    rng = np.random.default_rng(h["seed"])
    e, f, hd = h["n_embd"], h["n_ff"], h["head_dim"]
    qd, kvd = h["n_head"] * hd, h["n_head_kv"] * hd

    def mat(n_out, n_in, gain):
        return (rng.standard_normal((n_out, n_in)) * gain / np.sqrt(n_in)).astype(np.float32)

    def norm(n, spread=0.1):
        return (1.0 + spread * rng.standard_normal(n)).astype(np.float32)

    w = {"token_embd.weight": (rng.standard_normal((n_vocab, e)) * EMBD_STD).astype(np.float32)}
    for i in range(h["n_layer"]):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(e)
        w[p + "attn_q.weight"] = mat(qd, e, 2.0)
        w[p + "attn_k.weight"] = mat(kvd, e, 2.0)
        w[p + "attn_v.weight"] = mat(kvd, e, 1.0)
        w[p + "attn_output.weight"] = mat(e, qd, 1.0)
        w[p + "ffn_norm.weight"] = norm(e)
        w[p + "ffn_gate.weight"] = mat(f, e, 1.0)
        w[p + "ffn_up.weight"] = mat(f, e, 1.0)
        w[p + "ffn_down.weight"] = mat(e, f, 1.0)
        if h["arch"] == "qwen2":
            w[p + "attn_q.bias"] = (0.5 * rng.standard_normal(qd)).astype(np.float32)
            w[p + "attn_k.bias"] = (2.0 * rng.standard_normal(kvd)).astype(np.float32)   # Qwen's k biases are large
            w[p + "attn_v.bias"] = (0.5 * rng.standard_normal(kvd)).astype(np.float32)
        else:
            w[p + "attn_q_norm.weight"] = norm(hd, 0.3)
            w[p + "attn_k_norm.weight"] = norm(hd, 0.3)
            post = norm(e, 0.3)
            post[rng.integers(0, e, 3)] = 8.0
            w[p + "post_attention_norm.weight"] = post
            w[p + "post_ffw_norm.weight"] = norm(e, 0.3)
    w["output_norm.weight"] = norm(e)
    if h["arch"] == "qwen2":
        w["output.weight"] = (rng.standard_normal((n_vocab, e)) * OUTPUT_STD).astype(np.float32)
    return w


def write_arch_model(name, tokens, toktypes, merges):
    h = ARCH_MODELS[name]
    weights = make_arch_weights(h, len(tokens))
    path = os.path.join(OUT_DIR, name + ".gguf")
    wr = gguf.GGUFWriter(path, h["arch"])
    wr.add_name(name)
    wr.add_type("model")
    wr.add_context_length(N_CTX)
    wr.add_embedding_length(h["n_embd"])
    wr.add_block_count(h["n_layer"])
    wr.add_feed_forward_length(h["n_ff"])
    wr.add_head_count(h["n_head"])
    wr.add_head_count_kv(h["n_head_kv"])
    wr.add_rope_freq_base(h["rope_base"])
    wr.add_layer_norm_rms_eps(h["eps"])
    if h["arch"] == "gemma3":
        wr.add_key_length(h["head_dim"])
        wr.add_value_length(h["head_dim"])
        wr.add_sliding_window(h["sliding_window"])
    wr.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0))
    wr.add_quantization_version(gguf.GGML_QUANT_VERSION)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("smollm")
    wr.add_token_list(tokens)
    wr.add_token_types(toktypes)
    wr.add_token_merges(merges)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    wr.add_unk_token_id(0)
    wr.add_pad_token_id(2)
    wr.add_add_bos_token(False)
    wr.add_add_space_prefix(False)
    wr.add_chat_template(CHAT_TEMPLATE)

    def put(tname, ttype):
        data, raw = encode(weights[tname], ttype)
        wr.add_tensor(tname, data, raw_dtype=raw)

    put("token_embd.weight", "Q8_0")
    for i in range(h["n_layer"]):
        p = f"blk.{i}."
        for n in sorted(k[len(p):] for k in weights if k.startswith(p)):
            if n[:-len(".weight")] in MATRICES and n.endswith(".weight"):
                put(p + n, ARCH_TYPES[i % len(ARCH_TYPES)][MATRICES.index(n[:-len(".weight")])])
            else:
                put(p + n, "F32")
    put("output_norm.weight", "F32")
    if "output.weight" in weights:
        put("output.weight", "Q4_0")
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


# --- Tiny llama models in the K-quants (and Q5_0/Q5_1), quantized by llama.cpp ----------
#
# K-quant rows must be multiples of 256, so these are wider: n_embd 256, n_ff 512,
# 4 heads of 64 (2 KV heads), rope dimension 64, 2 layers, the same tokenizer.  The
# float weights (seed 4321, same recipe as make_weights) are written as an F32 GGUF
# with gguf-py, then quantized by llama.cpp's own quantizer (llama_model_quantize
# through llama-cpp-python) to each llama.cpp file type below, so the type chosen for
# every tensor is llama.cpp's (Q4_K_M mixes Q4_K with Q6_K, and so on).
KQ_N_EMBD, KQ_N_FF, KQ_N_HEAD, KQ_N_HEAD_KV, KQ_SEED = 256, 512, 4, 2, 4321
KQUANT_VARIANTS = {
    # name: llama.cpp file type (llama_ftype)
    "tiny-q4_k_m": 15,   # LLAMA_FTYPE_MOSTLY_Q4_K_M: Q4_K and Q6_K
    "tiny-q5_k_m": 17,   # LLAMA_FTYPE_MOSTLY_Q5_K_M: Q5_K and Q6_K
    "tiny-q3_k_m": 12,   # LLAMA_FTYPE_MOSTLY_Q3_K_M: Q3_K, Q4_K, Q5_K and Q6_K
    "tiny-q2_k": 10,     # LLAMA_FTYPE_MOSTLY_Q2_K: Q2_K, Q3_K and Q6_K
    "tiny-q5_0": 8,      # LLAMA_FTYPE_MOSTLY_Q5_0: Q5_0 (and Q6_K for the tied embedding)
}


def make_kquant_models(names=None):
    """Writes models/tiny-<kquant>.gguf (see KQUANT_VARIANTS); needs llama-cpp-python."""
    import tempfile
    import llama_cpp
    os.makedirs(OUT_DIR, exist_ok=True)
    tokens, toktypes, merges = build_vocab()
    rng = np.random.default_rng(KQ_SEED)
    head_dim = KQ_N_EMBD // KQ_N_HEAD

    def mat(n_out, n_in, gain):
        return (rng.standard_normal((n_out, n_in)) * gain / np.sqrt(n_in)).astype(np.float32)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(KQ_N_EMBD)).astype(np.float32)

    # Tied output: logit std ~ std * sqrt(n_embd), as for the narrow models (0.35 * sqrt(64)).
    w = {"token_embd.weight": (rng.standard_normal((len(tokens), KQ_N_EMBD)) * EMBD_STD * np.sqrt(N_EMBD / KQ_N_EMBD)).astype(np.float32)}
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm()
        w[p + "attn_q.weight"] = mat(KQ_N_HEAD * head_dim, KQ_N_EMBD, 2.0)
        w[p + "attn_k.weight"] = mat(KQ_N_HEAD_KV * head_dim, KQ_N_EMBD, 2.0)
        w[p + "attn_v.weight"] = mat(KQ_N_HEAD_KV * head_dim, KQ_N_EMBD, 1.0)
        w[p + "attn_output.weight"] = mat(KQ_N_EMBD, KQ_N_HEAD * head_dim, 1.0)
        w[p + "ffn_norm.weight"] = norm()
        w[p + "ffn_gate.weight"] = mat(KQ_N_FF, KQ_N_EMBD, 1.0)
        w[p + "ffn_up.weight"] = mat(KQ_N_FF, KQ_N_EMBD, 1.0)
        w[p + "ffn_down.weight"] = mat(KQ_N_EMBD, KQ_N_FF, 1.0)
    w["output_norm.weight"] = norm()

    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "tiny-kquant-f32.gguf")
        wr = gguf.GGUFWriter(f32, "llama")
        wr.add_name("tiny-kquant")
        wr.add_type("model")
        wr.add_context_length(N_CTX)
        wr.add_embedding_length(KQ_N_EMBD)
        wr.add_block_count(N_LAYER)
        wr.add_feed_forward_length(KQ_N_FF)
        wr.add_head_count(KQ_N_HEAD)
        wr.add_head_count_kv(KQ_N_HEAD_KV)
        wr.add_rope_freq_base(10000.0)
        wr.add_layer_norm_rms_eps(1e-5)
        wr.add_rope_dimension_count(head_dim)
        wr.add_vocab_size(len(tokens))
        wr.add_file_type(int(gguf.LlamaFileType.ALL_F32))
        wr.add_tokenizer_model("gpt2")
        wr.add_tokenizer_pre("smollm")
        wr.add_token_list(tokens)
        wr.add_token_types(toktypes)
        wr.add_token_merges(merges)
        wr.add_bos_token_id(1)
        wr.add_eos_token_id(2)
        wr.add_unk_token_id(0)
        wr.add_pad_token_id(2)
        wr.add_add_bos_token(False)
        wr.add_add_space_prefix(False)
        wr.add_chat_template(CHAT_TEMPLATE)
        for name, arr in w.items():
            wr.add_tensor(name, arr)
        wr.write_header_to_file()
        wr.write_kv_data_to_file()
        wr.write_tensors_to_file()
        wr.close()
        for name, ftype in KQUANT_VARIANTS.items():
            if names and name not in names:
                continue
            path = os.path.join(OUT_DIR, name + ".gguf")
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            params.nthread = 2
            rc = llama_cpp.llama_model_quantize(f32.encode(), path.encode(), params)
            assert rc == 0, (name, rc)
            r = gguf.GGUFReader(path)
            counts = collections.Counter(t.tensor_type.name for t in r.tensors)
            print(f"{path}: {os.path.getsize(path)} bytes, tensor types {dict(sorted(counts.items()))}")
            check_float64(path)
            check_llamacpp(path)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    tokens, toktypes, merges = build_vocab()
    print(f"vocab {len(tokens)} tokens ({len(merges)} merges); first merges {merges[:8]}")
    weights = make_weights(len(tokens))
    for name in VARIANTS:
        path = write_model(name, tokens, toktypes, merges, weights)
        print(f"{path}: {os.path.getsize(path)} bytes")
        check_float64(path)
        check_llamacpp(path)
    for name in ARCH_MODELS:
        path = write_arch_model(name, tokens, toktypes, merges)
        print(f"{path}: {os.path.getsize(path)} bytes")
        check_float64(path)
        check_llamacpp(path)


if __name__ == "__main__":
    if "--kquants" in sys.argv[1:]:   # only the K-quant models (make_kquant_models)
        make_kquant_models([a for a in sys.argv[1:] if not a.startswith("--")])
    else:
        main()
