#!/usr/bin/env python3
"""edge-finetune vs llama.cpp on the same GGUF file and thread count.

Runs `edge-finetune bench --json` and a llama.cpp worker (llama-cpp-python, in a
separate process) ALTERNATELY for several rounds, then prints one table of medians
over all rounds and runs, with the ratio ours / llama.cpp:

  pp<N> all   prompt of N tokens with logits at every position (what a training or
              evaluation loss needs; ours also computes the NLL from them)
  pp<N> last  prompt of N tokens, logits of the last position only
  tg<G>       generation: G tokens decoded one at a time with a KV cache after a
              short prompt, greedy (argmax of the last logits)
  peak RSS    getrusage's ru_maxrss of each worker process

Both sides get the same pseudo-random token ids, (1 + 7919 i) mod vocab, one warm-up
run per workload, then --runs timed runs per round. Machine load swings timings by
30% or more; alternation puts both sides under the same conditions, and the ratio
within one invocation is the figure to quote.

llama.cpp is loaded as scripts/reference/llamacpp_golden.py's load_llama() does:
with use_extra_bufts = false. By default ggml puts Q4/Q8 weights in its AMX buffer
type on CPUs that report AMX, and on this project's VMs the AMX instructions fault
(SIGILL). Its kernels are then the plain CPU ones (AVX2/AVX-512 vec_dot with
activations quantized to 8 bits), the path every other x86 CPU takes.

This is a benchmark, not a test: nothing here asserts a timing.

Usage (from the repo root, after `swift build -c release`):
    python3 bench/compare_llamacpp.py [--model M] [--threads 2] [--rounds 3] [--runs 3]
        [--tokens 128,512] [--gen-tokens 64] [--binary .build/release/edge-finetune] [--baseline OTHER] [--json]
    python3 bench/compare_llamacpp.py --real     # the Qwen2.5-Coder 0.5B/1.5B and Gemma 3 270M files
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
# --real: the Q4_K_M files of the other architectures (scripts/setup --all fetches them).
REAL_MODELS = [os.path.join(ROOT, "models", f) for f in
               ("Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf", "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
                "gemma-3-270m.Q4_K_M.gguf")]
GEN_PROMPT = 16


def prompt_ids(count, vocab):
    return [(1 + i * 7919) % vocab for i in range(count)]


# ---------------------------------------------------------------------------
# llama.cpp worker (runs in its own process so its RSS is its own)

def llama_worker(args):
    sys.path.insert(0, os.path.join(ROOT, "scripts", "reference"))
    import numpy as np
    import llama_cpp
    from llamacpp_golden import load_llama  # use_extra_bufts = false (see module docstring)

    lengths = [int(t) for t in args.tokens.split(",")]
    n_ctx = max(max(lengths), GEN_PROMPT + args.gen_tokens) + 8
    llm = load_llama(model_path=args.model, n_ctx=n_ctx, n_batch=512, n_ubatch=512,
                     n_threads=args.threads, n_threads_batch=args.threads,
                     logits_all=True, verbose=False, seed=0)
    ctx = llm.ctx
    vocab = llama_cpp.llama_n_vocab(llama_cpp.llama_model_get_vocab(llm.model))
    memory = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(max(n_ctx, 512), 0, 1)

    def decode(ids, first_pos, all_logits):
        """One llama_decode of `ids` at positions first_pos..., as one sequence."""
        batch.n_tokens = len(ids)
        for i, t in enumerate(ids):
            batch.token[i] = t
            batch.pos[i] = first_pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if (all_logits or i == len(ids) - 1) else 0
        rc = llama_cpp.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        llama_cpp.llama_synchronize(ctx)

    def prompt(n, all_logits):
        ids = prompt_ids(n, vocab)

        def run():
            llama_cpp.llama_memory_clear(memory, True)
            decode(ids, 0, all_logits)
        return run

    gen_seconds = [0.0]

    def generation():
        ids = prompt_ids(GEN_PROMPT, vocab)

        def run():
            llama_cpp.llama_memory_clear(memory, True)
            decode(ids, 0, False)
            start = time.perf_counter()
            for i in range(args.gen_tokens):
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(vocab,))
                decode([int(logits.argmax())], GEN_PROMPT + i, False)
            gen_seconds[0] = time.perf_counter() - start
        return run

    results = []
    workloads = []
    for n in lengths:
        workloads.append((f"pp{n}_all", n, prompt(n, True), False))
        workloads.append((f"pp{n}_last", n, prompt(n, False), False))
    if args.gen_tokens > 0:
        workloads.append((f"tg{args.gen_tokens}", args.gen_tokens, generation(), True))
    for name, tokens, run, own in workloads:
        run()  # warm-up
        seconds = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            run()
            seconds.append(gen_seconds[0] if own else time.perf_counter() - t0)
        results.append({"name": name, "tokens": tokens, "seconds": seconds})
    llama_cpp.llama_batch_free(batch)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"results": results, "peak_rss_bytes": rss, "version": llama_cpp.__version__}))


# ---------------------------------------------------------------------------
# Driver

def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--real", action="store_true",
                   help="run the three real Q4_K_M files (Qwen2.5-Coder 0.5B and 1.5B, Gemma 3 270M) one after the other, "
                        "with --tokens 512 unless given")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per workload per round (default 3)")
    p.add_argument("--tokens", default="128,512", help="prompt lengths (default 128,512)")
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "edge-finetune"),
                   help="edge-finetune executable (default .build/release/edge-finetune)")
    p.add_argument("--baseline", default=None,
                   help="a second edge-finetune executable (e.g. a build of the previous commit), alternated with the "
                        "other two in every round, so before/after ratios come from the same run")
    p.add_argument("--json", action="store_true", help="print the medians as JSON")
    p.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.llama_worker:
        llama_worker(args)
        return
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("llama-cpp-python is not installed (pip install llama-cpp-python==0.3.36); nothing to compare")
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} not found; build it with `swift build -c release` or pass --binary")
    if args.real:
        if "--tokens" not in sys.argv:
            args.tokens = "512"
        for m in REAL_MODELS:
            if not os.path.exists(m):
                sys.exit(f"{m} not found; run scripts/setup --all")
        for m in REAL_MODELS:
            args.model = m
            compare(args)
            print()
    else:
        compare(args)


def compare(args):
    """One model: both sides alternately, then the table (or JSON)."""
    def bench_cmd(binary):
        return [binary, "bench", "--model", args.model, "--threads", str(args.threads),
                "--runs", str(args.runs), "--tokens", args.tokens, "--gen-tokens", str(args.gen_tokens),
                "--gen-prompt", str(GEN_PROMPT), "--no-training", "--json"]
    ours_cmd = bench_cmd(args.binary)
    theirs_cmd = [sys.executable, os.path.abspath(__file__), "--llama-worker", "--model", args.model,
                  "--threads", str(args.threads), "--runs", str(args.runs), "--tokens", args.tokens,
                  "--gen-tokens", str(args.gen_tokens)]

    sides = [("ours", ours_cmd), ("llama.cpp", theirs_cmd)]
    if args.baseline:
        sides.append(("baseline", bench_cmd(args.baseline)))
    samples = {side: {} for side, _ in sides}
    rss = {side: [] for side, _ in sides}
    tokens = {}
    for r in range(args.rounds):
        # Rotate which side goes first, so none always runs on a warmer machine.
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        for side, cmd in order:
            out = run_json(cmd)
            rss[side].append(out["peak_rss_bytes"])
            for res in out["results"]:
                tokens[res["name"]] = res["tokens"]
                samples[side].setdefault(res["name"], []).extend(res["seconds"])
            print(f"round {r + 1}/{args.rounds}: {side} done", file=sys.stderr)

    def tps(side, name):
        s = samples[side].get(name)
        return tokens[name] / statistics.median(s) if s else float("nan")

    names = [n for n in tokens if n in samples["ours"] and n in samples["llama.cpp"]]
    labels = {}
    for n in names:
        kind, _, which = n.partition("_")
        labels[n] = f"{kind} {'all logits' if which == 'all' else 'last logit' if which == 'last' else ''}".strip() + " (tok/s)"
    rows = []
    base = bool(args.baseline)
    for n in names:
        a, b = tps("ours", n), tps("llama.cpp", n)
        c = tps("baseline", n) if base else float("nan")
        rows.append((labels[n], a, b, a / b, c, c / b))
    ra, rb = statistics.median(rss["ours"]) / 1e6, statistics.median(rss["llama.cpp"]) / 1e6
    rc = statistics.median(rss["baseline"]) / 1e6 if base else float("nan")
    rows.append(("peak RSS (MB)", ra, rb, ra / rb, rc, rc / rb))

    if args.json:
        print(json.dumps({"threads": args.threads, "rounds": args.rounds, "runs": args.runs, "model": args.model,
                          "rows": [dict({"figure": r[0], "ours": r[1], "llama_cpp": r[2], "ratio": r[3]},
                                        **({"baseline": r[4], "baseline_ratio": r[5]} if base else {})) for r in rows]}))
        return
    print(f"model {os.path.basename(args.model)}, {args.threads} threads, {args.rounds} alternating rounds x "
          f"{args.runs} runs (medians of {args.rounds * args.runs} samples per figure)")
    w = max(len(r[0]) for r in rows)
    extra = f"  {'baseline':>9}  {'baseline/llama.cpp':>18}" if base else ""
    print(f"{'figure':<{w}}  {'edge-finetune':>13}  {'llama.cpp':>9}  {'ours/llama.cpp':>14}{extra}")
    for label, a, b, ratio, c, cratio in rows:
        more = f"  {c:>9.1f}  {cratio:>18.2f}" if base else ""
        print(f"{label:<{w}}  {a:>13.1f}  {b:>9.1f}  {ratio:>14.2f}{more}")


if __name__ == "__main__":
    main()
