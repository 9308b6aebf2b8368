#!/usr/bin/env bash
# Training-step benchmark (issue B): builds the release helper and runs bench/train_step.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup-env.sh" --test
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
cargo build --release -p rlhf-train --example bench_train_step --manifest-path "$root/Cargo.toml"
exec python "$root/bench/train_step.py" --binary "$root/target/release/examples/bench_train_step" "$@"
