#!/usr/bin/env python3
"""Reference values for the parity tests of crates/tokenizer (tests/parity.rs).

Encodes a fixed list of hard texts with Python `tokenizers` for GPT-2 and Qwen3, and renders Qwen3
conversations with transformers' `apply_chat_template`, writing everything to
crates/tokenizer/tests/fixtures/tokenizer_parity.json. The Rust side must reproduce these ids and
texts exactly.

Run from the repository root, after `scripts/fetch-test-assets.sh` and
`scripts/setup-env.sh --test`:
    .venv/bin/python scripts/reference/tokenizer_fixtures.py
"""

import json
import pathlib
import re
import sys

import jinja2
import tokenizers
import transformers
from transformers import AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
ASSETS = ROOT / ".cache" / "assets"
OUT = ROOT / "crates" / "tokenizer" / "tests" / "fixtures" / "tokenizer_parity.json"

# Each text targets one way a Rust port could drift from the Python reference: the pre-tokenizer
# regex (whitespace runs, contractions, numbers), byte-level handling of multi-byte UTF-8 (CJK,
# emoji sequences), Qwen3's NFC normalizer (combining marks), and added-token matching (special
# tokens written in the text, and near-misses of them).
TEXTS = [
    "",
    "Hello world",
    " leading space",
    "trailing space ",
    "  double  spaces  between  words  ",
    "a" + " " * 17 + "b",
    "\t\ttabs\tand\tspaces  \t mixed\t",
    "line1\nline2\r\nline3\n\n\nend",
    "\n",
    "   \n   \n\n  ",
    "1234567890 3.14159 -42 1,000,000 0x1F 1e-10 007 ½ ²",
    "I'm can't won't they'll we've she'd it's 'quoted' DON'T I'M You'Re",
    "café naïve résumé Zürich façade Ångström",
    "e\u0301 a\u0308 n\u0303 o\u0302\u0323 (decomposed) vs é ä ñ ộ",
    "你好，世界！这是一个测试。日本語のテキスト、カタカナ。한국어 텍스트입니다.",
    "😀🎉👍🏽 ❤️ 🇫🇷🇯🇵 🏳️‍🌈",
    "👨‍👩‍👧‍👦 family, 👩🏾‍💻 coder, 🧑🏻‍🤝‍🧑🏿 holding hands, 👋🏼👋🏿",
    "مرحبا بالعالم — שלום עולם",
    "नमस्ते दुनिया สวัสดีชาวโลก",
    "def f(x):\n    return x**2  # square\n\nfor i in range(10):\n\tprint(f'{i}: {f(i)}')\n",
    '{"key": [1, 2, {"nested": null}], "emoji": "🙂", "esc": "a\\"b"}',
    "<|endoftext|>Hello<|endoftext|> world <|endoftext|>",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<think>\nreasoning\n</think>\n\nThe answer is 4.",
    "<|im_start|><|im_end|><|endoftext|><|im_start|>",
    "<|im_start <|endoftext| <|im_end|x |endoftext|>",
    "zero\u200bwidth\u200d joiner \u00a0nbsp\u2003em\u3000ideographic\ufeffbom",
    "\x00\x01\x7f bell\x07 esc\x1b[0m",
    "Mr. O'Neil's 3rd-place finish—at 10:45 a.m.—surprised everyone (even him!)...",
    "https://example.com/path?q=1&r=ü#frag <a href=\"x\">link</a>",
    "∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x| ≈ π ∞ ∑ ∫",
    "a" * 300,
    "🙂" * 40,
    " " * 64,
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Zürich"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]

MULTI_TURN = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "2+2 = 4."},
    {"role": "user", "content": "And in Japanese? 日本語で 🙏"},
]

TOOL_CALL = [
    {"role": "system", "content": "You can check the weather."},
    {"role": "user", "content": "Weather in Zürich?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": {"city": "Zürich", "unit": "celsius"},
                },
            }
        ],
    },
    {"role": "tool", "content": '{"temperature": 21.5, "sky": "☀️"}'},
    {"role": "tool", "content": "second tool output"},
]

REASONING = [
    {"role": "user", "content": "  Think first.  "},
    {"role": "assistant", "content": "<think>\nStep 1.\n</think>\n\nDone: 42"},
    {"role": "user", "content": "Again, with a twist."},
    {"role": "assistant", "content": "Final.", "reasoning_content": "\nI reconsidered.\n"},
]

# (name, messages, tools, add_generation_prompt, extra template kwargs)
CHATS = [
    ("multi_turn_prompt", MULTI_TURN, None, True, {}),
    ("multi_turn_complete", MULTI_TURN + [{"role": "assistant", "content": "にです。"}], None, False,
     {}),
    ("multi_turn_no_prompt", MULTI_TURN, None, False, {}),
    ("no_thinking", MULTI_TURN, None, True, {"enable_thinking": False}),
    ("tool_call", TOOL_CALL, TOOLS, True, {}),
    ("reasoning", REASONING, None, False, {}),
    ("reasoning_prompt", REASONING[:3], None, True, {"enable_thinking": True}),
]


def encode_all(name):
    tok = tokenizers.Tokenizer.from_file(str(ASSETS / f"{name}-tokenizer" / "tokenizer.json"))
    cases = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append(
            {
                "text": text,
                "ids": ids,
                "ids_with_special": tok.encode(text, add_special_tokens=True).ids,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            }
        )
    batch = tok.encode_batch(TEXTS, add_special_tokens=False)
    assert [e.ids for e in batch] == [c["ids"] for c in cases], "encode_batch != encode"
    return {"vocab_size": tok.get_vocab_size(with_added_tokens=True), "cases": cases}


def special_ids(tok):
    return {"bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id}


def render_all():
    tok = AutoTokenizer.from_pretrained(str(ASSETS / "qwen3-tokenizer"))
    chats = []
    for name, messages, tools, add_generation_prompt, kwargs in CHATS:
        text = tok.apply_chat_template(
            messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
            **kwargs,
        )
        ids = tok.apply_chat_template(
            messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            tokenize=True,
            return_dict=False,
            **kwargs,
        )
        chats.append(
            {
                "name": name,
                "messages": messages,
                "tools": tools,
                "add_generation_prompt": add_generation_prompt,
                "kwargs": kwargs,
                "text": text,
                "ids": list(ids),
            }
        )
    return {"special": special_ids(tok), "chats": chats}


def main():
    for name in ("gpt2", "qwen3"):
        if not (ASSETS / f"{name}-tokenizer" / "tokenizer.json").is_file():
            sys.exit(f"missing {ASSETS}/{name}-tokenizer: run scripts/fetch-test-assets.sh first")
    gpt2_auto = AutoTokenizer.from_pretrained(str(ASSETS / "gpt2-tokenizer"))
    fixture = {
        "generated_by": "scripts/reference/tokenizer_fixtures.py",
        "versions": {
            "tokenizers": tokenizers.__version__,
            "transformers": transformers.__version__,
            "jinja2": jinja2.__version__,
        },
        "encode": {"gpt2": encode_all("gpt2"), "qwen3": encode_all("qwen3")},
        "gpt2_special": special_ids(gpt2_auto),
        "qwen3_chat": render_all(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, ensure_ascii=False, indent=1)
    # One line per id list keeps the fixture small and its diffs readable.
    int_list = re.compile(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]")
    text = int_list.sub(lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text)
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
