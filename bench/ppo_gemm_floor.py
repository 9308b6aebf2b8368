"""The matrix-product floor of one PPO iteration: the time the iteration's GEMMs alone take on this
machine with libtorch's BLAS (the MKL that both rlhf and TRL call), with nothing else around them:
no elementwise kernels, no attention softmax, no allocation, no autograd, no sampling. No
implementation that performs the same products with the same BLAS can run an iteration faster,
so TRL's seconds per iteration divided by this floor bounds the speed-up any such implementation
could show against TRL.

    python bench/ppo_gemm_floor.py [--threads 2] [--reps 10]   # prints one JSON line

Two product lists are timed, both for the bench's setup (bench/ppo.md: the "micro" Llama, 32
prompts of 16 tokens, 32 new tokens, 4 epochs x 2 minibatches):
- "trl": what TRL 1.12's PPOTrainer multiplies: generate() (prefill, then one-token steps, LM
  head on the last position only), reference/value/reward forwards over [B, T] (reference LM head
  on all T positions), and per minibatch the policy and value forward + backward (policy LM head
  on all T positions);
- "rlhf": what `rlhf ppo` multiplies: the same generation, policy + reference + value + reward
  scoring forwards (LM heads on the R response positions only), and per minibatch the policy and
  value forward + backward (LM head on the R response positions only); in every pass but the
  reward model's, the last layer's query side and MLP run on the R response positions only.
Each linear layer's forward is one (M, in) x (in, out) product; its backward two more (dX and
dW). Attention counts its two batched products forward and four backward (KV-cache decoding:
its two small products per step).
"""

import argparse
import json
import time

import torch


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--threads", type=int, default=2)
    a("--reps", type=int, default=10, help="timed repetitions of each product list (median kept)")
    a("--vocab", type=int, default=1024)
    a("--hidden", type=int, default=128)
    a("--layers", type=int, default=4)
    a("--heads", type=int, default=4)
    a("--kv-heads", type=int, default=2)
    a("--intermediate", type=int, default=344)
    a("--batch", type=int, default=32)
    a("--prompt-len", type=int, default=16)
    a("--response-len", type=int, default=32)
    a("--ppo-epochs", type=int, default=4)
    a("--minibatches", type=int, default=2)
    return p.parse_args()


class Products:
    """A list of (batched) matrix products, as ("mm", m, k, n) or ("bmm", b, m, k, n)."""

    def __init__(self, args):
        self.a = args
        self.ops = []

    def linear(self, m, d_in, d_out, backward):
        self.ops.append(("mm", m, d_in, d_out))
        if backward:
            self.ops += [("mm", m, d_out, d_in), ("mm", d_out, m, d_in)]  # dX, dW

    def trunk(self, b, t, backward, keys=None, last_rows=None):
        """Every layer of the decoder over b rows of t new tokens attending to `keys` keys; with
        `last_rows`, the last layer's queries, attention output and MLP cover only that many
        positions per row (rlhf's `forward_hidden_window`)."""
        a = self.a
        c, hs = a.hidden, a.hidden // a.heads
        group, keys = a.heads // a.kv_heads, keys or t
        for layer in range(a.layers):
            q_rows = last_rows if last_rows and layer == a.layers - 1 else t
            for d_in, d_out, rows in [(c, a.heads * hs, q_rows), (c, a.kv_heads * hs, t),
                                      (c, a.kv_heads * hs, t), (a.heads * hs, c, q_rows),
                                      (c, a.intermediate, q_rows), (c, a.intermediate, q_rows),
                                      (a.intermediate, c, q_rows)]:
                self.linear(b * rows, d_in, d_out, backward)
            bh, gq = b * a.kv_heads, group * q_rows
            self.ops += [("bmm", bh, gq, hs, keys), ("bmm", bh, gq, keys, hs)]  # scores, context
            if backward:
                self.ops += [("bmm", bh, gq, hs, keys), ("bmm", bh, keys, gq, hs),  # dP, dV
                             ("bmm", bh, gq, keys, hs), ("bmm", bh, keys, gq, hs)]  # dQ, dK

    def lm_head(self, m, backward):
        self.linear(m, self.a.hidden, self.a.vocab, backward)

    def generate(self):
        a = self.a
        self.trunk(a.batch, a.prompt_len, False)
        self.lm_head(a.batch, False)
        for step in range(1, a.response_len):
            self.trunk(a.batch, 1, False, keys=a.prompt_len + step)
            self.lm_head(a.batch, False)

    def flops(self):
        total = 0
        for op in self.ops:
            n = 1
            for d in op[1:]:
                n *= d
            total += 2 * n
        return total

    def seconds(self, reps):
        """Median wall time of running every product once, into preallocated outputs."""
        tensors = []
        for op in self.ops:
            if op[0] == "mm":
                _, m, k, n = op
                tensors.append((torch.mm, torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)))
            else:
                _, b, m, k, n = op
                tensors.append((torch.bmm, torch.randn(b, m, k), torch.randn(b, k, n),
                                torch.empty(b, m, n)))
        times = []
        for rep in range(reps + 1):
            t0 = time.perf_counter()
            for f, x, y, out in tensors:
                f(x, y, out=out)
            if rep > 0:  # the first pass warms caches and MKL's buffers
                times.append(time.perf_counter() - t0)
        times.sort()
        return times[len(times) // 2]


def phases(args, impl):
    a = args
    t = a.prompt_len + a.response_len
    mb = a.batch // a.minibatches
    gen, score, update = Products(a), Products(a), Products(a)
    gen.generate()
    lm_rows = t if impl == "trl" else a.response_len
    window = None if impl == "trl" else a.response_len  # rlhf: the last layer on R rows
    scored_lms = 1 if impl == "trl" else 2  # TRL reuses generate()'s logits for the policy
    for _ in range(scored_lms):
        score.trunk(a.batch, t, False, last_rows=window)
        score.lm_head(a.batch * lm_rows, False)
    score.trunk(a.batch, t, False, last_rows=window)  # value
    score.trunk(a.batch, t, False)  # reward
    update.trunk(mb, t, True, last_rows=window)  # policy
    update.lm_head(mb * lm_rows, True)
    update.trunk(mb, t, True, last_rows=window)  # value
    steps = a.ppo_epochs * a.minibatches
    return gen, score, update, steps


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = {"threads": args.threads}
    for impl in ("trl", "rlhf"):
        gen, score, update, steps = phases(args, impl)
        s = {
            "generate_s": gen.seconds(args.reps),
            "score_s": score.seconds(args.reps),
            "update_s": update.seconds(args.reps) * steps,
        }
        s["total_s"] = sum(s.values())
        s["gflop"] = (gen.flops() + score.flops() + update.flops() * steps) / 1e9
        s["gflop_per_s"] = s["gflop"] / s["total_s"]
        out[impl] = s
    print(json.dumps(out))


if __name__ == "__main__":
    main()
