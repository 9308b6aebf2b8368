#!/usr/bin/env bash
# One DPO optimizer step, rlhf vs TRL's DPOTrainer, on CPU, side by side: the same random "micro"
# Llama, 8 pairs of a 16-token prompt and two 32-token completions (+ EOS), sigmoid loss,
# reference log-probs precomputed, fp32, AdamW. Runs alternate (rlhf, TRL, ...) so background load
# hits both alike; prints each median (over rounds × steps) and the ratio.
# usage: bench/dpo-compare.sh [--threads N] [--rounds N] [--steps N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
threads=2 rounds=3 steps=10
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
"$root/scripts/setup-env.sh" --test >&2
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
# TRL 1.16 adds only its own dependencies (datasets, pandas, pyarrow) to the project venv.
python -c 'import trl, sys; sys.exit(trl.__version__ != "1.16.0")' 2>/dev/null ||
  python -m pip install --quiet trl==1.16.0 >&2
(cd "$root" && cargo build --release -q -p rlhf-train --example bench_dpo)
out="$(mktemp -d)"
for r in $(seq "$rounds"); do
  echo "[bench] round $r: rlhf" >&2
  "$root/target/release/examples/bench_dpo" --threads "$threads" --steps "$steps" > "$out/rlhf-$r.json"
  echo "[bench] round $r: TRL" >&2
  python "$root/bench/dpo_trl.py" --threads "$threads" --steps "$steps" 2>/dev/null | tail -1 > "$out/trl-$r.json"
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rl = [json.load(open(f"{out}/rlhf-{r}.json")) for r in range(1, rounds + 1)]
tr = [json.load(open(f"{out}/trl-{r}.json")) for r in range(1, rounds + 1)]
a = statistics.median(x for j in rl for x in j["steps"])
b = statistics.median(x for j in tr for x in j["steps"])
print(f"rlhf: {a * 1000:.1f} ms/step; per round {[round(j['median_s'] * 1000, 1) for j in rl]}")
print(f"TRL {tr[0]['trl_version']}: {b * 1000:.1f} ms/step; per round {[round(j['median_s'] * 1000, 1) for j in tr]}")
print(f"speed-up: {b / a:.2f}x")
print(json.dumps({"rlhf_s": a, "trl_s": b, "ratio": b / a, "threads": rl[0]["threads"]}))
PY
