#!/usr/bin/env bash
# The long hostile-input campaign (issue #27): N generated cases per reader through the property
# suites of crates/{gguf,model,data,train}/tests/fuzz.rs: mutated GGUF files, checkpoints
# (config.json, safetensors, shard index, LoRA adapter), JSONL of every record type, and TOML
# configurations with --set overrides. Each case must load or fail with an error naming the file
# (and line or key) within 2 s and 512 MiB of heap; the process must stay under 1 GiB resident.
# Prints one row per reader: cases, accepted, refused, failed (a panic or a broken property),
# aborted (the process died on a signal), wall time, max RSS. Exits non-zero on any failure.
#   scripts/fuzz.sh [--cases N]     (default 100000; CI runs each suite's short default)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cases=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --cases) cases="$2"; shift 2 ;;
    --cases=*) cases="${1#--cases=}"; shift ;;
    *) echo "usage: scripts/fuzz.sh [--cases N]" >&2; exit 2 ;;
  esac
done
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1 OMP_WAIT_POLICY=PASSIVE
suites=(rlhf-gguf rlhf-model rlhf-data rlhf-train)
bins=()
for crate in "${suites[@]}"; do
  bin="$(cargo test --release -p "$crate" --test fuzz --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "fuzz":
        print(m["executable"])')"
  [ -n "$bin" ] || { echo "cannot build the fuzz suite of $crate" >&2; exit 1; }
  bins+=("$bin")
done
log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT
status=0
printf '%-11s %9s %9s %9s %7s %8s %9s %8s\n' reader cases accepted refused failed aborted wall_s rss_MiB
for i in "${!suites[@]}"; do
  crate="${suites[$i]}"
  set +e
  PROPTEST_CASES="$cases" /usr/bin/time -f '%e %M' -o "$log/time" \
    "${bins[$i]}" --test-threads 1 --nocapture >"$log/out" 2>&1
  rc=$?
  set -e
  read -r wall rss_kb < <(tail -n 1 "$log/time") || true
  # An abort shows as "Command terminated by signal N" in time's output.
  wall="${wall:-?}"
  if grep -q 'terminated by signal' "$log/time" || [ "$rc" -gt 128 ]; then aborted=1; else aborted=0; fi
  line="$(grep -o 'FUZZ .*' "$log/out" | head -n 1 || true)"
  num() { sed -n "s/.* \([0-9]*\) $1.*/\1/p" <<<"$line"; }
  failed=$([ "$rc" -eq 0 ] && echo 0 || echo 1)
  [ "$aborted" = 1 ] && failed=0
  printf '%-11s %9s %9s %9s %7s %8s %9s %8s\n' "${crate#rlhf-}" "$(num cases)" "$(num accepted)" \
    "$(num refused)" "$failed" "$aborted" "$wall" "$(( ${rss_kb:-0} / 1024 ))"
  if [ "$rc" -ne 0 ]; then
    status=1
    grep -E 'panicked|smallest failing|signal|overflow|error' "$log/out" | head -n 20 >&2 || true
  fi
done
exit "$status"
