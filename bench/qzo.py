#!/usr/bin/env python3
"""QZO benchmark with a known answer (examples/qzo).

The reference model (Q4_1) is requantized to Q4_0 with edge-finetune's quantizer (gguf-py's
rounding, bit for bit), which loses accuracy. QZO then trains only the Q4_0 model's block
scales, with forward passes, on 24 paragraphs; the 8 held-out paragraphs measure how much of
the Q4_1 -> Q4_0 loss it wins back:
  - held-out NLL of Q4_1, of the Q4_0 starting point, and of the QZO-tuned Q4_0;
  - the fraction of that NLL gap closed after each evaluation and at the end;
  - held-out KL divergence from the Q4_1 model's next-token distributions, before and after.
A run is split at --first steps (adapter and KL measured there) and resumed to --steps.

    python3 bench/qzo.py [--first 500] [--steps 2000] [--config NAME ...]

Results go to runs/qzo-bench/ and a table on stdout.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release", "edge-finetune")
Q41 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
EX = os.path.join(ROOT, "examples", "qzo")

CONFIGS = {
    "qzo": [],                            # defaults: relative lr 3e-3, eps 1e-3, clipping at C = 100
    "qzo-no-ddc": ["--ddc", "0"],
    "qzo-ddc1": ["--ddc", "1"],           # a bound the derivatives actually reach
    "qzo-lr1e-2": ["--lr", "1e-2"],
    "qzo-kl": ["--loss", "kl", "--teacher", Q41],  # distillation toward the Q4_1 model
    "qzo-kl-lr1e-2": ["--loss", "kl", "--teacher", Q41, "--lr", "1e-2"],
}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def evaluate(model, adapter=None):
    cmd = [BIN, "eval", "--model", model, "--data", os.path.join(EX, "heldout.jsonl"), "--json",
           "--reference-model", Q41]
    if adapter:
        cmd += ["--adapter", adapter]
    return json.loads(run(cmd))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--first", type=int, default=500)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--config", action="append")
    args = ap.parse_args()
    out = os.path.join(ROOT, "runs", "qzo-bench")
    os.makedirs(out, exist_ok=True)
    q40 = os.path.join(out, "smollm2-q4_0.gguf")
    run([BIN, "requantize", "--model", Q41, "--type", "q4_0", "--out", q40])

    base41 = evaluate(Q41)
    base40 = evaluate(q40)
    gap = base40["nll"] - base41["nll"]
    rows = []
    for name in args.config or list(CONFIGS):
        prefix = os.path.join(out, name)
        common = [BIN, "train", "--method", "qzo", "--model", q40, "--data", os.path.join(EX, "train.jsonl"),
                  "--eval-data", os.path.join(EX, "heldout.jsonl"), "--eval-every", str(args.eval_every),
                  "--checkpoint-dir", prefix + "-ckpt", "--checkpoint-every", str(args.first)] + CONFIGS[name]
        print("running", name, file=sys.stderr)
        run(common + ["--steps", str(args.first), "--out", prefix + f"-{args.first}.gguf", "--log-json", prefix + "-a.jsonl"])
        first = evaluate(q40, prefix + f"-{args.first}.gguf")
        last = first
        logs = ["-a.jsonl"]
        if args.steps > args.first:
            run(common + ["--steps", str(args.steps), "--resume", "--out", prefix + f"-{args.steps}.gguf",
                          "--log-json", prefix + "-b.jsonl"])
            last = evaluate(q40, prefix + f"-{args.steps}.gguf")
            logs.append("-b.jsonl")
        log = [json.loads(l) for f in logs for l in open(prefix + f)]
        curve = [(r["step"], (base40["nll"] - r["eval_nll"]) / gap) for r in log if "eval_nll" in r]
        ds = [abs(r["d"][0]) for r in log if "d" in r]
        seconds = [r["seconds"] for r in log if "seconds" in r]
        rows.append((name, first, last, curve, max(ds), sum(seconds) / len(seconds)))

    print(f"held-out NLL: Q4_1 {base41['nll']:.4f}, Q4_0 {base40['nll']:.4f} (gap {gap:.4f} nats); "
          f"KL(Q4_1 || Q4_0) {base40['kl']:.4f} nats")
    print(f"{'config':<18} {'NLL@' + str(args.first):>9} {'closed':>7} {'KL':>7} {'NLL@' + str(args.steps):>10} "
          f"{'closed':>7} {'KL':>7} {'max|d|':>7} {'s/step':>7}")
    for name, first, last, _, max_d, sps in rows:
        print(f"{name:<18} {first['nll']:9.4f} {(base40['nll'] - first['nll']) / gap:7.1%} {first['kl']:7.4f} "
              f"{last['nll']:10.4f} {(base40['nll'] - last['nll']) / gap:7.1%} {last['kl']:7.4f} {max_d:7.2f} {sps:7.2f}")
    print("\nNLL gap closed by step:")
    for name, _, _, curve, _, _ in rows:
        print(f"{name:<18} " + " ".join(f"{s}:{c:.0%}" for s, c in curve if s % 250 == 0 or s == curve[-1][0]))


if __name__ == "__main__":
    main()
