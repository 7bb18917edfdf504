#!/usr/bin/env python3
"""Golden tokenizer and chat-template data for the real vocabularies, from llama.cpp and jinja2.

Writes Tests/Golden/tokens-<name>.json for each vocabulary:
  * "cases": for each of STRINGS, in both special modes (parse_special false/true)
    and with add_special false/true (llama_tokenize's add_special: BOS when the
    vocabulary's add_bos says so): {"text", "parse_special", "add_special", "ids",
    "pieces_joined", "detokenized"} where
      - ids = llama_tokenize(vocab, text, add_special, parse_special);
      - pieces_joined = the UTF-8 decoding of llama_token_to_piece(id, lstrip 0,
        special = parse_special) joined over ids (llama.cpp's own rendering);
      - detokenized = llama-cpp-python's detokenize(ids, special = parse_special)
        (the same join, minus one leading space when ids[0] is BOS).
  * "special": BOS, EOS, EOT ids, add_bos / add_eos, the vocabulary size, and
    "end_of_generation": every id for which llama_vocab_is_eog is true.
  * "pieces": llama_token_to_piece(id, special=false/true) as hex bytes for a
    fixed sample of ids (every special id below 300, every 4099th id, the last id).
  * "added": ADDED_TOKENS appended to the vocabulary as user-defined tokens (type
    4, score 0), as textual inversion appends them, written with the file's other
    tokenizer keys into a vocab-only GGUF (temporary, gguf-py) and tokenized by
    llama.cpp on ADDED_STRINGS: {"tokens", "cases"}.
  * file fields: model file names and sha256, a hash of the tokenizer.ggml.* data
    (tokens, types, scores, merges), llama-cpp-python version, generator, date.

It also writes Tests/Golden/tokens-synthetic-spm.json: a small SentencePiece
vocabulary made for ties in score, byte fallback, the space prefix (on, unlike
Gemma's), user-defined and control tokens, written as a vocab-only GGUF (to a
temporary directory, with gguf-py) and tokenized by llama.cpp. The file holds the
vocabulary itself ("vocabulary": tokens, types, scores, special ids) and the same
"cases" and "special" sections, for SYNTHETIC_STRINGS plus STRINGS, with
add_space_prefix true and false.

The two Qwen2.5-Coder files (0.5B and 1.5B) are checked to carry identical
tokenizer data (tokens, types, merges, special ids); one golden file covers both.

It writes Tests/Golden/chat-templates.json: CONVERSATIONS (with
add_generation_prompt true and false) rendered by an independent reference:
  - each file's own tokenizer.chat_template (Qwen2.5-Coder 0.5B and 1.5B,
    SmolLM2), rendered with jinja2 as transformers' apply_chat_template renders
    it; the template text is stored beside the renderings;
  - llama.cpp's built-in formats "gemma" (Gemma 3 270M's file has no template),
    "llama3" and "chatml", by llama_chat_apply_template.
The two Qwen templates differ by two characters inside the tools branch
(`{"name": ...}` written as `{{"name": ...}}` in the 1.5B file), which these
conversations (no tools) never reach.

Independent references: llama.cpp (llama-cpp-python 0.3.36, vocab_only load,
low-level API), jinja2 for the Jinja templates, gguf-py for the file data.

Usage (from the repo root):
    python3 scripts/reference/tokenizer_golden.py
"""
import datetime
import hashlib
import json
import os
import sys

import ctypes

import gguf
import jinja2
import jinja2.sandbox
import llama_cpp
import llama_cpp.llama_cpp as C

GOLDEN_DIR = os.path.join("Tests", "Golden")

VOCABULARIES = [
    ("gemma-3", ["models/gemma-3-270m.Q4_K_M.gguf"]),
    ("qwen2.5-coder", ["models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
                       "models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"]),
]

STRINGS = [
    # empty, whitespace runs, leading and trailing spaces, tabs, newlines
    "", " ", "  ", "   ", "      ", "\t", "\n", "\n\n", "\n\n\n\n", "\r\n", " \t \n \r\n  mixed \n\t",
    " leading", "  two leading", "trailing ", "trailing  ", " both ", "a b  c   d    e",
    "line one\n\n\nline four\n", "\ttab\tseparated\t\tvalues", "   indented\n        deeper\n",
    # prose
    "Hello world", "Hello, world! How are you today?", "The quick brown fox jumps over the lazy dog.",
    "it's don't they're we've I'm you'll he'd", "IT'S DON'T WE'VE", "supercalifragilisticexpialidocious",
    # digits and long numbers
    "0", "42", "1234567", "3.14159", "1,000,000", "12345678901234567890", "In 2024, 15% cost $4.99.",
    "٣٤٥ ² ½ Ⅻ",
    # unicode: accents, combining marks, CJK, Korean, Arabic, Hindi, Cyrillic, Thai
    "café naïve Ærø résumé", "e\u0301 n\u0303 a\u0308\u0304", "\u0301\u0302 leading combining",
    "中文", "日本語のテキストです。", "한국어 문장입니다", "مرحبا بالعالم", "नमस्ते दुनिया", "Привет, мир!", "ไทย",
    # emoji, ZWJ sequences, flags, skin tones
    "emoji 😀👍🏽", "👨\u200d👩\u200d👧\u200d👦 family", "🇫🇷🇯🇵 flags", "🧑🏽\u200d💻",
    # rare code points that need byte fallback
    "\u0000\u0001\u007f", "\U0001F9FF\U0001FAE8", "\U000E0041 tag", "\uE000\U0010FFFF", "a\u200bb\u200dc",
    "\u00a0nbsp\u3000ideographic", "\u2028\u2029\u0085",
    # code
    "def f(x):\n    return x ** 2  # square\n", "int main(void) {\n\treturn 0;\n}\n",
    "fn main() { println!(\"{}\", 1 << 3); }", "const xs = [1, 2, 3].map((x) => x * 2);",
    "SELECT * FROM t WHERE a >= 10 AND b <> 'x';", '{"key": [1, 2.5, true, null]}',
    r"^\s*([A-Za-z_]\w*)\s*=\s*(\d+)$", "<div class=\"a\">&amp;</div>", "https://example.com/?q=1&r=2",
    # special tokens, real and look-alike, for both families
    "<bos>", "<eos>", "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn", "<end_of_turn >", "<unused0><mask>[multimodal]", "x<pad>y",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "<|im_start|", "a<|endoftext|>b",
    "<|fim_prefix|>def<|fim_suffix|>\n<|fim_middle|>", "<s></s><unk>", "<0x41><0xE4>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
]

CONVERSATIONS = [
    ("user only", [{"role": "user", "content": "What is the capital of France?"}]),
    ("system and user", [{"role": "system", "content": "You are terse."},
                         {"role": "user", "content": "Hi!"}]),
    ("two turns", [{"role": "user", "content": "Write a Python one-liner that sums a list."},
                   {"role": "assistant", "content": "sum(xs)"},
                   {"role": "user", "content": "And the product?"}]),
    ("ends with assistant", [{"role": "system", "content": "Answer in French."},
                             {"role": "user", "content": "Hello"},
                             {"role": "assistant", "content": "Bonjour !"}]),
    ("whitespace around content", [{"role": "system", "content": "  padded system \n"},
                                   {"role": "user", "content": "\n  spaced question  \n"},
                                   {"role": "assistant", "content": " spaced answer\n\n"},
                                   {"role": "user", "content": "next"}]),
    ("multi-line and unicode", [{"role": "user", "content": "Line 1\nLine 2\n\n日本語 😀"},
                                {"role": "assistant", "content": "```python\nprint('ok')\n```"}]),
]


SYNTHETIC_PIECES = [  # (text, score): normal tokens of the synthetic vocabulary
    ("▁", -1), ("a", -2), ("b", -2), ("c", -2), ("ab", -3), ("bc", -3), ("abc", -1), ("▁a", -4), ("▁ab", -5),
    ("x", -2), ("y", -2), ("xy", 0), ("yx", 0), ("é", -2), ("▁▁", -3), ("a▁b", -0.5), ("▁<", -2), ("<", -3),
]
SYNTHETIC_STRINGS = [
    "abc", "ab c", "xyx", "yxy", "xyxy", "a b", "ab ab", " a", "  a", "a  ", "é", "e\u0301", "中", "a<tag>b",
    "<tag> ab", "USER: abc", "</s>a", "a</s>", "<s><s>", "<|im_end|>x", "x<|im_end|>", "<unk>", "<0x41>",
]


def synthetic_vocabulary(add_space_prefix):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    for text, score in SYNTHETIC_PIECES:
        tokens.append(text)
        types.append(1)
        scores.append(float(score))
    for text, kind in [("<tag>", 4), ("USER", 4), ("<|im_end|>", 3)]:
        tokens.append(text)
        types.append(kind)
        scores.append(0.0)
    return {"model": "llama", "tokens": tokens, "token_types": types, "scores": scores,
            "bos": 1, "eos": 2, "unk": 0, "add_bos": True, "add_space_prefix": add_space_prefix}


def write_synthetic(path, v):
    w = gguf.GGUFWriter(path, "llama")
    # hyperparameters llama.cpp reads before the vocabulary; no tensors (vocab_only skips them)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(8)
    w.add_head_count(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model(v["model"])
    w.add_token_list(v["tokens"])
    w.add_token_scores(v["scores"])
    w.add_token_types(v["token_types"])
    w.add_bos_token_id(v["bos"])
    w.add_eos_token_id(v["eos"])
    w.add_unk_token_id(v["unk"])
    w.add_add_bos_token(v["add_bos"])
    w.add_add_space_prefix(v["add_space_prefix"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def synthetic_golden():
    import tempfile
    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        for prefix in (True, False):
            v = synthetic_vocabulary(prefix)
            path = os.path.join(tmp, f"spm-{prefix}.gguf")
            write_synthetic(path, v)
            vocab = Vocab(path)
            variants.append({"vocabulary": v, "special": special_section(vocab),
                             "cases": cases(vocab, SYNTHETIC_STRINGS + STRINGS)})
    golden = {"llama_cpp_python": llama_cpp.__version__, "generator": "scripts/reference/tokenizer_golden.py",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "variants": variants}
    out = os.path.join(GOLDEN_DIR, "tokens-synthetic-spm.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{out}: {sum(len(v['cases']) for v in variants)} cases")


ADDED_TOKENS = ["<sks>", "my concept", " <x>"]
ADDED_STRINGS = [
    "a photo of <sks> on the beach", "<sks><sks>", "my concept is my concept", " my concept", "<sks>\n<sks>",
    "a <x> and a<x>", "<start_of_turn>user\n<sks><end_of_turn>", "<sk s> my  concept",
]


def added_section(path, data):
    """Cases on the file's vocabulary with ADDED_TOKENS appended as user-defined tokens."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "added.gguf")
        w = gguf.GGUFWriter(out, "llama")
        w.add_context_length(64)
        w.add_embedding_length(8)
        w.add_block_count(1)
        w.add_feed_forward_length(8)
        w.add_head_count(1)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_tokenizer_model(data["tokenizer.ggml.model"].decode())
        if "tokenizer.ggml.pre" in data:
            w.add_tokenizer_pre(data["tokenizer.ggml.pre"].decode())
        w.add_token_list(data["tokenizer.ggml.tokens"] + [t.encode() for t in ADDED_TOKENS])
        w.add_token_types(data["tokenizer.ggml.token_type"] + [4] * len(ADDED_TOKENS))
        if "tokenizer.ggml.scores" in data:
            w.add_token_scores(data["tokenizer.ggml.scores"] + [0.0] * len(ADDED_TOKENS))
        if "tokenizer.ggml.merges" in data:
            w.add_token_merges(data["tokenizer.ggml.merges"])
        for key, add in [("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                         ("unknown_token_id", w.add_unk_token_id), ("padding_token_id", w.add_pad_token_id),
                         ("add_bos_token", w.add_add_bos_token), ("add_eos_token", w.add_add_eos_token),
                         ("add_space_prefix", w.add_add_space_prefix)]:
            if "tokenizer.ggml." + key in data:
                add(data["tokenizer.ggml." + key])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        vocab = Vocab(out)
        return {"tokens": ADDED_TOKENS, "cases": cases(vocab, ADDED_STRINGS)}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_data(path):
    """The tokenizer.ggml.* arrays and scalars of a file, read by gguf-py, and their hash."""
    reader = gguf.GGUFReader(path)
    data = {}
    h = hashlib.sha256()
    for key, field in sorted(reader.fields.items()):
        if not key.startswith("tokenizer.ggml."):
            continue
        if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
            if field.types[-1] == gguf.GGUFValueType.STRING:
                value = [bytes(field.parts[i]) for i in field.data]
            else:
                value = [field.parts[i][0].item() for i in field.data]
        elif field.types[0] == gguf.GGUFValueType.STRING:
            value = bytes(field.parts[-1])
        else:
            value = field.parts[-1][0].item()
        data[key] = value
        h.update(key.encode() + b"=" + repr(value).encode() + b"\n")
    template = reader.fields.get("tokenizer.chat_template")
    template = bytes(template.parts[-1]).decode("utf-8") if template else None
    return data, h.hexdigest(), template


class Vocab:
    """A vocab_only llama.cpp model and its tokenizer through the low-level API."""

    def __init__(self, path):
        llama_cpp.llama_backend_init()
        params = C.llama_model_default_params()
        params.vocab_only = True
        params.use_extra_bufts = False
        self.model = C.llama_model_load_from_file(path.encode(), params)
        if not self.model:
            sys.exit(f"llama.cpp could not load {path}")
        self.vocab = C.llama_model_get_vocab(self.model)
        self.n = C.llama_vocab_n_tokens(self.vocab)
        self.bos = C.llama_vocab_bos(self.vocab)
        self.add_bos = bool(C.llama_vocab_get_add_bos(self.vocab))

    def tokenize(self, text, add_special, parse_special):
        raw = text.encode("utf-8")
        size = len(raw) + 8
        buf = (C.llama_token * size)()
        n = C.llama_tokenize(self.vocab, raw, len(raw), buf, size, add_special, parse_special)
        if n < 0:
            size = -n
            buf = (C.llama_token * size)()
            n = C.llama_tokenize(self.vocab, raw, len(raw), buf, size, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token, special):
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = C.llama_token_to_piece(self.vocab, token, buf, size, 0, special)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def detokenize_python(self, ids, special):
        """llama-cpp-python's LlamaModel.detokenize: pieces joined, then one leading space dropped after BOS."""
        out = b"".join(self.piece(t, special) for t in ids)
        if ids and ids[0] == C.llama_vocab_bos(self.vocab) and out[:1] == b" ":
            out = out[1:]
        return out

    def apply_builtin_template(self, name, messages, add_assistant):
        keep = [(m["role"].encode(), m["content"].encode()) for m in messages]
        chat = (C.llama_chat_message * len(keep))()
        for i, (role, content) in enumerate(keep):
            chat[i].role = role
            chat[i].content = content
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = C.llama_chat_apply_template(name.encode(), chat, len(keep), add_assistant, buf, size)
        if n < 0 or n > size:
            sys.exit(f"llama_chat_apply_template({name}) failed")
        return buf.raw[:n].decode("utf-8")


def cases(vocab, strings=STRINGS):
    out = []
    for text in strings:
        for parse_special in (False, True):
            for add_special in (False, True):
                ids = vocab.tokenize(text, add_special, parse_special)
                joined = b"".join(vocab.piece(t, parse_special) for t in ids)
                out.append({
                    "text": text, "parse_special": parse_special, "add_special": add_special, "ids": ids,
                    "pieces_joined": joined.decode("utf-8", errors="replace"),
                    "detokenized": vocab.detokenize_python(ids, parse_special).decode("utf-8", errors="replace"),
                })
    return out


def special_section(vocab):
    v = vocab.vocab
    return {
        "n_tokens": vocab.n,
        "bos": C.llama_vocab_bos(v), "eos": C.llama_vocab_eos(v), "eot": C.llama_vocab_eot(v),
        "add_bos": bool(C.llama_vocab_get_add_bos(v)), "add_eos": bool(C.llama_vocab_get_add_eos(v)),
        "end_of_generation": [i for i in range(vocab.n) if C.llama_vocab_is_eog(v, i)],
    }


def pieces_section(vocab):
    ids = sorted(set([i for i in range(min(300, vocab.n))] + list(range(0, vocab.n, 4099)) + [vocab.n - 1]))
    return [{"id": i, "piece": vocab.piece(i, False).hex(), "piece_special": vocab.piece(i, True).hex()}
            for i in ids]


def render_jinja(template, messages, add_generation_prompt, bos, eos):
    """The template rendered as transformers' apply_chat_template does (sandboxed, trim_blocks, lstrip_blocks)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token=bos, eos_token=eos)


CHAT_TEMPLATE_FILES = [
    "models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
    "models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
    "models/SmolLM2-135M-Instruct.Q4_1.gguf",
]


def chat_golden():
    templates = []
    for path in CHAT_TEMPLATE_FILES:
        data, _, template = tokenizer_data(path)
        tokens = data["tokenizer.ggml.tokens"]
        bos = tokens[data["tokenizer.ggml.bos_token_id"]].decode()
        eos = tokens[data["tokenizer.ggml.eos_token_id"]].decode()
        renderings = [{"name": name, "messages": messages, "add_generation_prompt": add,
                       "rendered": render_jinja(template, messages, add, bos, eos)}
                      for name, messages in CONVERSATIONS for add in (True, False)]
        templates.append({"source": os.path.basename(path), "reference": "jinja2 (tokenizer.chat_template)",
                          "template": template, "renderings": renderings})
    vocab = Vocab(VOCABULARIES[0][1][0])  # any vocabulary: the built-in formats do not depend on it
    for builtin in ("gemma", "llama3", "chatml"):
        renderings = [{"name": name, "messages": messages, "add_generation_prompt": add,
                       "rendered": vocab.apply_builtin_template(builtin, messages, add)}
                      for name, messages in CONVERSATIONS for add in (True, False)]
        templates.append({"source": f"llama.cpp built-in '{builtin}'",
                          "reference": f"llama_chat_apply_template(\"{builtin}\")", "builtin": builtin,
                          "renderings": renderings})
    golden = {"llama_cpp_python": llama_cpp.__version__, "jinja2": jinja2.__version__,
              "generator": "scripts/reference/tokenizer_golden.py",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "templates": templates}
    out = os.path.join(GOLDEN_DIR, "chat-templates.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{out}: {sum(len(t['renderings']) for t in templates)} renderings")


def main():
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    synthetic_golden()
    for name, paths in VOCABULARIES:
        datas = [tokenizer_data(p) for p in paths]
        if any(d[1] != datas[0][1] for d in datas):
            sys.exit(f"{name}: the files' tokenizer data differ: " + ", ".join(d[1] for d in datas))
        data, data_hash, _ = datas[0]
        vocab = Vocab(paths[0])
        golden = {
            "vocabulary": name,
            "models": [{"file": os.path.basename(p), "sha256": sha256(p)} for p in paths],
            "tokenizer_data_sha256": data_hash,
            "tokenizer_model": data["tokenizer.ggml.model"].decode(),
            "llama_cpp_python": llama_cpp.__version__,
            "generator": "scripts/reference/tokenizer_golden.py",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "special": special_section(vocab),
            "cases": cases(vocab),
            "pieces": pieces_section(vocab),
            "added": added_section(paths[0], data),
        }
        # every other file's tokens agree with the first file's
        for p in paths[1:]:
            other = Vocab(p)
            for case in golden["cases"]:
                if other.tokenize(case["text"], case["add_special"], case["parse_special"]) != case["ids"]:
                    sys.exit(f"{p}: ids differ on {case['text']!r}")
        out = os.path.join(GOLDEN_DIR, f"tokens-{name}.json")
        with open(out, "w", encoding="utf-8") as f:
            json.dump(golden, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"{out}: {len(golden['cases'])} cases, "
              f"{len(golden['special']['end_of_generation'])} end-of-generation ids")
    chat_golden()


if __name__ == "__main__":
    main()
