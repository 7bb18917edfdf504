#!/usr/bin/env python3
"""Checks that llama.cpp (through llama-cpp-python) loads a model exported by
`edge-finetune export` and agrees with EdgeFinetune on it:
  - the token ids of every example are identical (new tokens included);
  - each --new-token is one token for llama.cpp, one of the vocabulary's last ids, and
    appears in the data's ids (so the held-out NLL below scores it);
  - llama.cpp's mean next-token NLL over the data matches `edge-finetune eval` within
    the inference tolerance (0.06 nats, the bound of the golden tests against llama.cpp).

    python3 scripts/check_export_llamacpp.py EXPORTED.gguf DATA.jsonl [--binary PATH] [--new-token TEXT ...]

Needs llama-cpp-python (pip install llama-cpp-python; it builds llama.cpp from source).
Exit status 0 when both checks pass.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts", "reference"))
from llamacpp_golden import load_llama  # noqa: E402  (disables the AMX buffers that crash on some VMs)

TOLERANCE = 0.06


def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "edge-finetune"))
    ap.add_argument("--new-token", action="append", default=[], help="a token the export added (repeatable)")
    args = ap.parse_args()

    texts = [json.loads(l)["text"] for l in open(args.data, encoding="utf-8") if l.strip()]
    llm = load_llama(model_path=args.model, n_ctx=512, n_batch=512, n_threads=2, logits_all=True, verbose=False)

    ok = True
    new_ids = []
    n_vocab = llm.n_vocab()
    for token in args.new_token:
        ids = llm.tokenize(token.encode(), add_bos=False, special=False)
        if len(ids) != 1 or ids[0] < n_vocab - len(args.new_token):
            print(f"new token {token!r}: llama.cpp gives {ids}, not one of the last {len(args.new_token)} ids of {n_vocab}")
            ok = False
        new_ids += ids
    seen_new = set()
    total, count = 0.0, 0
    for text in texts:
        ids = llm.tokenize(text.encode(), add_bos=True, special=True)
        ours = json.loads(subprocess.run([args.binary, "tokenize", "--model", args.model, "--text", text, "--json"],
                                         capture_output=True, text=True, check=True).stdout)["ids"]
        seen_new |= set(ids) & set(new_ids)
        if ours != ids:
            print(f"token ids differ for {text!r}:\n  llama.cpp {ids}\n  ours      {ours}")
            ok = False
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
        lp = log_softmax(logits)
        for i in range(len(ids) - 1):
            total -= lp[i, ids[i + 1]]
            count += 1
    if args.new_token:
        print(f"new tokens {args.new_token}: ids {new_ids} for llama.cpp; {len(seen_new)} of them used in the data")
        if len(seen_new) != len(set(new_ids)):
            ok = False
    theirs = total / count
    ours = json.loads(subprocess.run([args.binary, "eval", "--model", args.model, "--data", args.data, "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    diff = abs(theirs - ours["nll"])
    print(f"llama.cpp NLL {theirs:.4f} over {count} tokens; edge-finetune {ours['nll']:.4f} over {ours['tokens']}; "
          f"difference {diff:.4f} (tolerance {TOLERANCE})")
    if ours["tokens"] != count or diff > TOLERANCE:
        ok = False
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
