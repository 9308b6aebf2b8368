#!/usr/bin/env bash
# One DPO optimizer step, rlhf vs TRL's DPOTrainer, on CPU, side by side: the same random "micro"
# Llama, 8 pairs of a 16-token prompt and two 32-token completions (+ EOS), sigmoid loss,
# reference log-probs precomputed, fp32, AdamW. Runs alternate (rlhf, TRL, ...) so background load
# hits both alike; prints each median (over rounds × steps) and the ratio.
# usage: bench/dpo-compare.sh [--threads N] [--rounds N] [--steps N]
exec "$(dirname "${BASH_SOURCE[0]}")/trl-compare.sh" dpo step --steps steps 10 "$@"
