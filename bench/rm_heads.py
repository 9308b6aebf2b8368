"""Reward-model variants on one demo run's rankings (README, "E1"): a PyTorch replica of
`rlhf reward` (the SFT checkpoint loaded through transformers, a scalar head N(0, 1/(d+1)), each
prompt's C(K,2) pairs in one batch element, AdamW (0.9, 0.95), lr 3e-4 with 10 warmup steps and a
cosine to 10%, clip 1, batches of 8 prompts, the last 150 prompts held out) with other heads and
inputs, scored on the held-out pairs against the labels and against the noise-free oracle.

    rlhf demo --seed 100 --dev --out RUN
    rlhf label --oracle --samples RUN/samples.jsonl --out RUN/oracle.jsonl --tau 0 --overlap 0
    python bench/rm_heads.py --run RUN --pool lastmean --epochs 2

--pool: last (the EOS token, as `rlhf reward`), mean (a per-token head averaged over the
response), sum, lastmean (both); --aux C: an LM loss on the responses times C; --lmfeat: the
frozen SFT model's mean and min log-probability of the response tokens as two learned features;
--init pretrained: start from RUN/pretrained instead of RUN/sft.
"""

import argparse
import json
import math
import time

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM


def pairs_of(ranking):
    """(winner, loser) index pairs of a ranking whose entries are indices or lists of tied ones."""
    place = {}
    for p, group in enumerate(ranking):
        for i in group if isinstance(group, list) else [group]:
            place[i] = p
    return [(i, j) for i in place for j in place if place[i] < place[j]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="demo run folder (sft/, pretrained/, rankings.jsonl)")
    ap.add_argument("--oracle", help="noise-free rankings of the same samples [RUN/oracle.jsonl]")
    ap.add_argument("--init", default="sft", choices=["sft", "pretrained"])
    ap.add_argument("--pool", default="last", choices=["last", "mean", "sum", "lastmean"])
    ap.add_argument("--aux", type=float, default=0.0)
    ap.add_argument("--lmfeat", action="store_true")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--heldout", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    tok = Tokenizer.from_file(f"{a.run}/sft/tokenizer.json")
    eos = tok.token_to_id("<|endoftext|>")
    pad = tok.token_to_id("<|pad|>")
    model = LlamaForCausalLM.from_pretrained(f"{a.run}/{a.init}", torch_dtype=torch.float32)
    d = model.config.hidden_size
    head = torch.nn.Linear(d, 1)
    torch.nn.init.normal_(head.weight, 0.0, (1.0 / (d + 1)) ** 0.5)
    torch.nn.init.zeros_(head.bias)
    frozen, feat_w = None, None
    if a.lmfeat:
        frozen = LlamaForCausalLM.from_pretrained(f"{a.run}/sft", torch_dtype=torch.float32).eval()
        feat_w = torch.nn.Parameter(torch.zeros(2))

    labels = [json.loads(line) for line in open(f"{a.run}/rankings.jsonl")]
    oracle = [json.loads(line) for line in open(a.oracle or f"{a.run}/oracle.jsonl")]
    assert len(labels) == len(oracle), "the oracle file must rank the same samples"

    def encode(prompt, response):
        chat = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
        p = tok.encode(chat, add_special_tokens=True).ids
        return p, tok.encode(response, add_special_tokens=False).ids + [eos]

    items = []
    for lab, orc in zip(labels, oracle):
        assert lab["prompt"] == orc["prompt"] and lab["responses"] == orc["responses"]
        seqs = [encode(lab["prompt"], r) for r in lab["responses"]]
        items.append((seqs, pairs_of(lab["ranking"]), pairs_of(orc["ranking"])))
    train = [it for it in items[: -a.heldout] if it[1]]
    held = items[-a.heldout :]

    def rewards(seqs):
        width = max(len(p) + len(r) for p, r in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        resp = torch.zeros(len(seqs), width)
        last = []
        for i, (p, r) in enumerate(seqs):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            resp[i, len(p) : len(p) + len(r)] = 1
            last.append(len(p) + len(r) - 1)
        hidden = model.model(input_ids=ids).last_hidden_state
        per_token = head(hidden).squeeze(-1)
        at_eos = per_token[torch.arange(len(seqs)), torch.tensor(last)]
        mean = (per_token * resp).sum(1) / resp.sum(1)
        r = {"last": at_eos, "mean": mean, "sum": (per_token * resp).sum(1), "lastmean": at_eos + mean}[a.pool]
        mask = resp[:, 1:]
        aux = None
        if a.aux:
            logp = torch.log_softmax(model.lm_head(hidden[:, :-1]), -1)
            tok_lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
            aux = -(tok_lp * mask).sum() / mask.sum()
        if frozen is not None:
            with torch.no_grad():
                logp = torch.log_softmax(frozen(input_ids=ids).logits[:, :-1], -1)
                tok_lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
                mean_lp = (tok_lp * mask).sum(1) / mask.sum(1)
                min_lp = tok_lp.masked_fill(mask == 0, 0.0).min(1).values
            r = r + feat_w[0] * mean_lp + feat_w[1] * min_lp
        return r, aux

    params = list(model.model.parameters()) + list(head.parameters())
    if feat_w is not None:
        params.append(feat_w)
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    steps = a.epochs * math.ceil(len(train) / a.batch)

    def lr_at(s):
        if s < 10:
            return a.lr * (s + 1) / 10
        t = (s - 10) / max(1, steps - 10)
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    gen = torch.Generator().manual_seed(a.seed)
    step, t0 = 0, time.time()
    for _ in range(a.epochs):
        order = torch.randperm(len(train), generator=gen).tolist()
        for b in range(0, len(order), a.batch):
            batch = [train[i] for i in order[b : b + a.batch]]
            r, aux = rewards([s for it in batch for s in it[0]])
            loss, base = 0.0, 0
            for seqs, lab_pairs, _ in batch:
                w = torch.tensor([base + i for i, _ in lab_pairs])
                l = torch.tensor([base + j for _, j in lab_pairs])
                loss = loss - torch.nn.functional.logsigmoid(r[w] - r[l]).mean() / len(batch)
                base += len(seqs)
            if aux is not None:
                loss = loss + a.aux * aux
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1

    model.eval()
    right = {"labels": [0, 0], "oracle": [0, 0]}
    with torch.no_grad():
        for seqs, lab_pairs, orc_pairs in held:
            r, _ = rewards(seqs)
            for key, ps in (("labels", lab_pairs), ("oracle", orc_pairs)):
                for i, j in ps:
                    right[key][0] += bool(r[i] > r[j])
                    right[key][1] += 1
    acc = {k: 100.0 * v[0] / max(1, v[1]) for k, v in right.items()}
    print(json.dumps({
        "init": a.init, "pool": a.pool, "aux": a.aux, "lmfeat": a.lmfeat, "epochs": a.epochs,
        "lr": a.lr, "seed": a.seed, "labels_pct": round(acc["labels"], 1),
        "oracle_pct": round(acc["oracle"], 1), "oracle_pairs": right["oracle"][1],
        "seconds": round(time.time() - t0, 1),
    }))


if __name__ == "__main__":
    main()
