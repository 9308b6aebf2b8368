"""Batched KV-cache sampling: rlhf (Rust, libtorch) vs transformers' generate() vs a plain PyTorch
sampling loop (the HF model's forward with its cache, no generate() machinery), same weights,
same threads, interleaved runs. Prints tokens/s and the ratios. rlhf runs twice per round: with
its decode kernels (the default) and with `RLHF_DECODE_KERNEL=torch` (every product and the
one-token attention by libtorch).

    bench/run-sampling.sh            # builds the Rust side, then runs this
Models: the tiny GPT (d=128, 4 layers, 4 heads, vocab 128, random weights, made here) and, when
given with --smollm2 DIR, the imported SmolLM2-135M checkpoint.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel


def tiny_gpt(out):
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=128, n_layer=4, n_head=4, vocab_size=128, n_positions=256,
                     bos_token_id=None, eos_token_id=None)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    return out


def prompts(batch, plen, vocab):
    return torch.tensor([[(i * 7 + j * 13) % vocab for j in range(plen)] for i in range(batch)])


def hf_generate(model, ids, new):
    t0 = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                         max_new_tokens=new, min_new_tokens=new, temperature=1.0, top_k=0,
                         top_p=1.0, pad_token_id=0)
    return (out.shape[1] - ids.shape[1]) * ids.shape[0], time.perf_counter() - t0


@torch.inference_mode()
def plain_loop(model, ids, new):
    """The loop a careful PyTorch user writes: forward with the cache, sample, append."""
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1]
    toks = []
    for _ in range(new):
        nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1)
        toks.append(nxt)
        out = model(input_ids=nxt, past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
    return len(toks) * ids.shape[0], time.perf_counter() - t0


def rust(binary, model_dir, batch, plen, new, reps, threads, kernel="auto", precision="fp32"):
    """kernel="torch" turns off rlhf's decode kernels (`RLHF_DECODE_KERNEL`), so every product
    and the attention go through libtorch (matmul, SDPA) as in the Python runs. precision="bf16"
    decodes from bf16 copies of the weights (`--precision bf16`)."""
    env = dict(os.environ, RLHF_DECODE_KERNEL=kernel, RLHF_PRECISION=precision)
    res = subprocess.run([binary, str(model_dir), str(batch), str(plen), str(new), str(reps),
                          str(threads)], check=True, capture_output=True, text=True, env=env)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def bench(name, model_dir, binary, args):
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = prompts(args.batch, args.prompt_len, model.config.vocab_size)
    hf_generate(model, ids, 4), plain_loop(model, ids, 4)  # warm-up
    rates = {"rlhf": [], "rlhf bf16": [], "rlhf, kernels off": [], "generate": [],
             "plain loop": []}
    for _ in range(args.rounds):  # interleaved: each round runs all five
        for kernel, key, prec in (("auto", "rlhf", "fp32"), ("auto", "rlhf bf16", "bf16"),
                                  ("torch", "rlhf, kernels off", "fp32")):
            for r in rust(binary, model_dir, args.batch, args.prompt_len, args.new, 1,
                          args.threads, kernel, prec):
                rates[key].append(r["tokens"] / r["seconds"])
        n, s = hf_generate(model, ids, args.new)
        rates["generate"].append(n / s)
        n, s = plain_loop(model, ids, args.new)
        rates["plain loop"].append(n / s)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n## {name}: batch {args.batch}, prompt {args.prompt_len}, {args.new} new tokens, "
          f"{args.threads} threads, {args.rounds} interleaved rounds (median tokens/s)")
    for k, v in med.items():
        print(f"  {k:17s} {v:10.1f} tok/s   (runs: {', '.join(f'{x:.0f}' for x in rates[k])})")
    print(f"  rlhf / generate   = {med['rlhf'] / med['generate']:.2f}x")
    print(f"  rlhf / plain loop = {med['rlhf'] / med['plain loop']:.2f}x")
    print(f"  rlhf bf16 / rlhf fp32 = {med['rlhf bf16'] / med['rlhf']:.2f}x (bf16 weight copies)")
    print(f"  rlhf / rlhf with libtorch's matmul and SDPA = "
          f"{med['rlhf'] / med['rlhf, kernels off']:.2f}x (the decode kernels' share)")
    return med


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--smollm2", type=pathlib.Path)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench("tiny GPT (d=128, L=4, H=4, V=128)", tiny_gpt(pathlib.Path(tmp) / "tiny"),
              args.binary, args)
    if args.smollm2:
        args.rounds = max(2, args.rounds // 2)
        bench("SmolLM2-135M", args.smollm2, args.binary, args)


if __name__ == "__main__":
    main()
