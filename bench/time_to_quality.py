#!/usr/bin/env python3
"""Time to quality: edge-finetune against the first-order reference, alternately in one run.

For each task and seed it runs `edge-finetune train` (ours, the defaults) and
bench/first_order.py --method adam (PyTorch, float32, autograd) one after the other, and
reads both logs: held-out NLL at each evaluation, wall seconds of the steps so far, peak
RSS. It prints, per side, the wall time and forward passes to 50% and to 90% of the
held-out gap, the peak RSS, and ours / first-order ratios; medians and spread (min-max)
over the seeds.

Tasks:
  ti   textual inversion, examples/paris on the reference model: the gap is the held-out
       NLL with the initial <x> minus that with the true word " Paris";
  qzo  the reference model requantized Q4_1 -> Q4_0, block scales trained on
       examples/qzo: the gap is the Q4_0 held-out NLL minus the Q4_1 one.

Forward passes: ours counts its points (two-sided SPSA: 2q forward passes of the batch a
step with --directions q, one-sided q + 1, read from --ours-extra; a plugin that also asks
for L(theta) is not counted); the first-order step counts as 3 (a forward and a backward,
the backward counted as two forward passes, the usual estimate). Wall time is the training steps' own time,
evaluations included on both sides (each side's log times its steps with their evaluations;
model loading is left out). The machine is shared: name the CPU and load with every figure.

    python3 bench/time_to_quality.py [--task ti --task qzo] [--seeds 0 1 2]
        [--ours-steps 300] [--fo-steps 50] [--eval-every 10] [--fo-eval-every 2] [--fo-lr 0.3]
        [--ours-extra=--share-prefix --tag share] [--reuse-fo]

--ours-extra adds train flags to our side (its logs then go under --tag); --reuse-fo takes
the first-order log of the same task and seed from an earlier run instead of running the
peer again (it does not check that run's --fo-lr or --fo-steps; say so with the figures: the
two sides then did not alternate).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release", "edge-finetune")
Q41 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
FO = os.path.join(ROOT, "bench", "first_order.py")
OUT = os.path.join(ROOT, "runs", "time-to-quality")


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return r.stdout


def nll(model, data, adapter=None):
    cmd = [BIN, "eval", "--model", model, "--data", data, "--json"]
    return json.loads(run(cmd + (["--adapter", adapter] if adapter else [])))["nll"]


def task_setup(task):
    if task == "ti":
        ex = os.path.join(ROOT, "examples", "paris")
        true = nll(Q41, os.path.join(ex, "heldout-true.jsonl"))
        ours = ["--method", "textual-inversion", "--model", Q41, "--new-token", " <x>",
                "--data", os.path.join(ex, "train.jsonl"), "--eval-data", os.path.join(ex, "heldout.jsonl")]
        return true, ours, ["--task", "ti"]
    q40 = os.path.join(ROOT, "runs", "qzo-bench", "smollm2-q4_0.gguf")
    if not os.path.exists(q40):
        os.makedirs(os.path.dirname(q40), exist_ok=True)
        run([BIN, "requantize", "--model", Q41, "--type", "q4_0", "--out", q40])
    ex = os.path.join(ROOT, "examples", "qzo")
    target = nll(Q41, os.path.join(ex, "heldout.jsonl"))
    ours = ["--method", "qzo", "--model", q40, "--data", os.path.join(ex, "train.jsonl"),
            "--eval-data", os.path.join(ex, "heldout.jsonl")]
    return target, ours, ["--task", "qzo", "--model", q40]


def curve_ours(log):
    """(step, cumulative seconds, held-out NLL) at each evaluation, and the peak RSS in MB."""
    out, t, peak = [], 0.0, 0.0
    for r in log:
        if "seconds" in r:
            t += r["seconds"]
            peak = max(peak, r.get("peak_rss", 0) / 1e6)
        if "eval_nll" in r:
            out.append((int(r["step"]), t, r["eval_nll"]))
    return out, peak


def curve_fo(log):
    out, peak = [], 0.0
    for r in log:
        peak = max(peak, r.get("peak_rss_mb", 0))
        if "eval_nll" in r:
            out.append((int(r["step"]), r["seconds"], r["eval_nll"]))
    return out, peak


def reach(curve, start, target, fraction):
    """(step, seconds) of the first evaluation that closes `fraction` of the gap, or None."""
    for step, seconds, e in curve:
        if (start - e) / (start - target) >= fraction:
            return step, seconds
    return None


def ours_passes(extra):
    """Forward passes of the batch in one of our steps: 2q two-sided, q + 1 one-sided."""
    flags = [part for flag in extra.split() for part in flag.split("=", 1)]
    value = lambda name, default: flags[flags.index(name) + 1] if name in flags else default
    q = int(value("--directions", "1"))
    return q + 1 if value("--estimator", "two-sided") == "one-sided" else 2 * q


def summarize(results, ours, ours_peak, fo, fo_peak, target, passes_per_step):
    start = ours[0][2]
    for side, curve, peak, passes in (("ours", ours, ours_peak, passes_per_step), ("first-order", fo, fo_peak, 3)):
        r50, r90 = reach(curve, start, target, 0.5), reach(curve, start, target, 0.9)
        results[side].append({"t50": r50 and r50[1], "t90": r90 and r90[1],
                              "f50": r50 and r50[0] * passes, "f90": r90 and r90[0] * passes,
                              "peak": peak, "final": (start - curve[-1][2]) / (start - target),
                              "steps": curve[-1][0]})


def fmt(values, unit=""):
    v = [x for x in values if x is not None]
    if not v:
        return "not reached"
    s = f"{statistics.median(v):.3g}{unit}"
    if len(v) > 1:
        s += f" ({min(v):.3g}-{max(v):.3g})"
    if len(v) < len(values):
        s += f" [{len(values) - len(v)} of {len(values)} not reached]"
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", action="append", choices=["ti", "qzo"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ours-steps", type=int, default=300)
    ap.add_argument("--fo-steps", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--fo-eval-every", type=int, help="the first-order side's evaluation period (default: --eval-every, at most 2)")
    ap.add_argument("--fo-lr", type=float, help="first-order Adam learning rate (default: first_order.py's)")
    ap.add_argument("--ours-extra", default="", help="more train flags for our side, space-separated (--ours-extra=--share-prefix)")
    ap.add_argument("--tag", default="", help="a name in our side's log files (for runs with --ours-extra)")
    ap.add_argument("--reuse-fo", action="store_true",
                    help="take the first-order log of the same task and seed from an earlier run")
    ap.add_argument("--from-logs", action="store_true",
                    help="only summarize the logs already in runs/time-to-quality (e.g. of an interrupted run)")
    args = ap.parse_args()
    if args.ours_extra and not args.tag:
        sys.exit("--ours-extra needs --tag, so that its logs do not replace those of the defaults")
    os.makedirs(OUT, exist_ok=True)
    for task in args.task or ["ti", "qzo"]:
        target, ours_flags, fo_flags = task_setup(task)
        results = {"ours": [], "first-order": []}
        for seed in args.seeds:
            prefix = os.path.join(OUT, f"{task}-seed{seed}")
            ours_log = prefix + (f"-{args.tag}" if args.tag else "") + "-ours"
            if args.from_logs:
                ours, ours_peak = curve_ours([json.loads(l) for l in open(ours_log + ".jsonl")])
                fo, fo_peak = curve_fo([json.loads(l) for l in open(prefix + "-fo.jsonl")])
                summarize(results, ours, ours_peak, fo, fo_peak, target, ours_passes(args.ours_extra))
                continue
            # Alternately: ours, then the reference, for each seed.
            cmd = [BIN, "train"] + ours_flags + ["--steps", str(args.ours_steps), "--eval-every", str(args.eval_every),
                                                 "--seed", str(seed), "--out", ours_log + ".gguf",
                                                 "--log-json", ours_log + ".jsonl"] + args.ours_extra.split()
            print("running:", " ".join(cmd), file=sys.stderr)
            run(cmd)
            ours, ours_peak = curve_ours([json.loads(l) for l in open(ours_log + ".jsonl")])
            cmd = [sys.executable, FO] + fo_flags + ["--method", "adam", "--steps", str(args.fo_steps),
                                                    "--eval-every", str(args.fo_eval_every or min(args.eval_every, 2)), "--seed", str(seed),
                                                    "--log-json", prefix + "-fo.jsonl"]
            if args.fo_lr:
                cmd += ["--lr", str(args.fo_lr)]
            if args.reuse_fo and os.path.exists(prefix + "-fo.jsonl"):
                print("reusing:", prefix + "-fo.jsonl", file=sys.stderr)
            else:
                print("running:", " ".join(cmd), file=sys.stderr)
                run(cmd)
            fo, fo_peak = curve_fo([json.loads(l) for l in open(prefix + "-fo.jsonl")])
            summarize(results, ours, ours_peak, fo, fo_peak, target, ours_passes(args.ours_extra))
        steps = lambda side: "/".join(str(r["steps"]) for r in results[side])
        print(f"\n{task}: target held-out NLL {target:.4f}; seeds {args.seeds}; ours {steps('ours')} steps, "
              f"first-order {steps('first-order')} steps")
        print(f"{'':<12} {'s to 50%':>22} {'s to 90%':>22} {'passes to 50%':>20} {'passes to 90%':>20} {'peak RSS MB':>14} {'closed at end':>16}")
        for side, rs in results.items():
            print(f"{side:<12} {fmt([r['t50'] for r in rs]):>22} {fmt([r['t90'] for r in rs]):>22} "
                  f"{fmt([r['f50'] for r in rs]):>20} {fmt([r['f90'] for r in rs]):>20} "
                  f"{fmt([r['peak'] for r in rs]):>14} {fmt([100 * r['final'] for r in rs], '%'):>16}")
        ratios = []
        for key in ("t50", "t90", "f50", "f90", "peak"):
            pairs = [(o[key], f[key]) for o, f in zip(results["ours"], results["first-order"])]
            ratios.append((key, [o / f if o is not None and f else None for o, f in pairs]))
        print("ours / first-order: " + ", ".join(f"{k} {fmt(v)}" for k, v in ratios))
        with open(os.path.join(OUT, f"{task}{'-' + args.tag if args.tag else ''}-results.json"), "w") as f:
            json.dump({"target": target, "seeds": args.seeds, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
