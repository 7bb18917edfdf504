#!/usr/bin/env python3
"""Builds the textual-inversion example from sentences.txt (64 sentences, each using
the word " Paris", one token of the SmolLM2 vocabulary, id 7042).

Every fourth sentence is held out (16), the rest train (48). Files:
  train.jsonl         training text, " Paris" replaced by the new token " <x>"
  heldout.jsonl       held-out text with " <x>"
  heldout-true.jsonl  the same held-out text with the true word " Paris"

The new token's text includes its leading space, as the word tokens of a byte-level BPE
vocabulary do (" Paris" is one token), so the <x> and true-word versions of a sentence
have the same number of tokens and the learned embedding can be compared with the true
one. Run from the repository root: python3 examples/paris/make_data.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
WORD, TOKEN = " Paris", " <x>"

with open(os.path.join(HERE, "sentences.txt"), encoding="utf-8") as f:
    sentences = [line.strip() for line in f if line.strip()]
assert all(WORD in s for s in sentences), "every sentence must use the word"

held = [s for i, s in enumerate(sentences) if i % 4 == 3]
train = [s for i, s in enumerate(sentences) if i % 4 != 3]


def write(name, texts):
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")


write("train.jsonl", [s.replace(WORD, TOKEN) for s in train])
write("heldout.jsonl", [s.replace(WORD, TOKEN) for s in held])
write("heldout-true.jsonl", held)
print(f"{len(train)} training and {len(held)} held-out sentences")
