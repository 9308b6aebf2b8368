"""One training step (forward, loss, backward, AdamW) of a tiny GPT: rlhf (Rust + libtorch) vs
plain PyTorch with the same model, same weights, same threads, interleaved runs. Prints tokens/s,
the ratio and the achieved GFLOP/s (6 * params * tokens + attention, the usual estimate).

With `--precision bf16` (or `both`), rlhf runs `--precision bf16` (bf16 products on fp32 master
weights) and PyTorch runs the same step under `torch.autocast("cpu", torch.bfloat16)`; the fp32
pair runs beside it, so every ratio comes from one interleaved run.

    bench/run-train-step.sh
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import tempfile
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

CONFIGS = {
    "tiny": dict(n_embd=128, n_layer=4, n_head=4, vocab_size=128, T=64, B=32),
    "bigger": dict(n_embd=256, n_layer=6, n_head=8, vocab_size=128, T=128, B=16),
    # SmolLM2-135M's width (576, 9 heads) and a 4k vocabulary: products the size of a real model's.
    "wide": dict(n_embd=576, n_layer=4, n_head=9, vocab_size=4096, T=128, B=8),
}


def make(out, c):
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=c["n_embd"], n_layer=c["n_layer"], n_head=c["n_head"],
                     vocab_size=c["vocab_size"], n_positions=c["T"], bos_token_id=None,
                     eos_token_id=None, attn_implementation="sdpa")
    GPT2LMHeadModel(cfg).save_pretrained(out)
    return out


def flops_per_token(c, params):
    # 6N for the matmuls (forward + backward) plus attention scores and values: 12 L T C.
    return 6 * params + 12 * c["n_layer"] * c["T"] * c["n_embd"]


def torch_steps(model_dir, c, steps, bf16=False):
    model = GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation="sdpa").train()
    for m in model.modules():  # no dropout, as on the Rust side
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, c["vocab_size"], (c["B"], c["T"]), generator=g)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return c["B"] * c["T"] * steps / (time.perf_counter() - t0)


def rust_steps(binary, model_dir, c, steps, threads, precision="fp32"):
    res = subprocess.run([binary, str(model_dir), str(c["B"]), str(c["T"]), str(steps),
                          str(threads), precision], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["tokens_per_s"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--precision", choices=["fp32", "bf16", "both"], default="fp32",
                   help="fp32: rlhf vs PyTorch eager; bf16/both: also rlhf bf16 vs PyTorch "
                        "CPU autocast (both keeps the fp32 pair beside it)")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated subset of {', '.join(CONFIGS)}")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            c = CONFIGS[name]
            d = make(pathlib.Path(tmp) / name, c)
            params = sum(p.numel() for p in GPT2LMHeadModel.from_pretrained(d).parameters())
            runs = {}
            if args.precision in ("fp32", "both"):
                runs["rlhf"] = lambda: rust_steps(args.binary, d, c, args.steps, args.threads)
                runs["pytorch"] = lambda: torch_steps(d, c, args.steps)
            if args.precision in ("bf16", "both"):
                runs["rlhf-bf16"] = lambda: rust_steps(args.binary, d, c, args.steps,
                                                       args.threads, "bf16")
                runs["pt-autocast"] = lambda: torch_steps(d, c, args.steps, bf16=True)
            rates = {k: [] for k in runs}
            for _ in range(args.rounds):
                for k, run in runs.items():
                    rates[k].append(run())
            med = {k: statistics.median(v) for k, v in rates.items()}
            fpt = flops_per_token(c, params)
            print(f"\n## {name}: d={c['n_embd']} L={c['n_layer']} H={c['n_head']} "
                  f"V={c['vocab_size']} T={c['T']} B={c['B']}, {params} params, "
                  f"{args.threads} threads, {args.rounds} interleaved rounds of {args.steps} steps")
            for k, v in med.items():
                print(f"  {k:8s} {v:9.0f} tok/s  {v * fpt / 1e9:6.1f} GFLOP/s  "
                      f"(runs: {', '.join(f'{x:.0f}' for x in rates[k])})")
            for a, b in [("rlhf", "pytorch"), ("rlhf-bf16", "pytorch"), ("rlhf-bf16", "pt-autocast"),
                         ("rlhf-bf16", "rlhf")]:
                if a in med and b in med:
                    print(f"  {a} / {b} = {med[a] / med[b]:.2f}x")


if __name__ == "__main__":
    main()
