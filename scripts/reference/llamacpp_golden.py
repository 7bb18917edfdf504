#!/usr/bin/env python3
"""Tokenizer and logits golden data from llama.cpp (via llama-cpp-python).

Produces Tests/Golden/llamacpp-<modelstem>.json for each model given:
  * "tokenizer": TOKENIZER_CASES, each {"text", "parse_special", "ids",
    "detokenized", "roundtrip"} where ids = llm.tokenize(text.encode(),
    add_bos=False, special=parse_special) and detokenized =
    llm.detokenize(ids, special=parse_special) decoded as UTF-8.
    (A vocab_only model is used for this part.)
  * "logits": for each of LOGIT_TEXTS: the token ids, and from ONE batched
    eval of the whole sequence (n_batch=512, logits at every position):
    "nll_batched" (nats; position p predicts token p+1, computed in float64
    from llama.cpp's float32 logits with a log-softmax), "top_ids" /
    "top_logits" (top-20 per position, logit descending, ties by lower id), and
    "nll_one_token": the same NLL from a second context evaluating one token
    per decode call (n_batch = n_ubatch = 1).  Floats have 6 significant digits.
  * file-level fields: model file name, sha256, llama-cpp-python version,
    llama.cpp settings, generator script, date.
float64_forward.py later adds a "float64" section to the same file (run it
after this script; rerunning this script drops that section).

Independent reference: llama.cpp itself (llama-cpp-python 0.3.36 bundles it;
CPU backend, flash attention off, F16 KV cache -- llama.cpp's defaults --
except use_extra_bufts = false, see load_llama()).

Usage (from the repo root):
    python3 scripts/reference/llamacpp_golden.py [MODEL.gguf ...]
    python3 scripts/reference/llamacpp_golden.py --all
    python3 scripts/reference/llamacpp_golden.py --tokenizer-only MODEL.gguf
Default model: models/SmolLM2-135M-Instruct.Q4_1.gguf; --all adds
models/tiny-*.gguf.  Tiny models (context 256) get the first TINY_N_TEXTS
logit texts, truncated to TINY_MAX_TOKENS tokens ("truncated_to" says so).
"""
import argparse
import datetime
import glob
import hashlib
import json
import math
import os
import sys

import numpy as np

import llama_cpp
import llama_cpp.llama_cpp as llama_c

DEFAULT_MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
GOLDEN_DIR = os.path.join("Tests", "Golden")
TOPK = 20
N_CTX = 512
TINY_N_TEXTS = 4
TINY_MAX_TOKENS = 64

CHAT1 = "<|im_start|>user\nHi<|im_end|>\n"
CHAT2 = ("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
         "<|im_start|>assistant\n")

# (text, parse_special)
TOKENIZER_CASES = [
    ("Hello world", False),
    ("Hello, world! How are you today?", False),
    ("The quick brown fox jumps over the lazy dog.", False),
    ("", False),
    (" ", False),
    ("  ", False),
    ("   ", False),
    ("    ", False),
    ("     ", False),
    ("      ", False),
    (" leading space", False),
    ("trailing space ", False),
    ("  two leading and two trailing  ", False),
    ("a b  c   d    e     f      g", False),
    ("\n", False),
    ("\n\n", False),
    ("line one\n\n\nline four\n\n\n\n", False),
    ("windows\r\nline endings\r\n", False),
    ("\ttab\tseparated\t\tvalues", False),
    (" \t \n \r\n  mixed whitespace \n\t", False),
    ("   indented\n        deeper\n", False),
    ("1", False),
    ("12", False),
    ("123", False),
    ("1234567", False),
    ("3.14159", False),
    ("1,000,000", False),
    ("In 2024, 15% of 300 apples cost $4.99.", False),
    ("Mixed 123abc ABC123 a1b2c3", False),
    ("it's don't they're we've I'm you'll he'd", False),
    ("IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D", False),
    ("'s 't 're 've 'm 'll 'd 'S 'x", False),
    ("café naïve Ærø résumé", False),
    ("Ünïcödé Straße façade", False),
    ("e\u0301 combining acute, n\u0303 tilde", False),
    ("中文", False),
    ("日本語のテキストです。", False),
    ("한국어 문장입니다", False),
    ("مرحبا بالعالم", False),
    ("नमस्ते दुनिया", False),
    ("Привет, мир!", False),
    ("emoji 😀👍🏽", False),
    ("👨\u200d👩\u200d👧\u200d👦 family", False),
    ("🇫🇷🇯🇵🇺🇸 flags", False),
    ("\u00a0non-breaking\u00a0space and \u3000 ideographic space", False),
    ("½ fraction, ² superscript, ٣ arabic-indic three", False),
    ("def f(x):\n    return x ** 2  # square\n", False),
    ("int main(void) {\n\treturn 0;\n}\n", False),
    ('{"key": [1, 2.5, true, null], "nested": {"a": "b"}}', False),
    (r"^\s*([A-Za-z_]\w*)\s*=\s*(\d+(?:\.\d+)?)$", False),
    ("!!! ??? ... --- *** ,,, ;;; ::: !?!?", False),
    ("Wait...what?!?! (yes) [no] {maybe} <tag/>", False),
    ("https://example.com/path?q=1&x=y#frag user@example.org", False),
    ("supercalifragilisticexpialidocious antidisestablishmentarianism", False),
    (CHAT1, True),
    (CHAT1, False),
    (CHAT2, True),
    (CHAT2, False),
    ("text<|endoftext|>more", True),
    ("text<|endoftext|>more", False),
    ("<|im_end|><|im_start|>", True),
]

# (name, text, parse_special)
LOGIT_TEXTS = [
    ("prose",
     "The morning was cold and the river was covered with a thin layer of mist. "
     "She walked along the old stone bridge, counting the boats that passed below. "
     "When the sun finally rose above the hills, the mist began to lift, and the town "
     "woke up. Shops opened their doors, children ran to school, and the baker put the "
     "first loaves of bread in the window.", False),
    ("chatml",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\nWhat is the capital of France, and why is it famous?<|im_end|>\n"
     "<|im_start|>assistant\nThe capital of France is Paris. It is famous for the Eiffel "
     "Tower, the Louvre museum, its cafés and its long history as a centre of art and "
     "science.<|im_end|>\n<|im_start|>user\nThanks! Name one more city.<|im_end|>\n"
     "<|im_start|>assistant\n", True),
    ("code",
     "def fibonacci(n):\n"
     "    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
     "    a, b = 0, 1\n"
     "    for _ in range(n):\n"
     "        a, b = b, a + b\n"
     "    return a\n\n"
     "if __name__ == \"__main__\":\n"
     "    for i in range(10):\n"
     "        print(i, fibonacci(i))\n", False),
    ("numbered_list",
     "Shopping list:\n1. 12 eggs\n2. 2 kg of potatoes\n3. 3 onions\n4. 1 bottle of milk "
     "(1.5 L)\n5. 500 g of rice\nTotal: 23.50 EUR, paid on 14/03/2024 at 10:30.\n", False),
    ("multilingual",
     "Le chat dort sur le canapé pendant que la pluie tombe. "
     "Der Hund spielt im Garten mit einem roten Ball. "
     "El niño come una manzana en la cocina. "
     "Il treno per Roma parte alle nove.", False),
    ("long_prose",
     "A model that learns to predict the next word must first learn which words belong "
     "together. It reads a large amount of text, and every time it makes a mistake it "
     "adjusts its weights a little. After many steps the mistakes become smaller. "
     "Training on a computer with only a few cores takes patience, so the engineers "
     "made the model small and the data simple. They measured the loss, they wrote "
     "tests, and they compared the results with a second implementation to be sure "
     "that both gave the same numbers. In the afternoon the weather changed. Heavy "
     "clouds came in from the west and the wind started to blow through the narrow "
     "streets. People hurried home with their collars turned up. The teacher closed "
     "the windows of the classroom and told the students to finish their reading "
     "before the storm arrived. They had been learning about the history of the "
     "region: the farms, the mills, the railway that was built more than a hundred "
     "years ago, and the great flood that changed the shape of the valley. Nobody in "
     "the town had forgotten the flood, and the old people still told stories about "
     "the night the water came.", False),
]


# Texts of the qwen2 and gemma3 files, besides LOGIT_TEXTS' prose, chatml, code and multilingual.
CODE_SWIFT = ("import Foundation\n\n"
              "/// Returns the indices of the two numbers that add up to `target`.\n"
              "func twoSum(_ nums: [Int], _ target: Int) -> (Int, Int)? {\n"
              "    var seen = [Int: Int]()\n"
              "    for (i, n) in nums.enumerated() {\n"
              "        if let j = seen[target - n] { return (j, i) }\n"
              "        seen[n] = i\n"
              "    }\n"
              "    return nil\n"
              "}\n\nprint(twoSum([2, 7, 11, 15], 9) as Any)\n")
MULTILINGUAL_CJK = ("東京は日本の首都で、人口は約千四百万人です。"
                    "北京是中国的首都，有三千多年的历史。"
                    "서울은 한국의 수도입니다. "
                    "Москва — столица России. "
                    "القاهرة هي عاصمة مصر.")
GEMMA_TURNS = ("<start_of_turn>user\nWhat is the capital of France, and why is it famous?<end_of_turn>\n"
               "<start_of_turn>model\nThe capital of France is Paris. It is famous for the Eiffel Tower, "
               "the Louvre museum and its long history as a centre of art and science.<end_of_turn>\n"
               "<start_of_turn>user\nThanks! Name one more city.<end_of_turn>\n<start_of_turn>model\n")


def _text(name):
    return next(t for t in LOGIT_TEXTS if t[0] == name)


# Longer than Gemma 3's 512-token window: the local blocks of its later positions no
# longer see the first half of the text, which repeats.
LONG_WINDOW = ("long_window", _text("long_prose")[1] + "\n\n" + _text("prose")[1] + "\n\n" + _text("code")[1]
               + "\n" + _text("long_prose")[1] + "\n\n" + _text("prose")[1], False)

# Per file stem: the texts, how many tokens at most, top-k kept, context, whether the
# tokenizer section is written (the tokenizer goldens of these vocabularies are
# tokenizer_golden.py's), and whether BOS is added as the file's metadata says
# (add_special: llama.cpp adds BOS only when tokenizer.ggml.add_bos_token is true), and
# whether the one-token-per-decode pass runs too (skipped on the real files: one decode
# per position with a 150k-262k vocabulary takes long on two shared cores).
DEFAULT_PLAN = dict(texts=None, max_tokens=256, topk=TOPK, n_ctx=N_CTX, tokenizer=True, add_special=False, one_token=True)
PLANS = {
    "tiny-qwen2": dict(texts=LOGIT_TEXTS[:TINY_N_TEXTS], max_tokens=TINY_MAX_TOKENS, topk=5, n_ctx=256,
                       tokenizer=False, add_special=True),
    "tiny-gemma3": dict(texts=LOGIT_TEXTS[:TINY_N_TEXTS], max_tokens=TINY_MAX_TOKENS, topk=5, n_ctx=256,
                        tokenizer=False, add_special=True),
    "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M": dict(
        texts=[_text("prose"), _text("chatml"), _text("code"), ("code_swift", CODE_SWIFT, False),
               _text("multilingual"), ("multilingual_cjk", MULTILINGUAL_CJK, False), _text("long_prose")],
        max_tokens=256, topk=5, n_ctx=N_CTX, tokenizer=False, add_special=True, one_token=False),
    # float64 matmuls of the 1.5B model are slow in numpy: fewer and shorter texts.
    "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M": dict(
        texts=[_text("prose"), _text("chatml"), _text("code"), ("multilingual_cjk", MULTILINGUAL_CJK, False)],
        max_tokens=128, topk=5, n_ctx=N_CTX, tokenizer=False, add_special=True, one_token=False),
    "gemma-3-270m.Q4_K_M": dict(
        texts=[_text("prose"), ("gemma_turns", GEMMA_TURNS, True), _text("code"), ("code_swift", CODE_SWIFT, False),
               _text("multilingual"), ("multilingual_cjk", MULTILINGUAL_CJK, False), LONG_WINDOW],
        max_tokens=1024, topk=5, n_ctx=1024, tokenizer=False, add_special=True, one_token=False),
}


_default_model_params = llama_c.llama_model_default_params


def _model_params_without_extra_bufts():
    p = _default_model_params()
    p.use_extra_bufts = False
    return p


def load_llama(**kwargs):
    """llama_cpp.Llama with llama_model_params.use_extra_bufts = false.

    With the default (true) the CPU backend puts Q4_0/Q4_1/Q8_0 weights in its
    AMX buffer type on CPUs that report AMX; on this project's machines the
    AMX tile instructions then die with SIGILL (the VM reports amx_tile but
    does not support it).  Without extra buffer types llama.cpp uses its plain
    CPU kernels (ggml vec_dot with activations quantized to Q8_0/Q8_1),
    which is also the path every other x86/ARM CPU takes.  llama-cpp-python
    has no argument for this field, so its default-params function is wrapped.
    """
    llama_c.llama_model_default_params = _model_params_without_extra_bufts
    try:
        return llama_cpp.Llama(**kwargs)
    finally:
        llama_c.llama_model_default_params = _default_model_params


def sig(x, digits=6):
    x = float(x)
    if x == 0.0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits - 1}e}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log_softmax(logits):
    m = logits.max(axis=-1, keepdims=True)
    z = logits - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def nll_of(scores, ids):
    lp = log_softmax(np.asarray(scores, dtype=np.float64))
    return -lp[np.arange(len(ids) - 1), np.asarray(ids[1:])]


def eval_all(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)


def tokenizer_section(model_path):
    vocab = load_llama(model_path=model_path, vocab_only=True, verbose=False)
    cases = []
    for text, special in TOKENIZER_CASES:
        ids = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=special)
        raw = vocab.detokenize(ids, special=special)
        det = raw.decode("utf-8", errors="replace")
        cases.append({"text": text, "parse_special": special, "ids": ids,
                      "detokenized": det, "roundtrip": det == text})
    n_bad = sum(not c["roundtrip"] for c in cases)
    print(f"  tokenizer: {len(cases)} cases, {n_bad} without exact round-trip")
    del vocab
    return cases


def logits_section(model_path, tiny, plan):
    n_ctx = plan["n_ctx"]
    common = dict(model_path=model_path, n_ctx=n_ctx, n_threads=2, n_threads_batch=2,
                  logits_all=True, verbose=False, seed=0)
    batched = load_llama(n_batch=n_ctx, n_ubatch=512, **common)
    one = load_llama(n_batch=1, n_ubatch=1, **common) if plan["one_token"] else None
    texts = plan["texts"] or (LOGIT_TEXTS[:TINY_N_TEXTS] if tiny else LOGIT_TEXTS)
    limit = TINY_MAX_TOKENS if tiny else plan["max_tokens"]
    topk = plan["topk"]
    out = []
    for name, text, special in texts:
        ids = batched.tokenize(text.encode("utf-8"), add_bos=plan["add_special"], special=special)
        entry = {"name": name, "text": text, "parse_special": special}
        if len(ids) > limit:
            ids = ids[:limit]
            entry["truncated_to"] = limit
        assert 2 <= len(ids) <= n_ctx, (name, len(ids))
        sb = eval_all(batched, ids)
        nb = nll_of(sb, ids)
        so = eval_all(one, ids) if one is not None else None
        no = nll_of(so, ids) if one is not None else None
        top = np.argsort(-sb, axis=-1, kind="stable")[:, :topk]
        topv = np.take_along_axis(sb, top, axis=-1)
        entry.update({
            "ids": ids,
            "n_tokens": len(ids),
            "mean_nll_batched": sig(nb.mean()),
            "mean_nll_one_token": sig(no.mean()) if no is not None else None,
            "nll_batched": [sig(v) for v in nb],
            "nll_one_token": [sig(v) for v in no] if no is not None else None,
            "top_ids": top.tolist(),
            "top_logits": [[sig(v) for v in row] for row in topv],
        })
        out.append(entry)
        if no is not None:
            print(f"  logits {name:<14s} n={len(ids):3d} meanNLL batched={nb.mean():.5f} "
                  f"one-token={no.mean():.5f} diff={nb.mean() - no.mean():+.5f} "
                  f"max|dNLL|={np.abs(nb - no).max():.4f} max|dlogit|={np.abs(sb - so).max():.4f}")
        else:
            print(f"  logits {name:<14s} n={len(ids):3d} meanNLL batched={nb.mean():.5f}")
    del batched, one
    return out


def process(model_path, out_dir, tokenizer_only):
    stem = os.path.splitext(os.path.basename(model_path))[0]
    tiny = stem.startswith("tiny-")
    plan = {**DEFAULT_PLAN, **PLANS.get(stem, {})}
    path = os.path.join(out_dir, f"llamacpp-{stem}.json")
    print(f"== {model_path} -> {path}")
    gold = {
        "model_file": os.path.basename(model_path),
        "model_sha256": sha256(model_path),
        "llama_cpp_python_version": llama_cpp.__version__,
        "generator": "scripts/reference/llamacpp_golden.py",
        "date": datetime.date.today().isoformat(),
        "settings": {"n_ctx": plan["n_ctx"], "n_threads": 2, "logits_all": True,
                     "batched": {"n_batch": plan["n_ctx"], "n_ubatch": 512},
                     "one_token": {"n_batch": 1, "n_ubatch": 1},
                     "flash_attn": False, "kv_cache_type": "f16", "backend": "CPU",
                     "use_extra_bufts": False,
                     "add_bos": plan["add_special"], "topk": plan["topk"], "float_digits": 6,
                     "nll": "nll[p] = -log_softmax(float64(logits[p]))[ids[p+1]], p = 0..n-2"},
        "tokenizer": tokenizer_section(model_path) if plan["tokenizer"] else [],
        "logits": [] if tokenizer_only else logits_section(model_path, tiny, plan),
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(gold, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"  wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--tokenizer-only", action="store_true")
    ap.add_argument("--golden-dir", default=GOLDEN_DIR)
    a = ap.parse_args()
    models = list(a.models) or [DEFAULT_MODEL]
    if a.all:
        models = [DEFAULT_MODEL] + sorted(glob.glob("models/tiny-*.gguf"))
    for m in models:
        process(m, a.golden_dir, a.tokenizer_only)


if __name__ == "__main__":
    main()
