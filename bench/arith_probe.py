"""Can the demo's models do the word problems' arithmetic? (README, "E1": why the reward model
stays below 75% against the oracle.) For the equations "a + b =" and "a - b =" (true result
0..99) written in a demo run's word-problem samples, the script feeds the prompt and the response
up to that "=" to a checkpoint and counts how often greedy decoding gives the true result. The SFT model is asked
through its chat template, the pretrained model in the corpus's "prompt\\nsolution" shape.
A reward model fine-tuned from these checkpoints has to tell true equations from false ones to
follow the rubric's finer order; this measures what its starting point knows.

    rlhf demo --out RUN
    python bench/arith_probe.py --run RUN [--max 600]

--drill DIR: first teach the SFT model the tables, then probe it. It is fine-tuned for --steps
steps (AdamW, lr 1e-3) on batches of 16 drill texts (six clauses "NAME VERB X, so a + b = c."
or "a - b = c", operands up to 60, X the second operand half the time) plus 16 of the run's own
demonstrations as SFT sees them (chat template, loss on the completion and EOS only), so it keeps
its SFT behaviour. DIR gets the drilled model as
DIR/sft beside links to the run's samples, rankings, data, pretrained model and (if it exists
already) oracle.jsonl, so that `bench/rm_heads.py --run DIR` trains a reward model from it.
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

EQUATION = re.compile(r"(?<![\d=])(\d+) ([+\-]) (\d+) =")
CHAT = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def equations(samples, limit, seed):
    """(prompt, response prefix ending in "=", true result, rest of the response) for the samples'
    word-problem equations "a + b =" and "a - b =" whose true result lies in 0..99."""
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
        add = rng.random() < 0.5 and a + b <= 99
        if not add:
            a, b = max(a, b), min(a, b)
        x = b if rng.random() < 0.5 else rng.randint(1, 20)
        head = f"{rng.choice(names)} {rng.choice(verbs)} {x}, so"
        return f"{head} {a} + {b} = {a + b}." if add else f"{head} {a} - {b} = {a - b}."

    eos = tok.token_to_id("<|endoftext|>")
    pad = tok.token_to_id("<|pad|>")
    # Demonstrations as SFT sees them (loss on the completion and its EOS only), tokenized once.
    demos = []
    with open(f"{run}/data/sft.jsonl") as f:
        for line in f:
            d = json.loads(line)
            head = tok.encode(CHAT.format(prompt=d["prompt"])).ids
            tail = tok.encode(f"{d['completion']}<|im_end|>\n").ids + [eos]
            demos.append(((head + tail)[:128], ([-100] * len(head) + tail)[:128]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    for step in range(steps):
        drills = [tok.encode(" ".join(clause() for _ in range(6))).ids[:96] for _ in range(16)]
        n = min(len(d) for d in drills)
        x = torch.tensor([d[:n] for d in drills])
        loss = model(x, labels=x).loss
        chats = [rng.choice(demos) for _ in range(16)]
        n = max(len(ids) for ids, _ in chats)
        y = torch.tensor([ids + [pad] * (n - len(ids)) for ids, _ in chats])
        labels = torch.tensor([lab + [-100] * (n - len(lab)) for _, lab in chats])
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
        link, target = f"{out}/{name}", os.path.abspath(f"{run}/{name}")
        if not os.path.exists(target):
            continue
        if os.path.islink(link):
            os.remove(link)
        elif os.path.lexists(link):
            raise SystemExit(f"{link}: exists and is not a link to {target}; choose an empty --drill folder")
        os.symlink(target, link)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--run", required=True, help="demo run folder (samples.jsonl, pretrained/, sft/; data/sft.jsonl for --drill)"
    )
    ap.add_argument("--max", type=int, default=600, help="equations to probe [600]")
    ap.add_argument(
        "--seed", type=int, default=0, help="which equations when there are more than --max, and the drill's draws [0]"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    ap.add_argument("--drill", metavar="DIR", help="teach the SFT model the tables first and probe it (see above)")
    ap.add_argument("--steps", type=int, default=2000, help="drill steps, with --drill [2000]")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    models = ("pretrained", "sft")
    if a.drill:
        if os.path.realpath(a.drill) == os.path.realpath(a.run):
            raise SystemExit("--drill must name a folder other than --run (it writes DIR/sft)")
        drill_model(a.run, a.drill, a.steps, a.seed)
        a.run = a.drill
        models = ("sft",)
    items = equations(f"{a.run}/samples.jsonl", a.max, a.seed)
    if not items:
        raise SystemExit(f"{a.run}/samples.jsonl: no word-problem equations 'a + b =' or 'a - b ='")
    tok = Tokenizer.from_file(f"{a.run}/sft/tokenizer.json")
    # What the SFT model itself wrote after each "=": a true result or not.
    written = sum(1 for _, _, c, rest in items if re.match(rf"\s*{c}\b", rest)) / len(items)
    print(f"{len(items)} equations from {a.run}/samples.jsonl; the SFT samples (T = 1) wrote the true result after {100 * written:.1f}%")
    for name in models:
        model = LlamaForCausalLM.from_pretrained(f"{a.run}/{name}", torch_dtype=torch.float32).eval()
        right = 0
        for prompt, prefix, c, _ in items:
            if name == "sft":
                text = CHAT.format(prompt=prompt) + prefix
            else:
                text = f"{prompt}\n{prefix}"
            ids = tok.encode(text).ids
            # " c" may take more than one token (" 0" does in the demo's vocabulary): greedy decoding
            # has to produce each of them in turn.
            want = tok.encode(f" {c}").ids
            ok = True
            for t in want:
                with torch.no_grad():
                    logits = model(torch.tensor([ids])).logits[0, -1]
                if logits.argmax().item() != t:
                    ok = False
                    break
                ids.append(t)
            right += int(ok)
        label = "drilled sft" if a.drill else name
        print(f"{label}: greedy decoding after '=' gives the true result {100 * right / len(items):.1f}% of the time")


if __name__ == "__main__":
    main()
