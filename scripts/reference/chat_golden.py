#!/usr/bin/env python3
"""Golden token ids and loss masks of chat-format training lines, from jinja2 and llama.cpp.

Writes Tests/Golden/chat-dataset.json: for each model below and each of CONVERSATIONS,
  * "rendered": the conversation written out by an independent reference:
      - the file's own tokenizer.chat_template rendered with jinja2 as transformers'
        apply_chat_template renders it (sandboxed, trim_blocks, lstrip_blocks), for the
        files that carry one (tiny-q4_0, SmolLM2, Qwen2.5-Coder-0.5B);
      - llama.cpp's built-in "gemma" format (llama_chat_apply_template) for Gemma 3 270M,
        whose file has no template (the runtime then uses Gemma's format, which its
        vocabulary has the tokens for; see Sources/Model/ChatTemplate.swift);
  * "ids": llama.cpp's tokens of the rendered text (llama_tokenize on a vocab_only load,
    add_special true: BOS as the file's add_bos says; parse_special true);
  * "trained": per token, whether it is in the loss: its text starts inside the
    "trained span" of an assistant message whose "weight" is not 0. The spans are found
    by rendering prefixes of the conversation, as mlx-lm finds where a reply starts:
      start = len(render(messages[:i], add_generation_prompt=True))   (after the role header)
      end   = end of the last end-of-turn marker in render(messages[:i+1])
    i.e. the message's content and its end-of-turn marker (<|im_end|>, <end_of_turn>),
    without the role header before it and the newline after it. The script checks that
    each prefix rendering is a prefix of the whole one, and that llama.cpp's pieces joined
    give back the rendered text, so the token start offsets are exact. BOS is never trained.
The test (Tests/ModelTests/ChatDatasetTests.swift) reads each line through Dataset and
requires its tokens to equal "ids" and its targets to be ids[i+1] exactly where
trained[i+1] (else -1).

Independent references: jinja2 for the Jinja templates, llama.cpp (llama-cpp-python 0.3.36,
low-level API) for the built-in Gemma format and the tokens, gguf-py for the file data.

Usage (from the repo root; the real files come from scripts/setup --all):
    python3 scripts/reference/chat_golden.py
"""
import datetime
import json
import os
import sys

import gguf
import jinja2
import llama_cpp

# The llama.cpp vocabulary, the jinja2 rendering and the file digest are the tokenizer goldens' own.
from tokenizer_golden import Vocab, render_jinja, sha256

OUT = os.path.join("Tests", "Golden", "chat-dataset.json")

# (file, how it is rendered, end-of-turn marker)
MODELS = [
    ("models/tiny-q4_0.gguf", "jinja", "<|im_end|>"),
    ("models/SmolLM2-135M-Instruct.Q4_1.gguf", "jinja", "<|im_end|>"),
    ("models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf", "jinja", "<|im_end|>"),
    ("models/gemma-3-270m.Q4_K_M.gguf", "gemma", "<end_of_turn>"),
]


def msg(role, content, **extra):
    return dict(role=role, content=content, **extra)


# Every conversation starts with a user or system message (Qwen's template reads messages[0]).
CONVERSATIONS = [
    ("one turn", [msg("user", "What is the capital of France?"), msg("assistant", "Paris.")]),
    ("system message", [msg("system", "You answer in one word."), msg("user", "Capital of Italy?"),
                        msg("assistant", "Rome")]),
    ("two turns", [msg("user", "Hi!"), msg("assistant", "Hello. How can I help?"),
                   msg("user", "Say a colour."), msg("assistant", "Blue, like the sea.")]),
    ("white space around contents", [msg("user", "  spaced  \n"), msg("assistant", "\n two lines\nof answer  \n")]),
    ("multi-line code and unicode", [msg("user", "Écris une fonction 平方 en Python."),
                                     msg("assistant", "def square(x):\n    return x * x  # 平方 ✓\n")]),
    ("weight 0 on the first reply", [msg("user", "Count to two."), msg("assistant", "1 2", weight=0),
                                     msg("user", "Now to three."), msg("assistant", "1 2 3", weight=1)]),
    ("ends with a user message", [msg("user", "Yes or no?"), msg("assistant", "Yes."), msg("user", "Thanks")]),
    ("reply with punctuation first", [msg("user", "Quote something."), msg("assistant", "\"To be, or not to be.\"")]),
]


def file_template(path):
    reader = gguf.GGUFReader(path)
    field = reader.fields.get("tokenizer.chat_template")
    template = bytes(field.parts[-1]).decode("utf-8") if field else None
    tokens = reader.fields["tokenizer.ggml.tokens"]
    def token(key):
        f = reader.fields.get(key)
        if not f:
            return ""
        i = int(f.parts[-1][0])
        return bytes(tokens.parts[tokens.data[i]]).decode("utf-8")
    return template, token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")


def golden_for(path, how, eot):
    template, bos, eos = file_template(path)
    vocab = Vocab(path)

    def render(messages, add):
        if how == "jinja":
            return render_jinja(template, messages, add, bos, eos)
        return vocab.apply_builtin_template(how, messages, add)

    cases = []
    for name, messages in CONVERSATIONS:
        text = render(messages, False)
        raw = text.encode("utf-8")
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant" or m.get("weight", 1) == 0:
                continue
            before = render(messages[:i], True).encode("utf-8")
            through = render(messages[:i + 1], False).encode("utf-8")
            assert raw.startswith(before) and raw.startswith(through), (path, name, i)
            end = through.rfind(eot.encode()) + len(eot.encode())
            assert end > len(before), (path, name, i)
            spans.append((len(before), end))
        ids = vocab.tokenize(text, True, True)
        # Token start offsets from llama.cpp's own pieces; BOS is not in the text.
        starts, offset = [], 0
        for k, t in enumerate(ids):
            starts.append(offset)
            if k == 0 and vocab.add_bos and t == vocab.bos:
                continue
            offset += len(vocab.piece(t, True))
        joined = b"".join(vocab.piece(t, True) for k, t in enumerate(ids) if not (k == 0 and vocab.add_bos and t == vocab.bos))
        assert joined == raw, (path, name, joined, raw)
        trained = [not (k == 0 and vocab.add_bos and t == vocab.bos) and any(a <= s < b for a, b in spans)
                   for k, (t, s) in enumerate(zip(ids, starts))]
        cases.append({"name": name, "messages": messages, "rendered": text, "spans": spans,
                      "ids": ids, "trained": trained})
    return {"file": os.path.basename(path), "sha256": sha256(path),
            "reference": "jinja2 (tokenizer.chat_template)" if how == "jinja" else f"llama_chat_apply_template(\"{how}\")",
            "end_of_turn": eot, "add_bos": vocab.add_bos, "cases": cases}


def main():
    models = []
    for path, how, eot in MODELS:
        if not os.path.exists(path):
            sys.exit(f"{path} is missing (scripts/setup --all fetches the real files)")
        models.append(golden_for(path, how, eot))
        print(f"{path}: {len(models[-1]['cases'])} conversations, "
              f"{sum(sum(c['trained']) for c in models[-1]['cases'])} trained tokens")
    golden = {"generator": "scripts/reference/chat_golden.py", "llama_cpp_python": llama_cpp.__version__,
              "jinja2": jinja2.__version__,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "models": models}
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{OUT} written")


if __name__ == "__main__":
    main()
