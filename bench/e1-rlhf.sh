#!/usr/bin/env bash
# Experiment E1 (issue D): does PPO against a learned reward model beat the SFT policy on the
# task world's noise-free oracle? Over several seeds of the RLHF stages (samples, labels, reward
# model, PPO, evaluation) on one shared SFT model, as InstructGPT compares against a fixed SFT.
#
#   bench/e1-rlhf.sh OUT [SEED...]        (default seeds: 0 1 2; ~23 min per seed on 2 cores, PPO-ptx included)
#
# Shared base: task world (3000 RL prompts, 300 held-out eval problems) → pretrain 600 steps → SFT
# 300 steps. Per seed: 8 samples for each of the 3000 prompts → simulated labelers rank them →
# reward model (1 epoch, grouped K-way loss) → PPO with β = 0.1 for 60 iterations, and PPO-ptx
# (the same plus the pretraining loss on the corpus, γ = 1) → `rlhf eval` on the held-out prompts
# by the oracle (win rate vs SFT with a 95% bootstrap CI, KL) and the NLL of the last 300 corpus
# documents (the "alignment tax"). E1_PTX=0 skips PPO-ptx.
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
  [ "${E1_PTX:-1}" = 1 ] || continue
  [ -f "$d/ppo-ptx/model.safetensors" ] || rlhf ppo --policy "$out/sft" --reward "$d/rm" \
      --prompts "$out/world/prompts.jsonl" --eval-prompts "$out/world/eval.jsonl" --out "$d/ppo-ptx" \
      --ptx-data "$out/world/corpus.txt" --ptx-coef 1 \
      --set seed="$s" --set iterations=60 --set kl_coef=0.1 --set eval_every=20 >&2
  [ -f "$d/eval-ptx/eval.json" ] || rlhf eval --model "$d/ppo-ptx" --baseline "$out/sft" \
      --prompts "$out/world/eval.jsonl" --judge oracle --seed "$s" --out "$d/eval-ptx" >&2
  if [ ! -f "$out/heldout.jsonl" ]; then
    python3 -c 'import json,sys; d=[x.strip() for x in open(sys.argv[1]).read().split("\n\n") if x.strip()]
print("".join(json.dumps({"text": t})+"\n" for t in d[-300:]), end="")' "$out/world/corpus.txt" > "$out/heldout.jsonl"
  fi
  for m in sft ppo ppo-ptx; do
    dir="$d/$m"; [ "$m" = sft ] && dir="$out/sft"
    [ -f "$d/nll-$m.json" ] || rlhf nll --model "$dir" --data "$out/heldout.jsonl" > "$d/nll-$m.json"
  done
done
python3 - "$out" "${seeds[@]}" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = ["| seed | RM acc. vs labels | RM acc. vs oracle | PPO win rate vs SFT [95% CI] | oracle score PPO / SFT | KL (nats) | PPO-ptx win rate [95% CI] | corpus NLL SFT / PPO / PPO-ptx |",
        "|---|---|---|---|---|---|---|---|"]
for s in sys.argv[2:]:
    d = out / f"seed{s}"
    rm = json.load(open(d / "rm" / "summary.json"))["eval_accuracy_end"]
    ev = json.load(open(d / "eval" / "eval.json"))
    w, a, b, kl = ev["win_rate"], ev["score_a"], ev["score_b"], ev["kl"]
    ptx, nll = "-", "-"
    if (d / "eval-ptx" / "eval.json").exists():
        p = json.load(open(d / "eval-ptx" / "eval.json"))["win_rate"]
        ptx = f"{p['mean']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"
    if all((d / f"nll-{m}.json").exists() for m in ("sft", "ppo", "ppo-ptx")):
        nll = " / ".join(f"{json.load(open(d / f'nll-{m}.json'))['mean_nll']:.3f}" for m in ("sft", "ppo", "ppo-ptx"))
    rows.append(f"| {s} | {100*rm['labels']:.1f}% | {100*rm['oracle']:.1f}% | {w['mean']:.3f} [{w['lo']:.3f}, {w['hi']:.3f}] | "
                f"{a['mean']:.3f} / {b['mean']:.3f} | {kl['mean']:.2f} | {ptx} | {nll} |")
(out / "e1.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
