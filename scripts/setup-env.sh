#!/usr/bin/env bash
# Creates (once) the Python virtual environment that provides libtorch for the build and the
# reference tools (transformers, tokenizers) for the tests. Idempotent: a second run is a no-op.
#   scripts/setup-env.sh          torch only (enough to build and run `rlhf`)
#   scripts/setup-env.sh --test   plus transformers/tokenizers/safetensors/peft for the parity tests, and
#                                 the official openai client, pytest and selenium for the API
#                                 and browser tests
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RLHF_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
# pip keeps no wheel cache: torch and its CUDA libraries are ~4.4 GB installed, and a cached copy of
# the wheels would cost another ~3 GB of disk for nothing (the venv is created once).
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# need_disk MIB WHAT: stop with a clear message (instead of pip's ENOSPC half-way) when the
# venv's filesystem has less than MIB free.
need_disk() {
  local dir="$venv" free
  while [ ! -d "$dir" ]; do dir="$(dirname "$dir")"; done
  free="$(df -Pm "$dir" | awk 'NR == 2 { print $4 }')"
  if [ -n "$free" ] && [ "$free" -lt "$1" ]; then
    echo "[setup] $2 needs about $(($1 / 1024)) GiB free on $(df -P "$dir" | awk 'NR == 2 { print $6 }')" \
      "but only ${free} MiB are free; free some space (or set RLHF_VENV to a roomier place) and rerun" >&2
    exit 1
  fi
}

# install_pinned SPEC...: pip install, one package at a time. pip resolves the whole set first from
# the index's metadata (no wheel downloads), then each pinned package is installed alone with
# --no-deps, so the disk's peak is the installed files plus one wheel; a plain `pip install torch`
# holds every downloaded wheel (~3 GB) beside the installed files (~4.4 GB), which overflowed a CI
# machine's disk. Triton (0.6 GB) is left out, here and when later packages name torch: it serves
# only torch.compile, which nothing here uses.
install_pinned() {
  local report pins pin n i=0
  report="$(mktemp)"
  "$venv/bin/python" -m pip install --quiet --dry-run --report "$report" "$@"
  pins="$("$venv/bin/python" - "$report" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))["install"]
# the packages asked for last, after what they need
asked = [i for i in items if i.get("requested")]
for item in [i for i in items if not i.get("requested")] + asked:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if name.lower() != "triton":
        print(f"{name}=={version}")
PY
)"
  rm -f "$report"
  n="$(echo "$pins" | grep -c . || true)"
  for pin in $pins; do
    i=$((i + 1))
    echo "[setup]   ($i/$n) $pin" >&2
    "$venv/bin/python" -m pip install --quiet --no-deps "$pin"
  done
}

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
if ! "$venv/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
  need_disk 5632 "installing torch==2.11.0"
  echo "[setup] installing torch==2.11.0 (~4.4 GB with its CUDA libraries, once)" >&2
  install_pinned torch==2.11.0
fi
if [ "${1:-}" = "--test" ]; then
  if ! "$venv/bin/python" -c 'import transformers, tokenizers, safetensors, numpy' 2>/dev/null; then
    echo "[setup] installing transformers, tokenizers, safetensors" >&2
    install_pinned "transformers>=4.57" tokenizers safetensors numpy jinja2
  fi
  if ! "$venv/bin/python" -c 'import peft' 2>/dev/null; then
    echo "[setup] installing peft (LoRA parity tests)" >&2
    install_pinned "peft>=0.17"
  fi
  if ! "$venv/bin/python" -c 'import openai, pytest, selenium' 2>/dev/null; then
    echo "[setup] installing openai, pytest, selenium" >&2
    install_pinned "openai>=1.50" pytest "selenium>=4.20"
  fi
fi
