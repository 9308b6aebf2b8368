#!/usr/bin/env bash
# Training-step benchmark (issue B): builds the release helper and runs bench/train_step.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${OMP_WAIT_POLICY:-}" ]; then
  # It reaches both sides' OpenMP, but a sleeping worker costs rlhf's short kernels more: with
  # PASSIVE a d=576 bf16 PPO iteration took ~30% longer (README, Precision).
  echo "[bench] warning: OMP_WAIT_POLICY=$OMP_WAIT_POLICY is set and changes these timings; unset it to measure as users run" >&2
fi
"$root/scripts/setup-env.sh" --test
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
cargo build --release -p rlhf-train --example bench_train_step --manifest-path "$root/Cargo.toml"
exec python "$root/bench/train_step.py" --binary "$root/target/release/examples/bench_train_step" "$@"
