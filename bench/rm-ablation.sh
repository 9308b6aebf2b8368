#!/usr/bin/env bash
# Reward-model ablation (issue C): per-prompt grouping (InstructGPT) vs shuffled independent
# pairs, after 1 and 3 epochs, on the SFT model and rankings of a finished `rlhf demo` run.
# Reports held-out pairwise accuracy against the noisy labels and the noise-free oracle, and
# the training loss, so overfitting shows as a gap.
# usage: bench/rm-ablation.sh RUN_DIR   (e.g. runs/demo-…; needs RUN_DIR/sft, RUN_DIR/rankings.jsonl)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="${1:?usage: bench/rm-ablation.sh RUN_DIR}"
rlhf="$root/scripts/rlhf"
for pairing in grouped shuffled; do
  for epochs in 1 3; do
    out="$run/ablation/$pairing-${epochs}ep"
    if [ ! -f "$out/summary.json" ]; then
      echo "[ablation] $pairing, $epochs epoch(s)" >&2
      rm -rf "$out"
      "$rlhf" reward --model "$run/sft" --data "$run/rankings.jsonl" --out "$out" \
        --set "pairing=\"$pairing\"" --set "epochs=$epochs" >&2
    fi
  done
done
python3 - "$run/ablation" <<'PY'
import json, pathlib, sys
d = pathlib.Path(sys.argv[1])
rows = []
for pairing in ("grouped", "shuffled"):
    for epochs in (1, 3):
        s = json.load(open(d / f"{pairing}-{epochs}ep" / "summary.json"))
        last = [json.loads(l) for l in open(d / f"{pairing}-{epochs}ep" / "metrics.jsonl")]
        train_loss = sum(r["loss"] for r in last[-10:] if "loss" in r) / max(1, len([r for r in last[-10:] if "loss" in r]))
        e = s["eval_accuracy_end"]
        rows.append(f"| {pairing} | {epochs} | {s['steps']} | {s['elapsed_s']:.0f} | {train_loss:.3f} | "
                    f"{100*e['labels']:.1f}% | {100*(e['oracle'] or float('nan')):.1f}% |")
print("| pairing | epochs | steps | seconds | train loss (last 10 steps) | held-out acc. vs labels | vs noise-free oracle |")
print("|---|---|---|---|---|---|---|")
print("\n".join(rows))
PY
