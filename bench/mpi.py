#!/usr/bin/env python3
"""Data-parallel training over MPI: what splitting a step across ranks costs.

On the reference model, for textual inversion and for QZO, alternating in the same run:
  - 1 rank x 2 threads (one process, no mpirun) and 2 ranks x 1 thread (mpirun -np 2),
    the same global batch and micro-batch size, so both give the same adapter (checked),
    and 1 rank x 2 threads with the whole batch in one pass (the default without mpirun);
  - steps per second (median of the per-step times of --log-json, the first step left out);
  - bytes each rank sends per step (counted at the buffers: payloads, not MPI's headers) and
    the time rank 0 spends in the exchange per step (waiting for the slower rank included);
  - CPU seconds per step of each side (all threads and ranks), which a loaded machine
    distorts less than wall time;
  - a projected speed-up for N machines, each one micro-batch per step: the measured
    compute per micro-batch against that plus the exchange over a LAN with the latency and
    bandwidth given (--lan-latency-us, --lan-mbps).

    python3 bench/mpi.py [--steps 8] [--rounds 3] [--batch 8] [--micro-batch 4]

Needs Open MPI (scripts/setup installs it). Not a test: timings on a shared machine are noisy.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release", "edge-finetune")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

METHODS = {
    "textual inversion": ["--data", os.path.join(ROOT, "examples", "paris", "train.jsonl"), "--new-token", " <x>"],
    "QZO": ["--method", "qzo", "--data", os.path.join(ROOT, "examples", "qzo", "train.jsonl")],
}

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_btl_vader_single_copy_mechanism="none")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f", {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return platform.processor()


def train(method, ranks, threads, args, out, micro=None):
    log = out + ".jsonl"
    cmd = [BIN, "train", "--model", MODEL] + METHODS[method] + [
        "--steps", str(args.steps), "--batch", str(args.batch), "--micro-batch", str(micro or args.micro_batch),
        "--threads", str(threads), "--out", out, "--log-json", log]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + cmd
    before = os.times()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    after = os.times()
    # CPU seconds of the process and its ranks (mpirun waits for them), start-up included.
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    steps = [json.loads(line) for line in open(log) if '"loss"' in line]
    seconds = statistics.median(s["seconds"] for s in steps[1:])
    sent, exchange = 0, 0.0
    for line in r.stdout.splitlines():
        if "bytes sent per step" in line:
            # "ranks  2, 66 bytes sent per step by rank 0, 0.4 ms per step in the exchange"
            parts = line.split(",")
            sent = int(parts[1].split()[0])
            exchange = float(parts[2].split()[0]) / 1e3
    with open(out, "rb") as f:
        adapter = f.read()
    return seconds, sent, exchange, adapter, cpu / args.steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--lan-latency-us", type=float, default=200.0, help="one message's latency on the LAN")
    ap.add_argument("--lan-mbps", type=float, default=1000.0, help="LAN bandwidth in Mbit/s")
    ap.add_argument("--method", action="append", choices=list(METHODS))
    args = ap.parse_args()
    if not os.path.exists(MODEL):
        sys.exit(f"{MODEL} is missing: run scripts/setup")
    tmp = tempfile.mkdtemp(prefix="mpi-bench-")
    print(f"CPU: {cpu_name()}; batch {args.batch} in micro-batches of {args.micro_batch}, {args.steps} steps, {args.rounds} rounds\n")
    rows, cpus = [], []
    for method in args.method or list(METHODS):
        one, whole, two, sent, exchange, same = [], [], [], 0, [], True
        cpu = {"one": [], "two": [], "whole": []}
        for round_ in range(args.rounds):
            # Rotate the order so that no side always runs first on a loaded machine.
            sides = [("one", 1, 2, None), ("two", 2, 1, None), ("whole", 1, 2, args.batch)]
            sides = sides[round_ % 3:] + sides[:round_ % 3]
            adapters = {}
            for name, ranks, threads, micro in sides:
                s, b, e, a, c = train(method, ranks, threads, args, os.path.join(tmp, f"{method[:3]}-{name}-{round_}.gguf"), micro)
                adapters[name] = a
                cpu[name].append(c)
                {"one": one, "two": two, "whole": whole}[name].append(s)
                if name == "two":
                    sent = b
                    exchange.append(e)
            same = same and adapters["one"] == adapters["two"]
        t1, t2, tw = statistics.median(one), statistics.median(two), statistics.median(whole)
        ex = statistics.median(exchange)
        rows.append((method, t1, t2, tw, sent, ex, same))
        cpus.append((method, *(statistics.median(cpu[k]) for k in ("one", "two", "whole"))))

    print(f"| method | 1 rank x 2 threads, micro-batches of {args.micro_batch} | 2 ranks x 1 thread | 2x1 / 1x2 | "
          f"1 rank x 2 threads, one pass of {args.batch} | 2x1 / that | bytes sent per step per rank | exchange per step (rank 0) | same adapter as 1x2 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, t1, t2, tw, sent, ex, same in rows:
        print(f"| {method} | {1 / t1:.3f} steps/s | {1 / t2:.3f} steps/s | {t1 / t2:.3f} | {1 / tw:.3f} steps/s | {tw / t2:.3f} | "
              f"{sent} | {ex * 1e3:.2f} ms | {'yes' if same else 'NO'} |")

    print("\nCPU seconds per step (all threads and ranks, start-up included; medians): the cost of splitting whatever share of the")
    print("machine the run got:")
    print("| method | 1 rank x 2 threads, micro-batches | 2 ranks x 1 thread | 1 rank x 2 threads, one pass |")
    print("| --- | --- | --- | --- |")
    for method, c1, c2, cw in cpus:
        print(f"| {method} | {c1:.2f} | {c2:.2f} | {cw:.2f} |")

    # Projection: N machines of this kind, each with one rank of 2 threads and one micro-batch
    # of --micro-batch examples per step (the global batch grows with N). A rank's compute per
    # step is what one machine takes for one micro-batch (t1 / units); the exchange sends one
    # message of 1 + 16 * points bytes to each of the N-1 others, over the LAN given. The
    # speed-up is in examples per second against one machine.
    units = -(-args.batch // args.micro_batch)
    print(f"\nProjected speed-up in examples/s for N machines, each one micro-batch of {args.micro_batch} per step "
          f"({args.lan_latency_us:.0f} us per message, {args.lan_mbps:.0f} Mbit/s):")
    print("| method | " + " | ".join(f"N = {n}" for n in (2, 4, 8, 16, 64)) + " |")
    print("| --- |" + " --- |" * 5)
    for method, t1, t2, tw, sent, ex, same in rows:
        per_slot = (sent - 1) / -(-units // 2)
        compute = t1 / units
        cells = []
        for n in (2, 4, 8, 16, 64):
            comm = (n - 1) * (args.lan_latency_us * 1e-6 + (1 + per_slot) * 8 / (args.lan_mbps * 1e6))
            cells.append(f"{n * compute / (compute + comm):.1f}x")
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
