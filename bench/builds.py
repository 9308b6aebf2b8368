"""Two builds of rlhf side by side on one CPU: the training step (`bench_train_step`) and batched
sampling (`bench_sampling`), interleaved rounds, medians. For "is this build slower than that
one" (README, Precision: fp32 before and after the bf16 work on a CPU without bf16 instructions).

    git worktree add /tmp/old COMMIT && (cd /tmp/old && cargo build --release \\
        -p rlhf-train --example bench_train_step && cargo build --release -p rlhf-model \\
        --example bench_sampling)
    cargo build --release -p rlhf-train --example bench_train_step
    cargo build --release -p rlhf-model --features jemalloc --example bench_sampling
    python bench/builds.py --old /tmp/old/target --new target --smollm2 /tmp/smollm2

The new build runs `--precision auto` (older builds have no such argument and run fp32); with
`--bf16` it also runs forced bf16 (both weight-gradient paths). PyTorch fp32 runs the same steps.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import train_step  # noqa: E402


def json_lines(args, env):
    """The JSON lines a helper binary prints, run with `env` on top of this process's."""
    out = subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def steps(binary, model, c, n, extra=(), env=None):
    return json_lines([binary, model, c["B"], c["T"], n, 2, *extra], env)[-1]["tokens_per_s"]


def sample(binary, model, prompt, new, reps, env=None):
    """The median of `reps` timed runs in one process (after its warm-up run)."""
    lines = json_lines([binary, model, 16, prompt, new, reps, 2], env)
    return statistics.median(line["seconds"] for line in lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="the older build's target dir")
    ap.add_argument("--new", required=True, help="the newer build's target dir")
    ap.add_argument("--smollm2", help="an imported SmolLM2 checkpoint (sampling at batch 16)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--bf16", action="store_true", help="also the new build forced to bf16")
    ap.add_argument("--models", default="/tmp/ts", help="where the bench GPTs are made")
    a = ap.parse_args()
    ex = lambda t, name: str(pathlib.Path(t) / "release" / "examples" / name)  # noqa: E731
    import torch
    torch.set_num_threads(2)
    res = {}

    def note(key, v):
        res.setdefault(key, []).append(v)
        print(*key, round(v, 4), flush=True)

    for _ in range(a.rounds):
        for name in ["tiny", "wide"]:
            c, d = train_step.CONFIGS[name], f"{a.models}/{name}"
            if not pathlib.Path(d).exists():
                train_step.make(d, c)
            note((name, "step tok/s", "old"), steps(ex(a.old, "bench_train_step"), d, c, a.steps))
            note((name, "step tok/s", "new auto"),
                 steps(ex(a.new, "bench_train_step"), d, c, a.steps, ["auto"]))
            if a.bf16 and name == "wide":
                for grad in ["mkl", "libtorch"]:
                    note((name, "step tok/s", f"new bf16 {grad}"),
                         steps(ex(a.new, "bench_train_step"), d, c, a.steps, ["bf16"],
                               {"RLHF_BF16_WEIGHT_GRAD": grad}))
            note((name, "step tok/s", "PyTorch fp32"), train_step.torch_steps(d, c, a.steps))
            # Sampling: 16 prompts of 16 tokens, 48 new tokens (the tiny GPTs' context is 64).
            note((name, "sampling s", "old"), sample(ex(a.old, "bench_sampling"), d, 16, 48, 5))
            note((name, "sampling s", "new auto"),
                 sample(ex(a.new, "bench_sampling"), d, 16, 48, 5, {"RLHF_PRECISION": "auto"}))
        if a.smollm2:
            d = a.smollm2
            note(("smollm2", "sampling s", "old"), sample(ex(a.old, "bench_sampling"), d, 16, 64, 2))
            for p in ["auto"] + (["bf16"] if a.bf16 else []):
                note(("smollm2", "sampling s", f"new {p}"),
                     sample(ex(a.new, "bench_sampling"), d, 16, 64, 2, {"RLHF_PRECISION": p}))
    print("\nmedians:")
    for key, v in res.items():
        print(f"{' '.join(key):40s} {statistics.median(v):10.4f}  {[round(x, 4) for x in v]}")


if __name__ == "__main__":
    main()
