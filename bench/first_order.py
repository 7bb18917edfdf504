#!/usr/bin/env python3
"""First-order (and zeroth-order) reference for edge-finetune's training tasks, in PyTorch on CPU.

The model is dequantized from the same GGUF file with gguf-py and run in float32 (llama
architecture: the reference model SmolLM2-135M); the forward pass is written here from
llama.cpp's conventions (see scripts/reference/float64_forward.py) and shares no code with
the Swift runtime. Three tasks:

  qzo      the block scales of a Q4_0 file (d = d0 * r, r starting at 1, the 4-bit codes
           fixed), trained on examples/qzo/train.jsonl, held-out NLL on heldout.jsonl;
  ti       textual inversion on examples/paris: a new token " <x>" whose embedding row
           (tied output row) starts at " the" and is trained; held-out NLL with the true
           word known.

and three optimizers:

  adam     first order: autograd, Adam (the peer a user would otherwise pick);
  zo       zeroth order with edge-finetune's exact update rule: the same batches (epochs of
           seeded shuffles), the same direction seeds and the same z (Philox4x32-10 and
           Box-Muller, Sources/ZerothOrder/Perturbation.swift), two-sided SPSA
           d = (L(r + eps z) - L(r - eps z)) / (2 eps), clipped at C, r <- r - lr d z,
           r >= 0.05 (QZO); for textual inversion theta = rho * phi with rho the init row's
           RMS, phi perturbed and updated the same way.

    python3 bench/first_order.py --task qzo --method adam --steps 100 --lr 1e-3
    python3 bench/first_order.py --task qzo --method zo --steps 5 --log-json zo.jsonl
    python3 bench/first_order.py --task qzo --method zo --compare runs/x.jsonl   # per-step check

--log-json writes one object per step (loss, d, held-out NLL when evaluated, wall seconds
since the start, peak RSS). Not installed by scripts/setup (benchmarks are not tests):
    pip install torch --index-url https://download.pytorch.org/whl/cpu   (plus gguf, numpy;
    llama-cpp-python for tokenizing)
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np
import gguf
from gguf import GGUFReader, GGMLQuantizationType as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release", "edge-finetune")
Q41 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
MATRICES = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]  # LayerTensors.matrices order
M64 = (1 << 64) - 1


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- edge-finetune's generators

def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint64 arrays holding 32-bit counters; key (k0, k1) as ints."""
    mask = np.uint64(0xFFFFFFFF)
    for rnd in range(10):
        if rnd > 0:
            k0 = (k0 + 0x9E3779B9) & 0xFFFFFFFF
            k1 = (k1 + 0xBB67AE85) & 0xFFFFFFFF
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & mask
        hi1, lo1 = p1 >> np.uint64(32), p1 & mask
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
    return c0, c1, c2, c3


def philox_z(seed, group, count):
    """z for (seed, group, 0..<count): Philox4x32-10 + Box-Muller as edge_optimizer.h defines it."""
    nb = (count + 3) // 4
    b = np.arange(nb, dtype=np.uint64)
    c0, c1, c2, c3 = philox4x32(b & np.uint64(0xFFFFFFFF), b >> np.uint64(32), np.full(nb, group, dtype=np.uint64),
                                np.zeros(nb, dtype=np.uint64), seed & 0xFFFFFFFF, seed >> 32)

    def unit(x):
        return ((x >> np.uint64(8)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0 ** -24)

    two_pi = np.float32(6.2831855)
    out = np.empty((nb, 4), dtype=np.float32)
    for (a, t), col in (((c0, c1), 0), ((c2, c3), 2)):
        # logf, sqrtf, cosf, sinf in float: evaluated in double and rounded (correctly rounded
        # float results, as glibc's are to within an ulp).
        r = np.sqrt((np.float32(-2) * np.log(unit(a).astype(np.float64)).astype(np.float32)).astype(np.float64)).astype(np.float32)
        ang = (two_pi * unit(t)).astype(np.float64)
        out[:, col] = r * np.cos(ang).astype(np.float32)
        out[:, col + 1] = r * np.sin(ang).astype(np.float32)
    return out.reshape(-1)[:count]


def direction_seed(run_seed, step, direction):
    x = run_seed ^ ((step * 0x9E3779B97F4A7C15) & M64) ^ ((direction * 0xC2B2AE3D27D4EB4F) & M64)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


class SeededGenerator:
    """Sources/Model/Sampling.swift: xoshiro256** seeded by SplitMix64."""

    def __init__(self, seed):
        x = seed
        s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            s.append(z ^ (z >> 31))
        self.s = s

    def next(self):
        s = self.s
        m = (s[1] * 5) & M64
        result = ((((m << 7) | (m >> 57)) & M64) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = ((s[3] << 45) | (s[3] >> 19)) & M64
        return result


def batch_indices(step, n, batch, seed):
    """Trainer.batchIndices: a stream of epochs, each a seeded shuffle."""
    first = (step - 1) * batch
    out, cache = [], None
    for position in range(first, first + batch):
        epoch = position // n
        if cache is None or cache[0] != epoch:
            order = list(range(n))
            rng = SeededGenerator(seed ^ ((epoch * 0xD6E8FEB86659FD93) & M64) ^ 0x5EED)
            for i in range(n - 1, 0, -1):
                j = rng.next() % (i + 1)
                order[i], order[j] = order[j], order[i]
            cache = (epoch, order)
        out.append(cache[1][position % n])
    return out


# ---------------------------------------------------------------- data

def tokenizer(model_path):
    from llama_cpp import Llama
    return Llama(model_path=model_path, vocab_only=True, verbose=False)


def load_texts(path):
    return [json.loads(l)["text"] for l in open(path) if l.strip()]


def encode(tok, text):
    return tok.tokenize(text.encode(), add_bos=True, special=True)


# ---------------------------------------------------------------- model

class Model:
    """Llama forward in float32 torch. QZO targets (Q4_0 matrices of the blocks) are kept as
    codes (q - 8) and d0, and built as (d0 * r) x codes at each forward."""

    def __init__(self, path, qzo=False, dtype="float32"):
        import torch
        self.torch = torch
        self.dt = getattr(torch, dtype)
        r = GGUFReader(path)

        def field(k, default=None):
            f = r.fields.get(k)
            return default if f is None else f.contents()

        assert field("general.architecture") == "llama", "written for llama files (the reference model)"
        self.n_layer = int(field("llama.block_count"))
        self.dim = int(field("llama.embedding_length"))
        self.n_head = int(field("llama.attention.head_count"))
        self.n_kv = int(field("llama.attention.head_count_kv"))
        self.eps = float(field("llama.attention.layer_norm_rms_epsilon"))
        self.base = float(field("llama.rope.freq_base"))
        self.hd = self.dim // self.n_head
        self.w, self.codes, self.d0 = {}, {}, {}
        self.targets = []   # QZO groups in edge-finetune's order (layer, then LayerTensors.matrices)
        tensors = {t.name: t for t in r.tensors}
        for name, t in tensors.items():
            shape = tuple(int(x) for x in reversed(t.shape))
            if qzo and name.startswith("blk.") and t.tensor_type == T.Q4_0:
                raw = np.asarray(t.data).reshape(shape[0], -1, 18)
                d = raw[:, :, 0:2].copy().view(np.float16).astype(np.float32)[:, :, 0]
                qs = raw[:, :, 2:18]
                q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.int8) - 8
                self.codes[name] = torch.from_numpy(q)
                self.d0[name] = torch.from_numpy(d).to(self.dt)
                continue
            if t.tensor_type == T.F32:
                a = np.asarray(t.data, dtype=np.float32)
            else:
                a = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
            self.w[name] = torch.from_numpy(np.ascontiguousarray(a.reshape(shape))).to(self.dt)
        if qzo:
            for l in range(self.n_layer):
                for m in MATRICES:
                    n = f"blk.{l}.{m}.weight"
                    if n in self.codes:
                        self.targets.append(n)
        self.emb = self.w["token_embd.weight"]
        self.out = self.w.get("output.weight", self.emb)
        half = self.hd // 2
        self.inv = torch.tensor(self.base ** (-2.0 * np.arange(half) / self.hd), dtype=torch.float64)

    def weight(self, name, ratios):
        if name in self.codes:
            r = ratios[name]
            return ((self.d0[name] * r)[:, :, None] * self.codes[name].to(self.dt)).reshape(self.d0[name].shape[0], -1)
        return self.w[name]

    def rope(self, x, n):
        torch = self.torch
        ang = torch.arange(n, dtype=torch.float64)[:, None] * self.inv[None, :]
        c, s = torch.cos(ang).to(self.dt)[None, :, None, :], torch.sin(ang).to(self.dt)[None, :, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)

    def norm(self, x, w):
        return x * self.torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * w

    def loss(self, seqs, targets, ratios=None, extra=None):
        """Mean NLL per scored token over the sequences (padded on the right, causal).
        `extra`: (rows tensor, first new id): embedding rows of new tokens, tied output."""
        torch = self.torch
        B, n = len(seqs), max(len(s) for s in seqs)
        ids = torch.zeros(B, n, dtype=torch.long)
        tgt = torch.full((B, n), -1, dtype=torch.long)
        for b, (s, t) in enumerate(zip(seqs, targets)):
            ids[b, :len(s)] = torch.tensor(s)
            tgt[b, :len(t)] = torch.tensor(t)
        emb, out = self.emb, self.out
        if extra is not None:
            rows, _ = extra
            emb = torch.cat([emb, rows], 0)
            out = torch.cat([out, rows], 0)
        x = emb[ids]
        mask = torch.full((n, n), float("-inf"), dtype=self.dt).triu(1)
        g = self.n_head // self.n_kv
        for l in range(self.n_layer):
            p = f"blk.{l}."
            W = lambda m: self.weight(p + m + ".weight", ratios)
            h = self.norm(x, self.w[p + "attn_norm.weight"])
            q = (h @ W("attn_q").T).view(B, n, self.n_head, self.hd)
            k = (h @ W("attn_k").T).view(B, n, self.n_kv, self.hd)
            v = (h @ W("attn_v").T).view(B, n, self.n_kv, self.hd)
            q, k = self.rope(q, n), self.rope(k, n)
            q, k, v = q.transpose(1, 2), k.repeat_interleave(g, 2).transpose(1, 2), v.repeat_interleave(g, 2).transpose(1, 2)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.hd) + mask, -1) @ v
            x = x + a.transpose(1, 2).reshape(B, n, self.dim) @ W("attn_output").T
            h = self.norm(x, self.w[p + "ffn_norm.weight"])
            gt = h @ W("ffn_gate").T
            x = x + (torch.nn.functional.silu(gt) * (h @ W("ffn_up").T)) @ W("ffn_down").T
        h = self.norm(x, self.w["output_norm.weight"])
        sel = tgt.reshape(-1) >= 0
        logits = h.reshape(B * n, self.dim)[sel] @ out.T
        return torch.nn.functional.cross_entropy(logits.double(), tgt.reshape(-1)[sel], reduction="mean")


# ---------------------------------------------------------------- tasks

def examples(tok, path, new_token=None, new_id=None):
    seqs, tgts = [], []
    for text in load_texts(path):
        if new_token is not None:
            parts = text.split(new_token)
            ids = encode(tok, parts[0]) if parts[0] else []
            for part in parts[1:]:
                ids.append(new_id)
                ids += tok.tokenize(part.encode(), add_bos=False, special=True) if part else []
        else:
            ids = encode(tok, text)
        seqs.append(ids)
        tgts.append(ids[1:] + [-1])
    return seqs, tgts


def requantize(out):
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run([BIN, "requantize", "--model", Q41, "--type", "q4_0", "--out", out], check=True,
                       capture_output=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=["qzo", "ti"], default="qzo")
    ap.add_argument("--method", choices=["adam", "sgd", "zo", "check", "gradients"], default="adam",
                    help="adam/sgd: first order; zo: edge-finetune's rule; check: per step, the ZO derivative d "
                         "against the autograd directional derivative g.z at the same point and batch (no update)")
    ap.add_argument("--model", help="GGUF file (qzo: the Q4_0 file; default: the reference model requantized Q4_1 -> Q4_0)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, help="adam: its learning rate on r (qzo) or phi (ti); zo: relative lr (3e-3 qzo, 0.75 ti)")
    ap.add_argument("--eps", type=float, help="zo: relative epsilon (1e-3 qzo, 1e-2 ti)")
    ap.add_argument("--ddc", type=float, default=100.0, help="zo, qzo: clipping bound C (0: off)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-json")
    ap.add_argument("--compare", help="zo: an edge-finetune --log-json file of the same run; print both per step")
    ap.add_argument("--save-ratios", help="qzo: write the trained r (all groups, concatenated) as .npy at the end")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    t_start = time.time()

    if args.task == "qzo":
        ex = os.path.join(ROOT, "examples", "qzo")
        path = args.model or requantize(os.path.join(ROOT, "runs", "qzo-bench", "smollm2-q4_0.gguf"))
        model = Model(path, qzo=True, dtype=args.dtype)
        tok = tokenizer(path)
        train = examples(tok, os.path.join(ex, "train.jsonl"))
        held = examples(tok, os.path.join(ex, "heldout.jsonl"))
        params = {n: torch.ones_like(model.d0[n]) for n in model.targets}
        lr = args.lr if args.lr is not None else (3e-3 if args.method == "zo" else 1e-3)
        eps = args.eps if args.eps is not None else 1e-3

        def loss_at(batch_ids, p, data=train):
            return model.loss([data[0][i] for i in batch_ids], [data[1][i] for i in batch_ids], ratios=p)

        def point(seed, sign):
            return {n: params[n] + sign * eps * torch.from_numpy(philox_z(seed, g, params[n].numel())).view_as(params[n]).to(model.dt)
                    for g, n in enumerate(model.targets)}

        def heldout():
            with torch.no_grad():
                return float(loss_at(range(len(held[0])), params, held))
        groups = model.targets
    else:
        ex = os.path.join(ROOT, "examples", "paris")
        path = args.model or Q41
        model = Model(path, dtype=args.dtype)
        tok = tokenizer(path)
        vocab = model.emb.shape[0]
        new_id = vocab
        init = tok.tokenize(b" the", add_bos=False, special=False)[-1]
        row0 = model.emb[init].clone()
        rho = float(torch.sqrt((row0.double() ** 2).mean()))
        train = examples(tok, os.path.join(ex, "train.jsonl"), " <x>", new_id)
        held = examples(tok, os.path.join(ex, "heldout.jsonl"), " <x>", new_id)
        phi = {"new": (row0 / rho).clone()[None, :]}
        params = phi
        lr = args.lr if args.lr is not None else (1e-2 if args.method == "adam" else 0.75)
        eps = args.eps if args.eps is not None else 1e-2

        def loss_at(batch_ids, p, data=train):
            return model.loss([data[0][i] for i in batch_ids], [data[1][i] for i in batch_ids],
                              extra=(p["new"] * rho, new_id))

        def point(seed, sign):
            return {"new": params["new"] + sign * eps * torch.from_numpy(philox_z(seed, 0, params["new"].numel())).view_as(params["new"]).to(model.dt)}

        def heldout():
            with torch.no_grad():
                return float(loss_at(range(len(held[0])), params, held))
        groups = ["new"]

    if args.method == "gradients":
        # The exact gradients at the start: training set (all examples, mean NLL per token)
        # and held-out set; lr * g_train . g_held is the held-out descent per step of
        # (expected) SGD or unbiased ZO-SGD at learning rate lr, before curvature costs.
        grads = []
        for data, ids in ((train, range(len(train[0]))), (held, range(len(held[0])))):
            for p in params.values():
                p.requires_grad_(True)
                p.grad = None
            loss_at(list(ids), params, data).backward()
            grads.append(torch.cat([p.grad.double().reshape(-1) for p in params.values()]))
        gt, gh = grads
        dot = float(gt @ gh)
        out = {"grad_train_norm": float(gt.norm()), "grad_heldout_norm": float(gh.norm()), "dot": dot,
               "cosine": dot / float(gt.norm() * gh.norm()), "lr": lr,
               "heldout_descent_per_step": lr * dot}
        print(json.dumps(out))
        return
    log = open(args.log_json, "w") if args.log_json else None
    ours = [json.loads(l) for l in open(args.compare)] if args.compare else None
    ours = {r["step"]: r for r in ours or [] if "d" in r}
    e0 = heldout()
    setup_seconds = time.time() - t_start
    print(f"{args.task} {args.method}: {sum(p.numel() for p in params.values())} trained values, "
          f"held-out NLL {e0:.4f}, setup {setup_seconds:.1f} s, peak RSS {peak_rss_mb():.0f} MB", file=sys.stderr)
    if log:
        log.write(json.dumps({"step": 0, "eval_nll": e0, "seconds": 0.0, "peak_rss_mb": peak_rss_mb(),
                              "setup_seconds": setup_seconds}) + "\n")
    if args.method in ("adam", "sgd"):
        for p in params.values():
            p.requires_grad_(True)
        opt = (torch.optim.Adam if args.method == "adam" else torch.optim.SGD)(list(params.values()), lr=lr)
    t0 = time.time()
    for s in range(1, args.steps + 1):
        idx = batch_indices(s, len(train[0]), args.batch, args.seed)
        rec = {"step": s}
        if args.method == "check":
            seed = direction_seed(args.seed, s, 0)
            with torch.no_grad():
                lp = float(loss_at(idx, point(seed, 1.0)))
                lm = float(loss_at(idx, point(seed, -1.0)))
            for p in params.values():
                p.requires_grad_(True)
            L = loss_at(idx, params)
            L.backward()
            gz, gg = 0.0, 0.0
            for g, n in enumerate(groups):
                z = torch.from_numpy(philox_z(seed, g, params[n].numel())).view_as(params[n]).double()
                gz += float((params[n].grad.double() * z).sum())
                gg += float((params[n].grad.double() ** 2).sum())
                params[n].grad = None
                params[n].requires_grad_(False)
            d = (lp - lm) / (2 * np.float64(np.float32(eps)))
            rec.update(loss=float(L), d=[d], grad_dot_z=gz, grad_norm=math.sqrt(gg), loss_plus=lp, loss_minus=lm)
            print(f"step {s}: ZO d {d:+.6f}  autograd g.z {gz:+.6f}  |g| {math.sqrt(gg):.5f}", file=sys.stderr)
        elif args.method in ("adam", "sgd"):
            opt.zero_grad()
            L = loss_at(idx, params)
            L.backward()
            opt.step()
            if args.task == "qzo":
                with torch.no_grad():
                    for p in params.values():
                        p.clamp_(min=0.05)
            rec["loss"] = float(L)
            rec["grad_norm"] = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params.values()))
        else:
            seed = direction_seed(args.seed, s, 0)
            with torch.no_grad():
                lp = float(loss_at(idx, point(seed, 1.0)))
                lm = float(loss_at(idx, point(seed, -1.0)))
            d = np.float32((lp - lm) / (2 * np.float64(np.float32(eps))))
            if args.task == "qzo" and args.ddc > 0:
                d = np.float32(min(max(d, -args.ddc), args.ddc))
            with torch.no_grad():
                for g, n in enumerate(groups):
                    z = torch.from_numpy(philox_z(seed, g, params[n].numel())).view_as(params[n]).to(model.dt)
                    params[n] -= np.float32(lr) * (float(d) * z)
                    if args.task == "qzo":
                        params[n].clamp_(min=0.05)
            rec.update(loss=(lp + lm) / 2, d=[float(d)], loss_plus=lp, loss_minus=lm, seed=seed)
        rec["batch"] = idx
        if (args.eval_every > 0 and s % args.eval_every == 0) or s == args.steps:
            rec["eval_nll"] = heldout()
            rec["closed_note"] = ""
        rec["seconds"] = time.time() - t0
        rec["peak_rss_mb"] = peak_rss_mb()
        rec.pop("closed_note", None)
        if log:
            log.write(json.dumps(rec) + "\n")
            log.flush()
        line = f"step {s:4d} loss {rec['loss']:.6f}"
        if "d" in rec:
            line += f" d {rec['d'][0]:+.5f}"
        if s in ours:
            o = ours[s]
            line += f" | ours loss {o['loss']:.6f} d {o['d'][0]:+.5f}"
        if "eval_nll" in rec:
            line += f" held-out {rec['eval_nll']:.4f}"
        print(line + f" ({rec['seconds']:.1f} s)", file=sys.stderr)
    if args.save_ratios and args.task == "qzo":
        np.save(args.save_ratios, np.concatenate([params[n].detach().double().numpy().reshape(-1) for n in groups]))


if __name__ == "__main__":
    main()
