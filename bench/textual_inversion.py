#!/usr/bin/env python3
"""Textual-inversion benchmark with a known answer (examples/paris).

The held-out sentences use " Paris", one token of the reference vocabulary; the training
copies replace it with the new token " <x>". Because the true embedding is known, the
benchmark reports, for each configuration:
  - held-out NLL with the true word, with the initial <x>, and with the learned <x>;
  - the fraction of that gap closed, after each evaluation (the curve) and at the end;
  - the cosine between the learned embedding and the true one (token_embd row of " Paris").

    python3 bench/textual_inversion.py [--steps 1000] [--config NAME ...] [--binary PATH]
                                       [--model PATH]

--model picks the file (default: the reference model, SmolLM2-135M Q4_1); the Gemma 3 270M
and Qwen2.5-Coder Q4_K_M files run the same task (" Paris" is one token of each
vocabulary; its id is looked up with `edge-finetune tokenize`).
Configurations are named in CONFIGS below; each is one `edge-finetune train` run.
Results go to runs/ti-bench/<model>/<name>.{gguf,jsonl,svg} and a table on stdout.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
EX = os.path.join(ROOT, "examples", "paris")

CONFIGS = {
    "spsa": [],                                   # the defaults: two-sided SPSA, ZO-SGD, lr 0.75, eps 1e-2 (units of the init row's RMS)
    "spsa-lr0.25": ["--lr", "0.25"],
    "spsa-mu0.5": ["--max-update", "0.5"],          # the defaults, no step moving the row by more than half its norm
    "subspace-project": ["--subspace", "project"],  # ZOODiP: project the estimate (tau 128, nu 1e-3)
    "subspace-perturb": ["--subspace", "perturb"],  # perturb inside the kept subspace
    # perturb along the top r principal directions of token_embd's rows (docs/notes/embedding-subspace.md)
    **{f"embeddings-{r}": ["--subspace", "embeddings", "--subspace-rank", str(r)] for r in (16, 32, 64, 128)},
    # Learning-rate schedules (docs/notes/lr-schedule.md).
    "cosine-w20": ["--warmup", "20", "--lr-schedule", "cosine"],
    "cosine-w20-lr1": ["--warmup", "20", "--lr-schedule", "cosine", "--lr", "1.0"],
    # QZO and the new token together: each set at its own default rate and eps, against the
    # one rate and eps of both sets before per-set rates (QZO's 3e-3 and 1e-3).
    "combined-per-set": ["--method", "qzo,textual-inversion", "--ddc", "1"],
    "combined-one-rate": ["--method", "qzo,textual-inversion", "--ddc", "1", "--lr", "3e-3", "--eps", "1e-3"],
}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def true_id(binary, model):
    ids = json.loads(run([binary, "tokenize", "--model", model, "--text", " Paris", "--json"]))["ids"]
    return ids[-1]  # after a BOS, when the vocabulary adds one


def true_embedding(model, token):
    reader = gguf.GGUFReader(model)
    t = next(t for t in reader.tensors if t.name == "token_embd.weight")
    rows = gguf.quants.dequantize(t.data, t.tensor_type)
    return rows[token].astype(np.float64)


def learned_embedding(adapter):
    reader = gguf.GGUFReader(adapter)
    t = next(t for t in reader.tensors if t.name == "textual_inversion.embedding")
    return np.array(t.data, dtype=np.float64).reshape(-1)


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--config", action="append", help="configurations to run (default: all)")
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "edge-finetune"))
    ap.add_argument("--model", default=MODEL, help="GGUF file (default: the reference model)")
    ap.add_argument("--extra", default="", help="extra flags for every run, e.g. '--seed 1'")
    ap.add_argument("--tag", default="", help="suffix of the output files' names, e.g. '-seed1'")
    ap.add_argument("--seeds", type=int, nargs="+", help="run every configuration with each seed (NAME-sN)")
    args = ap.parse_args()
    model = args.model
    out_dir = os.path.join(ROOT, "runs", "ti-bench", os.path.basename(model).removesuffix(".gguf"))
    os.makedirs(out_dir, exist_ok=True)

    true_nll = json.loads(run([args.binary, "eval", "--model", model, "--data",
                               os.path.join(EX, "heldout-true.jsonl"), "--json"]))["nll"]
    truth = true_embedding(model, true_id(args.binary, model))
    rows = []
    runs = [(name, name, []) for name in args.config or list(CONFIGS)]
    if args.seeds:
        runs = [(f"{name}-s{seed}", name, ["--seed", str(seed)]) for name, _, _ in runs for seed in args.seeds]
    for label, name, seed_flags in runs:
        prefix = os.path.join(out_dir, label + args.tag)
        cmd = [args.binary, "train", "--model", model, "--data", os.path.join(EX, "train.jsonl"),
               "--eval-data", os.path.join(EX, "heldout.jsonl"), "--new-token", " <x>",
               "--steps", str(args.steps), "--eval-every", str(args.eval_every),
               "--out", prefix + ".gguf", "--log-json", prefix + ".jsonl"] + CONFIGS[name] + seed_flags + args.extra.split()
        print("running:", " ".join(cmd), file=sys.stderr)
        run(cmd)
        log = [json.loads(l) for l in open(prefix + ".jsonl")]
        evals = [(r["step"], r["eval_nll"]) for r in log if "eval_nll" in r]
        initial = evals[0][1]
        gap = initial - true_nll
        curve = [(s, (initial - e) / gap) for s, e in evals]
        steps_run = [r for r in log if "seconds" in r]
        seconds = sum(r["seconds"] for r in steps_run)
        peak = max(r.get("peak_rss", 0) for r in log)
        final = evals[-1][1]
        rows.append((label, initial, final, curve, cosine(learned_embedding(prefix + ".gguf"), truth),
                     seconds / max(1, len(steps_run)), peak))

    print(f"{os.path.basename(model)}: held-out NLL with the true word ' Paris': {true_nll:.4f} nats")
    print(f"{'config':<22} {'initial':>8} {'learned':>8} {'gap closed':>10} {'cosine':>7} {'s/step':>7} {'peak RSS':>9}")
    for name, initial, final, curve, cos, sps, peak in rows:
        print(f"{name:<22} {initial:8.4f} {final:8.4f} {curve[-1][1]:10.1%} {cos:7.3f} {sps:7.3f} {peak/1e6:7.1f}MB")
    print("\ngap closed by step:")
    steps = [s for s, _ in rows[0][3]]
    marks = [s for s in steps if s in (0, 50, 100, 200, 300, 500, 750, 1000) or s == steps[-1]]
    marks = sorted(set(marks))
    print(f"{'config':<22} " + " ".join(f"{s:>6}" for s in marks))
    for name, _, _, curve, _, _, _ in rows:
        d = dict(curve)
        print(f"{name:<22} " + " ".join(f"{d.get(s, float('nan')):6.1%}" for s in marks))




if __name__ == "__main__":
    main()
