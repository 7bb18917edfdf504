#!/usr/bin/env python3
"""QZO on K-quants, with a known answer (examples/qzo).

A Q4_K_M file's K-quant tensors (Q4_K, Q6_K) are requantized to a coarser K-quant with
llama.cpp's own quantizer (llama-cpp-python's llama_model_quantize, requantization allowed;
by default its Q2_K recipe, which makes them Q3_K); every other tensor is kept as it is in
the Q4_K_M file, so the held-out NLL gap between the two files comes from the K-quants
alone. QZO then trains only those tensors' scales, with forward passes, on the 24 shipped
paragraphs, at each granularity (--kquant-scales super and sub) and with each loss (nll,
and kl toward the Q4_K_M file as teacher), and reports on the 8 held-out paragraphs:
  - the fraction of the held-out NLL gap to the Q4_K_M file closed, with the trained adapter
    (float scales) and with the exported GGUF (scales written back in the file's format);
  - the exported GGUF evaluated by llama.cpp itself, against our evaluation of it;
  - the KL divergence from the Q4_K_M file's next-token distributions, before and after.

    python3 bench/qzo_kquants.py [--model models/gemma-3-270m.Q4_K_M.gguf] [--recipe q2_k]
                                 [--steps 100] [--config NAME ...]

With --from q5_0 --to q4_0 the coarse model is instead the file with its Q5_0 block tensors
converted to Q4_0 by edge-finetune's own quantizer (gguf-py's rounding, `requantize`), and
QZO trains those Q4_0 tensors' block scales (one per 32 weights; the K-quant granularity
flag does not apply, so the configs are nll and kl).

Results go to runs/qzo-kquants/ and a table on stdout. Needs llama-cpp-python and gguf-py.
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release", "edge-finetune")
EX = os.path.join(ROOT, "examples", "qzo")
sys.path.insert(0, os.path.join(ROOT, "scripts", "reference"))

KQUANTS = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def coarse_model(original, recipe, out):
    """`original` with its K-quant tensors replaced by llama.cpp's `recipe` requantization of them."""
    import gguf
    import llama_cpp
    full = out + ".full"
    if not os.path.exists(full):
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + recipe.upper())
        params.allow_requantize = True
        params.nthread = 2
        if llama_cpp.llama_model_quantize(original.encode(), full.encode(), ctypes.byref(params)) != 0:
            sys.exit(f"llama_model_quantize failed for {recipe}")
    base = gguf.GGUFReader(original)
    requantized = {t.name: t for t in gguf.GGUFReader(full).tensors}
    arch = base.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(out, arch=arch, use_temp_file=False)
    for field in base.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(field.name, field.contents(), vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(field.name, field.contents(), vtype)
    changed = 0
    for t in base.tensors:
        src = t
        if t.tensor_type.name in KQUANTS and t.name.startswith("blk.") and requantized[t.name].tensor_type.name in KQUANTS:
            src = requantized[t.name]
            changed += 1
        w.add_tensor(src.name, np.asarray(src.data), raw_dtype=src.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return changed


def converted_model(original, source_type, target_type, out):
    """`original` with every block tensor of `source_type` converted to `target_type` by
    edge-finetune's quantizer; returns the converted tensors' names, comma-separated (as
    --tensors patterns: only they are trained) and a short description of them."""
    import gguf
    names = [t.name for t in gguf.GGUFReader(original).tensors
             if t.name.startswith("blk.") and t.tensor_type.name == source_type.upper()]
    kinds = sorted({n.split(".", 2)[2] for n in names})
    if not os.path.exists(out):
        # Exact names: a pattern such as blk.*.attn_v.weight would also match tensors of other types.
        run([BIN, "requantize", "--model", original, "--type", target_type, "--tensors", ",".join(names), "--out", out])
    return ",".join(names), f"{len(names)} tensors: " + ", ".join(kinds)


def evaluate(model, reference, adapter=None):
    cmd = [BIN, "eval", "--model", model, "--data", os.path.join(EX, "heldout.jsonl"), "--json", "--reference-model", reference]
    if adapter:
        cmd += ["--adapter", adapter]
    return json.loads(run(cmd))


def llamacpp_nll(model):
    """llama.cpp's mean next-token NLL on the held-out paragraphs (BOS added, as ours)."""
    from llamacpp_golden import load_llama
    texts = [json.loads(l)["text"] for l in open(os.path.join(EX, "heldout.jsonl"), encoding="utf-8") if l.strip()]
    llm = load_llama(model_path=model, n_ctx=512, n_batch=512, n_threads=2, logits_all=True, verbose=False)
    total, count = 0.0, 0
    for text in texts:
        ids = llm.tokenize(text.encode(), add_bos=True, special=True)
        llm.reset()
        llm.eval(ids)
        x = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
        m = x.max(axis=-1, keepdims=True)
        lp = x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
        total -= sum(lp[i, ids[i + 1]] for i in range(len(ids) - 1))
        count += len(ids) - 1
    del llm
    return total / count


def main():
    global BIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "gemma-3-270m.Q4_K_M.gguf"))
    ap.add_argument("--recipe", default="q2_k", help="llama.cpp file type whose K-quant tensors replace the model's (q2_k, q3_k_m, ...)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--config", action="append", help="super, sub, super-kl, sub-kl; with --from/--to: nll, kl (default: all)")
    ap.add_argument("--extra", default="", help="more train flags, space-separated")
    ap.add_argument("--no-llamacpp", action="store_true")
    ap.add_argument("--binary", default=BIN)
    ap.add_argument("--from", dest="source", help="instead of the K-quant recipe: convert the block tensors of this type (e.g. q5_0) ...")
    ap.add_argument("--to", dest="target", help="... to this type (e.g. q4_0), with edge-finetune's quantizer")
    args = ap.parse_args()
    BIN = args.binary
    out = os.path.join(ROOT, "runs", "qzo-kquants")
    os.makedirs(out, exist_ok=True)
    stem = os.path.basename(args.model).replace(".gguf", "")
    if args.source and args.target:
        label = f"{args.source}-to-{args.target}"
        coarse = os.path.join(out, f"{stem}-{label}.gguf")
        patterns, described = converted_model(args.model, args.source, args.target, coarse)
        what = f"{args.source.upper()} block tensors converted to {args.target.upper()} by edge-finetune's quantizer"
        print(f"trained tensors: {described}", file=sys.stderr)
    else:
        label = args.recipe
        coarse = os.path.join(out, f"{stem}-{args.recipe}-kquants.gguf")
        what = f"K-quant tensors requantized by llama.cpp's {args.recipe} recipe"
        if not os.path.exists(coarse):
            n = coarse_model(args.model, args.recipe, coarse)
            print(f"{coarse}: {n} K-quant tensors requantized by llama.cpp's {args.recipe} recipe", file=sys.stderr)

        import gguf
        types = {}
        for t in gguf.GGUFReader(coarse).tensors:
            if t.name.startswith("blk.") and t.tensor_type.name in KQUANTS:
                kind = t.name.split(".", 2)[2]
                types.setdefault(kind, set()).add(t.tensor_type.name)
        patterns = described = ",".join(f"blk.*.{k}" for k in sorted(types))
        print(f"trained tensors: {patterns} ({', '.join(f'{k}: {sorted(v)}' for k, v in sorted(types.items()))})", file=sys.stderr)

    base_ref = evaluate(args.model, args.model)
    base = evaluate(coarse, args.model)
    gap = base["nll"] - base_ref["nll"]
    configs = {
        "nll": [],
        "kl": ["--loss", "kl", "--teacher", args.model],
    } if args.source else {
        "super": ["--kquant-scales", "super"],
        "sub": ["--kquant-scales", "sub"],
        "super-kl": ["--kquant-scales", "super", "--loss", "kl", "--teacher", args.model],
        "sub-kl": ["--kquant-scales", "sub", "--loss", "kl", "--teacher", args.model],
    }
    llama_base = None if args.no_llamacpp else llamacpp_nll(coarse)
    rows = []
    for name in args.config or list(configs):
        prefix = os.path.join(out, f"{stem}-{label}-{name}-{args.steps}")
        print("running", name, file=sys.stderr)
        started = time.time()
        run([BIN, "train", "--method", "qzo", "--model", coarse, "--data", os.path.join(EX, "train.jsonl"),
             "--eval-data", os.path.join(EX, "heldout.jsonl"), "--eval-every", str(args.eval_every), "--tensors", patterns,
             "--steps", str(args.steps), "--out", prefix + ".gguf", "--log-json", prefix + ".jsonl"]
            + configs[name] + args.extra.split())
        seconds = time.time() - started
        log = [json.loads(l) for l in open(prefix + ".jsonl")]
        step_seconds = [r["seconds"] for r in log if "seconds" in r]
        trained = evaluate(coarse, args.model, prefix + ".gguf")
        run([BIN, "export", "--model", coarse, "--adapter", prefix + ".gguf", "--out", prefix + "-export.gguf"])
        exported = evaluate(prefix + "-export.gguf", args.model)
        theirs = None if args.no_llamacpp else llamacpp_nll(prefix + "-export.gguf")
        rows.append((name, trained, exported, theirs, sum(step_seconds) / max(1, len(step_seconds)), seconds))
        os.remove(prefix + "-export.gguf")

    print(f"{stem}, {what} ({described}); {args.steps} steps, "
          f"batch 8, train flags: defaults {args.extra}")
    print(f"held-out NLL: original {base_ref['nll']:.4f}, coarse {base['nll']:.4f} (gap {gap:.4f} nats); "
          f"KL(original || coarse) {base['kl']:.4f} nats" + ("" if llama_base is None else f"; llama.cpp on the coarse file {llama_base:.4f}"))
    print(f"{'config':<9} {'NLL':>7} {'closed':>7} {'KL':>7} | {'export':>7} {'closed':>7} {'KL':>7} | {'llama.cpp':>9} {'diff':>7} | {'s/step':>6}")
    for name, t, e, theirs, sps, _ in rows:
        lc = "" if theirs is None else f"{theirs:9.4f} {theirs - e['nll']:+7.4f}"
        print(f"{name:<9} {t['nll']:7.4f} {(base['nll'] - t['nll']) / gap:7.1%} {t['kl']:7.4f} | {e['nll']:7.4f} "
              f"{(base['nll'] - e['nll']) / gap:7.1%} {e['kl']:7.4f} | {lc:>17} | {sps:6.2f}")


if __name__ == "__main__":
    main()
