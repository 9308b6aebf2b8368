#!/usr/bin/env bash
# A long property-test campaign over the two servers' request bodies: N generated or mutated cases
# per property of crates/serve/tests/api_fuzz.rs (the OpenAI API on a tiny model: arbitrary JSON,
# plausible requests, mutated bytes; 200 or an OpenAI-shaped 4xx within bounded time) and of
# crates/label/tests/fuzz.rs (the labeling app: submissions and paths; 2xx or a JSON 4xx).
# Prints the count of API answers per endpoint, status and refused parameter.
#   scripts/fuzz-api.sh [N]      (default 100000; CI runs 64 per property)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cases="${1:-100000}"
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1 OMP_WAIT_POLICY=PASSIVE
cargo build --release -p rlhf-serve -p rlhf-label --tests >/dev/null
log="$(mktemp)"
start=$(date +%s)
FUZZ_TRACE=1 PROPTEST_CASES="$cases" cargo test --release -p rlhf-serve --test api_fuzz \
    -- --nocapture --test-threads 1 2>"$log" | grep -E "^test |test result"
echo "$(( $(date +%s) - start )) s; answers (count, endpoint, status, refused parameter):"
grep '^FUZZ' "$log" | cut -d' ' -f2- | sort | uniq -c | sort -rn
rm -f "$log"
start=$(date +%s)
PROPTEST_CASES="$cases" cargo test --release -p rlhf-label --test fuzz -- --test-threads 1 \
    2>&1 | grep -E "^test |test result"
echo "labeling app: $(( $(date +%s) - start )) s"
