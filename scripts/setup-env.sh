#!/usr/bin/env bash
# Creates (once) the Python virtual environment that provides libtorch for the build and the
# reference tools (transformers, tokenizers) for the tests. Idempotent: a second run is a no-op.
#   scripts/setup-env.sh          torch only (enough to build and run `rlhf`)
#   scripts/setup-env.sh --test   plus transformers/tokenizers/safetensors for the parity tests, and
#                                 the official openai client, pytest and selenium for the API
#                                 and browser tests
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RLHF_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
if ! "$venv/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
  echo "[setup] installing torch==2.11.0 (several GB, once)" >&2
  "$venv/bin/python" -m pip install --quiet torch==2.11.0
fi
if [ "${1:-}" = "--test" ]; then
  if ! "$venv/bin/python" -c 'import transformers, tokenizers, safetensors, numpy' 2>/dev/null; then
    echo "[setup] installing transformers, tokenizers, safetensors" >&2
    "$venv/bin/python" -m pip install --quiet "transformers>=4.57" tokenizers safetensors numpy jinja2
  fi
  if ! "$venv/bin/python" -c 'import openai, pytest, selenium' 2>/dev/null; then
    echo "[setup] installing openai, pytest, selenium" >&2
    "$venv/bin/python" -m pip install --quiet "openai>=1.50" pytest "selenium>=4.20"
  fi
fi
