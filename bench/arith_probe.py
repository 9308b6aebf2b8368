"""Can the demo's models do the word problems' arithmetic? (README, "E1": why the reward model
stays below 75% against the oracle.) For every equation "a op b =" written in a demo run's
word-problem samples, the script feeds the prompt and the response up to that "=" to a checkpoint
and counts how often the most likely next token is the true result. The SFT model is asked
through its chat template, the pretrained model in the corpus's "prompt\\nsolution" shape.
A reward model fine-tuned from these checkpoints has to tell true equations from false ones to
follow the rubric's finer order; this measures what its starting point knows.

    rlhf demo --out RUN
    python bench/arith_probe.py --run RUN [--max 600]

--drill DIR: first teach the SFT model the tables, then probe it. It is fine-tuned for --steps
steps (AdamW, lr 1e-3) on batches of 16 drill texts (six clauses "NAME VERB X, so a + b = c."
or "a - b = c", operands up to 60, X the operand half the time) plus 16 of the run's own
demonstrations in the chat template, so it keeps its SFT behaviour. DIR gets the drilled model as
DIR/sft beside links to the run's samples, rankings and pretrained model, so that
`bench/rm_heads.py --run DIR` trains a reward model from it.
"""

import argparse
import json
import os
import random
import re
import shutil

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


def drill_model(run, out, steps, seed):
    """Fine-tune RUN/sft on arithmetic drills mixed with its demonstrations; save to OUT/sft."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tok = Tokenizer.from_file(f"{run}/sft/tokenizer.json")
    model = LlamaForCausalLM.from_pretrained(f"{run}/sft", torch_dtype=torch.float32)
    names = ["Sam", "Lena", "Joel", "Ella", "Jack", "Lucy"]
    verbs = ["finds", "buys", "gets", "loses", "sells", "gives away", "eats", "collects"]

    def clause():
        a, b = rng.randint(0, 60), rng.randint(0, 60)
        x = b if rng.random() < 0.5 else rng.randint(1, 20)
        head = f"{rng.choice(names)} {rng.choice(verbs)} {x}, so"
        if rng.random() < 0.5 and a + b <= 99:
            return f"{head} {a} + {b} = {a + b}."
        a, b = max(a, b), min(a, b)
        return f"{head} {a} - {b} = {a - b}."

    with open(f"{run}/data/sft.jsonl") as f:
        demos = [json.loads(line) for line in f]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    for step in range(steps):
        drills = [tok.encode(" ".join(clause() for _ in range(6))).ids[:96] for _ in range(16)]
        n = min(len(d) for d in drills)
        x = torch.tensor([d[:n] for d in drills])
        loss = model(x, labels=x).loss
        chats = []
        for _ in range(16):
            d = rng.choice(demos)
            text = f"<|im_start|>user\n{d['prompt']}<|im_end|>\n<|im_start|>assistant\n{d['completion']}<|im_end|>\n"
            chats.append(tok.encode(text).ids[:128])
        n = max(len(c) for c in chats)
        y = torch.tensor([c + [0] * (n - len(c)) for c in chats])
        labels = torch.tensor([c + [-100] * (n - len(c)) for c in chats])
        loss = loss + model(y, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"drill step {step}: loss {loss.item():.3f}", flush=True)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(f"{out}/sft", safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{run}/sft/{name}", f"{out}/sft/{name}")
    for name in ("samples.jsonl", "rankings.jsonl", "oracle.jsonl", "pretrained", "data"):
        link = f"{out}/{name}"
        if os.path.exists(f"{run}/{name}") and not os.path.lexists(link):
            os.symlink(os.path.abspath(f"{run}/{name}"), link)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="demo run folder (samples.jsonl, pretrained/, sft/)")
    ap.add_argument("--max", type=int, default=600, help="equations to probe [600]")
    ap.add_argument("--seed", type=int, default=0, help="which equations, when there are more than --max [0]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--drill", metavar="DIR", help="teach the SFT model the tables first and probe it (see above)")
    ap.add_argument("--steps", type=int, default=2000, help="drill steps [2000]")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.drill:
        drill_model(a.run, a.drill, a.steps, a.seed)
        a.run = a.drill
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
