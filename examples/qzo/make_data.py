#!/usr/bin/env python3
"""Builds the QZO example from paragraphs.txt (32 short paragraphs of plain English):
the first 24 train (train.jsonl), the last 8 are held out (heldout.jsonl).
Run from the repository root: python3 examples/qzo/make_data.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "paragraphs.txt"), encoding="utf-8") as f:
    paragraphs = [line.strip() for line in f if line.strip()]
for name, part in (("train.jsonl", paragraphs[:24]), ("heldout.jsonl", paragraphs[24:])):
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        for p in part:
            f.write(json.dumps({"text": p}, ensure_ascii=False) + "\n")
print(f"{min(24, len(paragraphs))} training and {max(0, len(paragraphs) - 24)} held-out paragraphs")
