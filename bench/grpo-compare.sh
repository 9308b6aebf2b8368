#!/usr/bin/env bash
# One GRPO iteration, rlhf vs TRL's GRPOTrainer, on CPU, side by side: the same random "micro"
# Llama, 8 prompts of 16 tokens × G = 8 samples of at most 32 tokens at temperature 1 (KV cache on
# both sides), a cheap reward (length in characters), β = 0.04 (reference pass), group-normalised
# advantages, one optimizer step over the 64 samples, fp32, AdamW. An iteration is everything from
# sampling to the optimizer step. Runs alternate (rlhf, TRL, ...) so background load hits both
# alike; prints each median (over rounds × iterations) and the ratio.
# usage: bench/grpo-compare.sh [--threads N] [--rounds N] [--iters N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
threads=2 rounds=3 iters=5
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
"$root/scripts/setup-env.sh" --test >&2
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
# TRL 1.16 adds only its own dependencies (datasets, pandas, pyarrow) to the project venv.
python -c 'import trl, sys; sys.exit(trl.__version__ != "1.16.0")' 2>/dev/null ||
  python -m pip install --quiet trl==1.16.0 >&2
(cd "$root" && cargo build --release -q -p rlhf-train --example bench_grpo)
out="$(mktemp -d)"
for r in $(seq "$rounds"); do
  echo "[bench] round $r: rlhf" >&2
  "$root/target/release/examples/bench_grpo" --threads "$threads" --iters "$iters" > "$out/rlhf-$r.json"
  echo "[bench] round $r: TRL" >&2
  python "$root/bench/grpo_trl.py" --threads "$threads" --iters "$iters" 2>/dev/null | tail -1 > "$out/trl-$r.json"
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rl = [json.load(open(f"{out}/rlhf-{r}.json")) for r in range(1, rounds + 1)]
tr = [json.load(open(f"{out}/trl-{r}.json")) for r in range(1, rounds + 1)]
a = statistics.median(x for j in rl for x in j["iters"])
b = statistics.median(x for j in tr for x in j["iters"])
print(f"rlhf: {a * 1000:.0f} ms/iteration; per round {[round(j['median_s'] * 1000) for j in rl]}")
print(f"TRL {tr[0]['trl_version']}: {b * 1000:.0f} ms/iteration; per round {[round(j['median_s'] * 1000) for j in tr]}")
print(f"speed-up: {b / a:.2f}x")
print(json.dumps({"rlhf_s": a, "trl_s": b, "ratio": b / a, "threads": rl[0]["threads"]}))
PY
