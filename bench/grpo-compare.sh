#!/usr/bin/env bash
# One GRPO iteration, rlhf vs TRL's GRPOTrainer, on CPU, side by side: the same random "micro"
# Llama, 8 prompts of 16 tokens × G = 8 samples of at most 32 tokens at temperature 1 (KV cache on
# both sides), a cheap reward (length in characters), β = 0.04 (reference pass), group-normalised
# advantages, one optimizer step over the 64 samples, fp32, AdamW. An iteration is everything from
# sampling to the optimizer step. Runs alternate (rlhf, TRL, ...) so background load hits both
# alike; prints each median (over rounds × iterations) and the ratio.
# usage: bench/grpo-compare.sh [--threads N] [--rounds N] [--iters N]
exec "$(dirname "${BASH_SOURCE[0]}")/trl-compare.sh" grpo iteration --iters iters 5 "$@"
