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
# pip keeps no wheel cache: torch and its CUDA libraries are ~5 GB installed, and a cached copy of
# the wheels would cost another ~3.5 GB of disk for nothing (the venv is created once).
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

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
if ! "$venv/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
  need_disk 7168 "installing torch==2.11.0"
  echo "[setup] installing torch==2.11.0 (~5 GB with its CUDA libraries, once)" >&2
  "$venv/bin/python" -m pip install --quiet torch==2.11.0
fi
if [ "${1:-}" = "--test" ]; then
  if ! "$venv/bin/python" -c 'import transformers, tokenizers, safetensors, numpy' 2>/dev/null; then
    echo "[setup] installing transformers, tokenizers, safetensors" >&2
    "$venv/bin/python" -m pip install --quiet "transformers>=4.57" tokenizers safetensors numpy jinja2
  fi
  if ! "$venv/bin/python" -c 'import peft' 2>/dev/null; then
    echo "[setup] installing peft (LoRA parity tests)" >&2
    "$venv/bin/python" -m pip install --quiet "peft>=0.17"
  fi
  if ! "$venv/bin/python" -c 'import openai, pytest, selenium' 2>/dev/null; then
    echo "[setup] installing openai, pytest, selenium" >&2
    "$venv/bin/python" -m pip install --quiet "openai>=1.50" pytest "selenium>=4.20"
  fi
fi
