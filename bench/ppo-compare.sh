#!/usr/bin/env bash
# One PPO iteration (rollouts + update), rlhf vs TRL 1.12's PPOTrainer, on CPU, side by side:
# the same random "micro" Llama policy/reference/value/reward models, 32 prompts of 16 tokens,
# 32-token responses, 4 PPO epochs × 2 minibatches. Runs alternate (rlhf, TRL, rlhf, TRL) so
# background load hits both alike; prints each median and the ratio. Each round also times the
# iteration's matrix products alone (bench/ppo_gemm_floor.py, same libtorch/MKL): TRL's time over
# that floor bounds the speed-up any implementation doing TRL's products could show.
#
# --precision fp32|bf16|both (fp32): bf16 runs rlhf with `--precision bf16` (bf16 products, fp32
# master weights) and TRL with `bf16=True` (accelerate's CPU autocast). `both` interleaves all
# four arms in every round and also prints rlhf's faster precision against each TRL arm.
# --shape "FLAGS": another model shape for all three programs, e.g. a SmolLM2-wide one:
# --shape "--hidden 576 --heads 9 --kv-heads 3 --intermediate 1536" (the micro Llama by default).
# usage: bench/ppo-compare.sh [--threads N] [--rounds N] [--precision fp32|bf16|both] [--shape FLAGS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${OMP_WAIT_POLICY:-}" ]; then
  # It reaches both sides' OpenMP, but a sleeping worker costs rlhf's short kernels more: with
  # PASSIVE a d=576 bf16 PPO iteration took ~30% longer (README, Precision).
  echo "[bench] warning: OMP_WAIT_POLICY=$OMP_WAIT_POLICY is set and changes these timings; unset it to measure as users run" >&2
fi
threads=2 rounds=2 precision=fp32 shape=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --precision) precision="$2"; shift 2 ;;
    --shape) shape="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$precision" in
  fp32|bf16) arms=("$precision") ;;
  both) arms=(fp32 bf16) ;;
  *) echo "--precision: expected fp32, bf16 or both, got '$precision'" >&2; exit 2 ;;
esac
"$root/scripts/setup-env.sh" >&2
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
(cd "$root" && cargo build --release -q -p rlhf-train --example bench_ppo)
read -r -a shape_flags <<< "$shape"
out="$(mktemp -d)"
for r in $(seq "$rounds"); do
  for p in "${arms[@]}"; do
    trl_flag=()
    [ "$p" = bf16 ] && trl_flag=(--bf16)
    echo "[bench] round $r: rlhf ($p)" >&2
    "$root/target/release/examples/bench_ppo" --threads "$threads" --iters 3 --warmup 1 --precision "$p" "${shape_flags[@]}" | tail -1 > "$out/rlhf-$p-$r.json"
    echo "[bench] round $r: TRL ($p)" >&2
    "$root/bench/run-ppo.sh" --threads "$threads" --iters 3 --warmup 1 "${trl_flag[@]}" "${shape_flags[@]}" --out "$out/trl-$p-$r.json" > "$out/trl-$p-$r.log" 2>&1 || { cat "$out/trl-$p-$r.log" >&2; exit 1; }
    if [ "$p" = fp32 ]; then
      echo "[bench] round $r: GEMM floor" >&2
      python3 "$root/bench/ppo_gemm_floor.py" --threads "$threads" "${shape_flags[@]}" > "$out/floor-$r.json"
    fi
  done
done
python3 - "$out" "$rounds" "${arms[@]}" <<'PY'
import json, statistics, sys
out, rounds, arms = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
load = lambda name, p: [json.load(open(f"{out}/{name}-{p}-{r}.json")) for r in range(1, rounds + 1)]
med = lambda runs: statistics.median(x for j in runs for x in j["iters"])
res = {}
for p in arms:
    rl, tr = load("rlhf", p), load("trl", p)
    a, b = med(rl), med(tr)
    res[p] = (a, b)
    print(f"[{p}] rlhf: {a:.3f} s/iteration (rollout {statistics.median(j['rollout_s_median'] for j in rl):.3f} s)")
    print(f"[{p}] TRL {tr[0]['trl_version']}{' bf16=True' if p == 'bf16' else ''}: {b:.3f} s/iteration")
    print(f"[{p}] speed-up: {b / a:.2f}x")
summary = {"threads": load("rlhf", arms[0])[0]["threads"], "rounds": rounds,
           **{f"rlhf_{p}_s": res[p][0] for p in arms}, **{f"trl_{p}_s": res[p][1] for p in arms}}
if "fp32" in arms:
    fl = [json.load(open(f"{out}/floor-{r}.json")) for r in range(1, rounds + 1)]
    f_trl = statistics.median(j["trl"]["total_s"] for j in fl)
    f_rlhf = statistics.median(j["rlhf"]["total_s"] for j in fl)
    a, b = res["fp32"]
    print(f"GEMM floor, fp32 (products alone): TRL's products {f_trl:.3f} s, rlhf's {f_rlhf:.3f} s per iteration")
    print(f"bound: no implementation of TRL's fp32 products with this BLAS can beat TRL by more than {b / f_trl:.2f}x;"
          f" rlhf is at {f_rlhf / a:.0%} of its own floor's speed")
    summary.update(ratio=b / a, floor_trl_s=f_trl, floor_rlhf_s=f_rlhf, bound=b / f_trl,
                   rlhf_s=a, trl_s=b)
if len(arms) == 2:
    best = min(arms, key=lambda p: res[p][0])
    a = res[best][0]
    for p in arms:
        print(f"rlhf at its faster precision ({best}) vs TRL {p}: {res[p][1] / a:.2f}x")
        summary[f"best_vs_trl_{p}"] = res[p][1] / a
    summary["rlhf_best_precision"] = best
print(json.dumps(summary))
PY
