"""Can the demo's models do the word problems' arithmetic? (README, "E1": why the reward model
stays below 75% against the oracle.) For every equation "a op b =" written in a demo run's
word-problem samples, the script feeds the prompt and the response up to that "=" to a checkpoint
and counts how often the most likely next token is the true result. The SFT model is asked
through its chat template, the pretrained model in the corpus's "prompt\\nsolution" shape.
A reward model fine-tuned from these checkpoints has to tell true equations from false ones to
follow the rubric's finer order; this measures what its starting point knows.

    rlhf demo --out RUN
    python bench/arith_probe.py --run RUN [--max 600]
"""

import argparse
import json
import random
import re

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

EQUATION = re.compile(r"(\d+) ([+\-]) (\d+) =")


def equations(samples, limit, seed):
    """(prompt, response prefix ending in "=", true result) for the samples' equations."""
    items = []
    with open(samples) as f:
        for line in f:
            r = json.loads(line)
            if "How many" not in r["prompt"]:
                continue
            for resp in r["responses"]:
                for m in EQUATION.finditer(resp):
                    a, b = int(m.group(1)), int(m.group(3))
                    c = a + b if m.group(2) == "+" else a - b
                    if 0 <= c <= 99:
                        items.append((r["prompt"], resp[: m.end()], c, resp[m.end() :]))
    random.Random(seed).shuffle(items)
    return items[:limit]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="demo run folder (samples.jsonl, pretrained/, sft/)")
    ap.add_argument("--max", type=int, default=600, help="equations to probe [600]")
    ap.add_argument("--seed", type=int, default=0, help="which equations, when there are more than --max [0]")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    items = equations(f"{a.run}/samples.jsonl", a.max, a.seed)
    if not items:
        raise SystemExit(f"{a.run}/samples.jsonl: no word-problem equations 'a + b =' or 'a - b ='")
    tok = Tokenizer.from_file(f"{a.run}/sft/tokenizer.json")
    # What the SFT model itself wrote after each "=": a true result or not.
    written = sum(1 for _, _, c, rest in items if re.match(rf"\s*{c}\b", rest)) / len(items)
    print(f"{len(items)} equations from {a.run}/samples.jsonl; the SFT samples (T = 1) wrote the true result after {100 * written:.1f}%")
    for name in ("pretrained", "sft"):
        model = LlamaForCausalLM.from_pretrained(f"{a.run}/{name}", torch_dtype=torch.float32).eval()
        right = 0
        for prompt, prefix, c, _ in items:
            if name == "sft":
                text = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{prefix}"
            else:
                text = f"{prompt}\n{prefix}"
            ids = tok.encode(text).ids
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1]
            right += int(logits.argmax().item() == tok.token_to_id(f"Ġ{c}"))
        print(f"{name}: the most likely next token after '=' is the true result {100 * right / len(items):.1f}% of the time")


if __name__ == "__main__":
    main()
