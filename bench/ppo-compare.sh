#!/usr/bin/env bash
# One PPO iteration (rollouts + update), rlhf vs TRL 1.12's PPOTrainer, on CPU, side by side:
# the same random "micro" Llama policy/reference/value/reward models, 32 prompts of 16 tokens,
# 32-token responses, 4 PPO epochs × 2 minibatches. Runs alternate (rlhf, TRL, rlhf, TRL) so
# background load hits both alike; prints each median and the ratio. Each round also times the
# iteration's matrix products alone (bench/ppo_gemm_floor.py, same libtorch/MKL): TRL's time over
# that floor bounds the speed-up any implementation doing TRL's products could show.
# usage: bench/ppo-compare.sh [--threads N] [--rounds N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
threads=2 rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
"$root/scripts/setup-env.sh" >&2
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
(cd "$root" && cargo build --release -q -p rlhf-train --example bench_ppo)
out="$(mktemp -d)"
for r in $(seq "$rounds"); do
  echo "[bench] round $r: rlhf" >&2
  "$root/target/release/examples/bench_ppo" --threads "$threads" --iters 3 --warmup 1 | tail -1 > "$out/rlhf-$r.json"
  echo "[bench] round $r: TRL" >&2
  "$root/bench/run-ppo.sh" --threads "$threads" --iters 3 --warmup 1 --out "$out/trl-$r.json" > "$out/trl-$r.log" 2>&1 || { cat "$out/trl-$r.log" >&2; exit 1; }
  echo "[bench] round $r: GEMM floor" >&2
  python3 "$root/bench/ppo_gemm_floor.py" --threads "$threads" > "$out/floor-$r.json"
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rl = [json.load(open(f"{out}/rlhf-{r}.json")) for r in range(1, rounds + 1)]
tr = [json.load(open(f"{out}/trl-{r}.json")) for r in range(1, rounds + 1)]
fl = [json.load(open(f"{out}/floor-{r}.json")) for r in range(1, rounds + 1)]
a = statistics.median(x for j in rl for x in j["iters"])
b = statistics.median(x for j in tr for x in j["iters"])
print(f"rlhf: {a:.3f} s/iteration (rollout {statistics.median(j['rollout_s_median'] for j in rl):.3f} s)")
print(f"TRL {tr[0]['trl_version']}: {b:.3f} s/iteration")
f_trl = statistics.median(j["trl"]["total_s"] for j in fl)
f_rlhf = statistics.median(j["rlhf"]["total_s"] for j in fl)
print(f"speed-up: {b / a:.2f}x")
print(f"GEMM floor (products alone): TRL's products {f_trl:.3f} s, rlhf's {f_rlhf:.3f} s per iteration")
print(f"bound: no implementation of TRL's products with this BLAS can beat TRL by more than {b / f_trl:.2f}x;"
      f" rlhf is at {f_rlhf / a:.0%} of its own floor's speed")
print(json.dumps({"rlhf_s": a, "trl_s": b, "ratio": b / a, "threads": rl[0]["threads"],
                  "floor_trl_s": f_trl, "floor_rlhf_s": f_rlhf, "bound": b / f_trl}))
PY
