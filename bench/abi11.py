#!/usr/bin/env python3
"""The ABI 1.1 plugins against ZO-SGD on the known-answer tasks, same forward-pass budget.

Each configuration is one `edge-finetune train` run with the task's defaults (learning
rate, epsilon, one two-sided direction per step: 2 forward passes; hizoo adds L(theta),
3 passes, so it runs 2/3 of the steps for the same budget and is reported at the step
that spends the same passes). Configurations run alternately, seed by seed, so that
the load of a shared machine falls on all of them alike; s/step is the mean over the
run's steps, and the plugin's memory is what it allocated through the host (the
`plugin memory` line of the run's summary).

    python3 bench/abi11.py --task qzo|ti|kquant [--steps 100] [--seeds 0 1 2] [--config NAME ...] [--extra '--batch 4']

  ti   textual inversion, examples/paris on SmolLM2-135M Q4_1: gap = held-out NLL with the
       initial <x> minus with the true word ' Paris'.
  qzo  QZO of the Q4_0 requantization of SmolLM2-135M Q4_1 (examples/qzo): gap = Q4_0's
       held-out NLL minus Q4_1's.
  kquant  QZO on a K-quant file: Gemma 3 270M Q4_K_M with its Q5_0 block tensors converted
       to Q4_0 by edge-finetune's quantizer (bench/qzo_kquants.py --from q5_0 --to q4_0's
       model), those tensors trained: gap = the converted file's held-out NLL minus the
       Q4_K_M file's.
--reuse takes a run whose log already holds its last step instead of running it again (the
same flags and seed give the same run bit for bit); it checks the step count only, not the
flags the log was made with, and its s/step is then that earlier run's.
Results go to runs/abi11/<task>/ and a table on stdout.
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release", "edge-finetune")
Q41 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

CONFIGS = {
    "zo-sgd": (["--optimizer", "zo-sgd"], 2),
    "mfac": (["--optimizer", "mfac"], 2),
    "mfac-damp10": (["--optimizer", "mfac", "--opt", "damp=10"], 2),
    # The window is m floats per value: 106 MB for QZO's 3.3 M scales at m = 8, over the default budget.
    "mfac-budget400M": (["--optimizer", "mfac", "--memory-budget", "400MB"], 2),
    "polargrad": (["--optimizer", "polargrad"], 2),
    # ||G||_* polar(G) is about min(rows, cols) times longer than G for a noise-dominated G.
    "polargrad-lr1e-4": (["--optimizer", "polargrad", "--lr", "1e-4"], 2),
    "lozo": (["--optimizer", "lozo"], 2),
    # Shared per-row factors: p = u 1^T, every value of a matrix row moved by one z.
    "lozo-rows": (["--optimizer", "lozo", "--opt", "row_shared=true"], 2),
    "hizoo": (["--optimizer", "hizoo"], 3),
    "hizoo-block64": (["--optimizer", "hizoo", "--opt", "block=64"], 3),
    # alpha 1e-8 (the default) leaves Sigma at 1 over a short run; 1e-3 lets it move.
    "hizoo-a1e-3": (["--optimizer", "hizoo", "--opt", "alpha=1e-3"], 3),
    "hizoo-a1e-3-block64": (["--optimizer", "hizoo", "--opt", "alpha=1e-3", "--opt", "block=64"], 3),
    # Sparse z: each direction perturbs round(f * T) of the T trained tensors, the update
    # divided by that share (unbiased). "-biased" leaves it undivided, which for ZO-SGD is
    # exactly the unbiased update at rate (k / T) * 3e-3 (QZO's 210 tensors: k = 53 at 0.25).
    "sparse-0.25": (["--optimizer", "zo-sgd", "--perturb-fraction", "0.25"], 2),
    "sparse-0.1": (["--optimizer", "zo-sgd", "--perturb-fraction", "0.1"], 2),
    "sparse-0.25-biased": (["--optimizer", "zo-sgd", "--perturb-fraction", "0.25", "--lr", str(3e-3 * 53 / 210)], 2),
}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout + r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["ti", "qzo", "kquant"], required=True)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", action="append")
    ap.add_argument("--report", action="store_true", help="only print a markdown table of the runs made so far")
    ap.add_argument("--tag", default="", help="a subdirectory for this invocation's runs")
    ap.add_argument("--extra", default="", help="extra flags for every run, e.g. '--batch 4'")
    ap.add_argument("--reuse", action="store_true", help="keep a finished run's log instead of running it again")
    args = ap.parse_args()
    if args.report:
        report(args.task)
        return
    out = os.path.join(ROOT, "runs", "abi11", args.task)
    if args.tag:
        out = os.path.join(out, args.tag)
    os.makedirs(out, exist_ok=True)

    if args.task == "ti":
        ex = os.path.join(ROOT, "examples", "paris")
        model = Q41
        target = json.loads(run([BIN, "eval", "--model", model, "--data", os.path.join(ex, "heldout-true.jsonl"), "--json"]))["nll"]
        base = [BIN, "train", "--model", model, "--data", os.path.join(ex, "train.jsonl"),
                "--eval-data", os.path.join(ex, "heldout.jsonl"), "--new-token", " <x>"]
    elif args.task == "kquant":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from qzo_kquants import converted_model
        ex = os.path.join(ROOT, "examples", "qzo")
        original = os.path.join(ROOT, "models", "gemma-3-270m.Q4_K_M.gguf")
        model = os.path.join(ROOT, "runs", "qzo-kquants", "gemma-3-270m.Q4_K_M-q5_0-to-q4_0.gguf")
        os.makedirs(os.path.dirname(model), exist_ok=True)
        tensors, _ = converted_model(original, "q5_0", "q4_0", model)
        target = json.loads(run([BIN, "eval", "--model", original, "--data", os.path.join(ex, "heldout.jsonl"), "--json"]))["nll"]
        base = [BIN, "train", "--method", "qzo", "--model", model, "--data", os.path.join(ex, "train.jsonl"),
                "--eval-data", os.path.join(ex, "heldout.jsonl"), "--tensors", tensors]
    else:
        ex = os.path.join(ROOT, "examples", "qzo")
        model = os.path.join(ROOT, "runs", "abi11", "qzo", "smollm2-q4_0.gguf")
        if not os.path.exists(model):
            run([BIN, "requantize", "--model", Q41, "--type", "q4_0", "--out", model])
        target = json.loads(run([BIN, "eval", "--model", Q41, "--data", os.path.join(ex, "heldout.jsonl"), "--json"]))["nll"]
        base = [BIN, "train", "--method", "qzo", "--model", model, "--data", os.path.join(ex, "train.jsonl"),
                "--eval-data", os.path.join(ex, "heldout.jsonl")]

    names = args.config or list(CONFIGS)
    results = {n: [] for n in names}
    for seed in args.seeds:
        for name in names:
            flags, passes = CONFIGS[name]
            steps = -(-args.steps * 2 // passes)
            prefix = os.path.join(out, f"{name}-s{seed}")
            every = args.eval_every * 2 // passes
            cmd = base + ["--steps", str(steps), "--eval-every", str(every), "--seed", str(seed),
                          "--out", prefix + ".gguf", "--log-json", prefix + ".jsonl"] + flags + args.extra.split()
            finished = lambda: any(json.loads(l).get("step") == steps for l in open(prefix + ".jsonl"))
            if args.reuse and os.path.exists(prefix + ".jsonl") and os.path.exists(prefix + ".txt") and finished():
                print("reusing:", prefix + ".jsonl", file=sys.stderr, flush=True)
                text = open(prefix + ".txt").read()
            else:
                print("running:", " ".join(cmd), file=sys.stderr, flush=True)
                text = run(cmd)
                with open(prefix + ".txt", "w") as f:
                    f.write(text)
            memory = re.search(r"plugin memory\s*[│|]?\s*(\d+) bytes", text)
            log = [json.loads(l) for l in open(prefix + ".jsonl")]
            evals = [(r["step"], r["eval_nll"]) for r in log if "eval_nll" in r]
            initial = evals[0][1]
            gap = initial - target
            # Keyed by the ZO-SGD step of the same forward passes, rounded to an evaluation mark.
            curve = {round(s * passes / 2 / args.eval_every) * args.eval_every: (initial - e) / gap for s, e in evals}
            seconds = [r["seconds"] for r in log if "seconds" in r]
            results[name].append((curve, sum(seconds) / max(1, len(seconds)), int(memory.group(1)) if memory else 0))
            json.dump({"curve": curve, "s_per_step": results[name][-1][1], "memory": results[name][-1][2]},
                      open(prefix + ".summary.json", "w"))

    marks = sorted({m for n in names for r in results[n] for m in r[0] if m > 0})
    print(f"task {args.task}: target NLL {target:.4f}; steps counted in ZO-SGD steps (2 forward passes each); "
          f"seeds {args.seeds}")
    print(f"{'config':<15} " + " ".join(f"{'@' + str(m):>16}" for m in marks) + f" {'s/step':>7} {'ratio':>6} {'memory':>10}")
    ref = sum(r[1] for r in results[names[0]]) / len(results[names[0]])
    for n in names:
        cells = []
        for m in marks:
            v = [r[0][m] for r in results[n] if m in r[0]]
            med = sorted(v)[len(v) // 2] if v else float("nan")
            cells.append(f"{' '.join(f'{x:.1%}' for x in v) + f' (med {med:.1%})':>16}")
        sps = sum(r[1] for r in results[n]) / len(results[n])
        print(f"{n:<15} " + " ".join(cells) + f" {sps:7.2f} {sps / ref:6.2f} {results[n][0][2]:>10}")


def report(task):
    """A markdown table of every finished run under runs/abi11/<task>/ (any tag).

    "vs zo-sgd" divides a run's seconds by those of the ZO-SGD runs made in the same
    directory (the same invocation, so under the same load); a configuration with a run that
    has no ZO-SGD beside it gets "–" there.
    """
    import glob
    rows = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "runs", "abi11", task, "**", "*.summary.json"), recursive=True)):
        name, seed = os.path.basename(path).removesuffix(".summary.json").rsplit("-s", 1)
        rows.setdefault(name, []).append((int(seed), json.load(open(path)), os.path.dirname(path)))
    ref = {}
    for _, r, where in rows.get("zo-sgd", []):
        ref.setdefault(where, []).append(r["s_per_step"])  # 2 passes a step
    marks = sorted({int(m) for v in rows.values() for _, r, _ in v for m in r["curve"] if int(m) > 0})
    print("| config | seeds | " + " | ".join(f"gap closed @{m}" for m in marks) + " | s per 2 passes | vs zo-sgd | plugin memory |")
    print("| --- | --- | " + " | ".join("---:" for _ in marks) + " | ---: | ---: | ---: |")
    order = [n for n in CONFIGS if n in rows]
    for name in order:
        v = sorted(rows[name], key=lambda x: x[0])
        cells = []
        for m in marks:
            xs = [r["curve"].get(str(m)) for _, r, _ in v]
            cells.append(" / ".join(f"{x:.1%}" if x is not None else "–" for x in xs))
        # Seconds per 2 forward passes' worth of step (hizoo's steps make 3).
        per_run = [r["s_per_step"] * 2 / CONFIGS[name][1] for _, r, _ in v]
        sps = sum(per_run) / len(per_run)
        if all(where in ref for _, _, where in v):
            ratios = [x / (sum(ref[where]) / len(ref[where])) for x, (_, _, where) in zip(per_run, v)]
            ratio = f"{sum(ratios) / len(ratios):.2f}"
        else:
            ratio = "–"
        print(f"| {name} | {','.join(str(s) for s, _, _ in v)} | " + " | ".join(cells)
              + f" | {sps:.2f} | {ratio} | {v[0][1]['memory']} B |")
    print("\n(vs zo-sgd: against the ZO-SGD runs of the same invocation only; – where a run had none beside it.)")


if __name__ == "__main__":
    main()
