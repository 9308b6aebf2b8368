#!/usr/bin/env bash
# The driver behind bench/dpo-compare.sh and bench/grpo-compare.sh: rlhf's side
# (crates/train/examples/bench_NAME.rs) against TRL's (bench/NAME_trl.py), same model, batch and
# precision, runs alternating (rlhf, TRL, ...) so background load hits both alike. Each side
# prints one JSON line holding its timings under KEY; this prints each median (over rounds ×
# counts) and the ratio.
# usage: bench/trl-compare.sh NAME UNIT COUNT_FLAG KEY DEFAULT_COUNT [--threads N] [--rounds N]
#                             [COUNT_FLAG N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name="$1" unit="$2" count_flag="$3" key="$4" count="$5"
shift 5
threads=2 rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    "$count_flag") count="$2"; shift 2 ;;
    *) echo "unknown option $1 (expected --threads, --rounds or $count_flag)" >&2; exit 2 ;;
  esac
done
"$root/scripts/setup-env.sh" --test >&2
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
# TRL 1.16 adds only its own dependencies (datasets, pandas, pyarrow) to the project venv.
python -c 'import trl, sys; sys.exit(trl.__version__ != "1.16.0")' 2>/dev/null ||
  python -m pip install --quiet trl==1.16.0 >&2
(cd "$root" && cargo build --release -q -p rlhf-train --example "bench_$name")
out="$(mktemp -d)"
for r in $(seq "$rounds"); do
  echo "[bench] round $r: rlhf" >&2
  "$root/target/release/examples/bench_$name" --threads "$threads" "$count_flag" "$count" > "$out/rlhf-$r.json"
  echo "[bench] round $r: TRL" >&2
  python "$root/bench/${name}_trl.py" --threads "$threads" "$count_flag" "$count" 2>/dev/null | tail -1 > "$out/trl-$r.json"
done
python3 - "$out" "$rounds" "$key" "$unit" <<'PY'
import json, statistics, sys
out, rounds, key, unit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rl = [json.load(open(f"{out}/rlhf-{r}.json")) for r in range(1, rounds + 1)]
tr = [json.load(open(f"{out}/trl-{r}.json")) for r in range(1, rounds + 1)]
a = statistics.median(x for j in rl for x in j[key])
b = statistics.median(x for j in tr for x in j[key])
print(f"rlhf: {a * 1000:.1f} ms/{unit}; per round {[round(j['median_s'] * 1000, 1) for j in rl]}")
print(f"TRL {tr[0]['trl_version']}: {b * 1000:.1f} ms/{unit}; per round {[round(j['median_s'] * 1000, 1) for j in tr]}")
print(f"speed-up: {b / a:.2f}x")
print(json.dumps({"rlhf_s": a, "trl_s": b, "ratio": b / a, "threads": rl[0]["threads"]}))
PY
