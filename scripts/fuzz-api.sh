#!/usr/bin/env bash
# A long property-test campaign over the HTTP API's request bodies (crates/serve/tests/api_fuzz.rs):
# N generated or mutated bodies per property (arbitrary JSON, plausible requests, mutated bytes),
# each answered by the router of a tiny model within bounded time with 200 or an OpenAI-shaped
# 4xx. Prints the count of answers per endpoint, status and refused parameter.
#   scripts/fuzz-api.sh [N]      (default 100000; CI runs 64 per property)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cases="${1:-100000}"
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1 OMP_WAIT_POLICY=PASSIVE
cargo build --release -p rlhf-serve --tests >/dev/null
log="$(mktemp)"
start=$(date +%s)
FUZZ_TRACE=1 PROPTEST_CASES="$cases" cargo test --release -p rlhf-serve --test api_fuzz \
    -- --nocapture --test-threads 1 2>"$log" | grep -E "^test |test result"
echo "$(( $(date +%s) - start )) s; answers (count, endpoint, status, refused parameter):"
grep '^FUZZ' "$log" | cut -d' ' -f2- | sort | uniq -c | sort -rn
rm -f "$log"
