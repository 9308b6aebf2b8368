#!/usr/bin/env bash
# Sampling benchmark (issue A): builds the release helper and runs bench/sampling.py.
# usage: bench/run-sampling.sh [--smollm2 DIR] [--rounds N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup-env.sh" --test
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
cargo build --release -p rlhf-model --features jemalloc --example bench_sampling --manifest-path "$root/Cargo.toml"
exec python "$root/bench/sampling.py" --binary "$root/target/release/examples/bench_sampling" "$@"
