#!/usr/bin/env bash
# PPO benchmark, TRL side: one PPO iteration (rollout + update) of TRL's PPOTrainer on CPU.
# Creates (once) its own virtual environment .venv-bench (torch 2.11.0 + TRL 1.12.0, the last TRL
# release with a PPO trainer, and its pinned dependencies), then runs bench/ppo_trl.py.
# usage: bench/run-ppo.sh [--threads N] [--warmup N] [--iters N] [--out FILE] [...]  (see --help)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RLHF_BENCH_VENV:-$root/.venv-bench}"
py="${PYTHON:-python3}"
# Versions this bench was verified with (TRL >= 1.13 has no PPOTrainer any more).
pins=(trl==1.12.0 transformers==5.24.0 accelerate==1.15.0 datasets==5.2.0 tokenizers==0.23.3
      safetensors==0.8.0 huggingface_hub==2.4.0 numpy==2.4.6 pandas==3.1.1 pyarrow==26.0.1
      jinja2==3.1.6)
if [ ! -x "$venv/bin/python" ]; then
  echo "[bench] creating virtual environment $venv" >&2
  "$py" -m venv "$venv"
  echo '*' > "$venv/.gitignore"  # keep it out of git without touching the repo's .gitignore
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
pip=("$venv/bin/python" -m pip install --quiet)
if ! "$venv/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
  echo "[bench] installing torch==2.11.0 (CPU build if its index is reachable, else PyPI's)" >&2
  "${pip[@]}" --timeout 20 --retries 0 --index-url https://download.pytorch.org/whl/cpu torch==2.11.0 2>/dev/null ||
    "${pip[@]}" torch==2.11.0
fi
if ! "$venv/bin/python" -c 'import sys, trl, transformers, accelerate
sys.exit((trl.__version__, transformers.__version__, accelerate.__version__) != ("1.12.0", "5.24.0", "1.15.0"))' 2>/dev/null; then
  echo "[bench] installing ${pins[*]}" >&2
  "${pip[@]}" "${pins[@]}"
fi
exec "$venv/bin/python" "$root/bench/ppo_trl.py" "$@"
