#!/usr/bin/env bash
# Experiment E1 (issue D): does PPO against a learned reward model beat the SFT policy on the
# task world's noise-free oracle? Over several seeds of the RLHF stages (samples, labels, reward
# model, PPO, evaluation) on one shared SFT model, as InstructGPT compares against a fixed SFT.
#
#   bench/e1-rlhf.sh OUT [SEED...]        (default seeds: 0 1 2; ~15 min per seed on 2 cores)
#
# Shared base: task world (3000 RL prompts, 300 held-out eval problems) → pretrain 600 steps → SFT
# 300 steps. Per seed: 8 samples for each of the 3000 prompts → simulated labelers rank them →
# reward model (1 epoch, grouped K-way loss) → PPO with β = 0.1 for 60 iterations → `rlhf eval`
# on the held-out prompts by the oracle (win rate vs SFT with a 95% bootstrap CI, KL).
# Results: OUT/e1.md (table) and every stage's artifacts under OUT/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: bench/e1-rlhf.sh OUT [SEED...]}"
shift
seeds=("$@")
[ $# -gt 0 ] || seeds=(0 1 2)
# RLHF_THREADS=N limits libtorch's threads (e.g. to run beside other work); RLHF_BIN=PATH uses
# that binary instead of building one (scripts/rlhf).
rlhf() { ${RLHF_BIN:-"$root/scripts/rlhf"} ${RLHF_THREADS:+--threads "$RLHF_THREADS"} "$@"; }
mkdir -p "$out"
[ -f "$out/world/prompts.jsonl" ] || rlhf data --out "$out/world" --set prompts=3000 >&2
[ -f "$out/pretrained/model.safetensors" ] || rlhf pretrain --data "$out/world" --out "$out/pretrained" >&2
[ -f "$out/sft/model.safetensors" ] || rlhf sft --model "$out/pretrained" --data "$out/world/sft.jsonl" --out "$out/sft" >&2
for s in "${seeds[@]}"; do
  d="$out/seed$s"
  mkdir -p "$d"
  [ -f "$d/samples.jsonl" ] || rlhf sample --model "$out/sft" --prompts "$out/world/prompts.jsonl" \
      --k 8 --seed "$s" --batch-size 128 --out "$d/samples.jsonl" >&2
  [ -f "$d/rankings.jsonl" ] || rlhf label --oracle --samples "$d/samples.jsonl" --seed "$s" \
      --out "$d/rankings.jsonl" >&2
  [ -f "$d/rm/summary.json" ] || rlhf reward --model "$out/sft" --data "$d/rankings.jsonl" \
      --out "$d/rm" --set trainer.seed="$s" >&2
  [ -f "$d/ppo/model.safetensors" ] || rlhf ppo --policy "$out/sft" --reward "$d/rm" \
      --prompts "$out/world/prompts.jsonl" --eval-prompts "$out/world/eval.jsonl" --out "$d/ppo" \
      --set seed="$s" --set iterations=60 --set kl_coef=0.1 --set eval_every=20 >&2
  [ -f "$d/eval/eval.json" ] || rlhf eval --model "$d/ppo" --baseline "$out/sft" \
      --prompts "$out/world/eval.jsonl" --judge oracle --seed "$s" --out "$d/eval" >&2
done
python3 - "$out" "${seeds[@]}" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = ["| seed | RM acc. vs labels | RM acc. vs oracle | PPO win rate vs SFT [95% CI] | oracle score PPO / SFT | KL (nats) |",
        "|---|---|---|---|---|---|"]
for s in sys.argv[2:]:
    d = out / f"seed{s}"
    rm = json.load(open(d / "rm" / "summary.json"))["eval_accuracy_end"]
    ev = json.load(open(d / "eval" / "eval.json"))
    w, a, b, kl = ev["win_rate"], ev["score_a"], ev["score_b"], ev["kl"]
    rows.append(f"| {s} | {100*rm['labels']:.1f}% | {100*rm['oracle']:.1f}% | {w['mean']:.3f} [{w['lo']:.3f}, {w['hi']:.3f}] | "
                f"{a['mean']:.3f} / {b['mean']:.3f} | {kl['mean']:.2f} |")
(out / "e1.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
