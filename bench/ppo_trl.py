"""One PPO iteration (rollout + update) of HuggingFace TRL's PPO trainer on CPU, timed: the Python
side of the PPO speed comparison (see bench/ppo.md for the method and what the Rust side must match).

    bench/run-ppo.sh                       # creates .venv-bench (torch + pinned TRL), then runs this
    bench/run-ppo.sh --iters 5 --out ppo-trl.json

Models: the "micro" Llama preset (vocab 1024, d=128, 4 layers, 4 heads / 2 KV heads, MLP 344, tied
embeddings), random weights (seed 0), float32. The policy is a LlamaForCausalLM, the value and the
reward models are LlamaForSequenceClassification (num_labels=1) of the same shape, the reference
policy is TRL's own copy of the policy. Nothing is downloaded: the tokenizer is a WordLevel one over
made-up tokens, built here.

The trainer's train() runs warmup + iters iterations; each is timed from the start of its rollout
generation to the start of the next one (the last one to the end of train()), by wrapping
functions of TRL's module, so everything TRL does per iteration is counted.
"""

import argparse
import gc
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
import types
import warnings

import torch


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    # model ("micro" preset)
    a("--vocab", type=int, default=1024)
    a("--hidden", type=int, default=128)
    a("--layers", type=int, default=4)
    a("--heads", type=int, default=4)
    a("--kv-heads", type=int, default=2)
    a("--intermediate", type=int, default=344)
    a("--max-pos", type=int, default=256)
    a("--rope-theta", type=float, default=10000.0)
    a("--rms-eps", type=float, default=1e-5)
    a("--untied", action="store_true", help="untie the policy's embeddings and LM head")
    a("--attn", default="sdpa", help="transformers attn_implementation (sdpa, eager)")
    # rollout / PPO
    a("--batch", type=int, default=32, help="prompts per rollout (one PPO iteration)")
    a("--prompt-len", type=int, default=16)
    a("--response-len", type=int, default=32, help="new tokens per response, always all of them")
    a("--temperature", type=float, default=1.0)
    a("--ppo-epochs", type=int, default=4)
    a("--minibatches", type=int, default=2, help="minibatches per epoch (one optimizer step each)")
    a("--lr", type=float, default=1e-5)
    a("--bf16", action="store_true",
      help="bf16 mixed precision (CPU autocast): bf16=True, and ACCELERATE_MIXED_PRECISION=bf16 "
           "as `accelerate launch --mixed_precision bf16` sets it (TRL 1.12's PPOTrainer builds "
           "its own Accelerator, which ignores bf16=True and reads only that variable)")
    a("--kl-coef", type=float, default=0.02)
    a("--kl-estimator", default="k1", choices=["k1", "k3"])
    a("--gamma", type=float, default=1.0)
    a("--lam", type=float, default=0.95)
    a("--cliprange", type=float, default=0.2)
    a("--cliprange-value", type=float, default=0.2)
    a("--vf-coef", type=float, default=0.1, help="TRL's default")
    a("--no-whiten-rewards", action="store_true",
      help="TRL always whitens advantages; this turns off the extra reward whitening")
    # run
    a("--threads", type=int, default=2)
    a("--warmup", type=int, default=1)
    a("--iters", type=int, default=3)
    a("--seed", type=int, default=0)
    a("--out", type=pathlib.Path, help="also write the final JSON line to this file")
    return p.parse_args()


def micro_config(args, cls_head):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        intermediate_size=args.intermediate, max_position_embeddings=args.max_pos,
        rope_theta=args.rope_theta, rms_norm_eps=args.rms_eps,
        tie_word_embeddings=not args.untied and not cls_head,
        # No BOS/EOS/pad in the model: generation never stops early (see tokenizer()).
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
        num_labels=1, attn_implementation=args.attn, dtype=torch.float32,
    )


def tokenizer(vocab):
    """A WordLevel tokenizer over vocab made-up tokens t0..t{vocab-1}, plus <pad> = vocab and
    <eos> = vocab + 1: both lie outside the models' vocabulary, so sampling can never produce them.
    That is how every response gets its full length: TRL treats a sampled pad as the end of the
    response (and masks it), and generation would stop at EOS; neither can happen here, and no
    stop token is configured (PPOConfig stop_token=None, stop_token_id=None, model eos=None).
    TRL replaces pad ids by 0 before any forward pass, so the out-of-range ids are never embedded."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    words["<pad>"], words["<eos>"] = vocab, vocab + 1
    tok = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


class Clock:
    """Per-iteration time marks, set by wrappers around TRL's own functions."""

    def __init__(self):
        self.iters = []  # dicts of marks, one per iteration
        self.calls = {}  # model name -> list of (batch, positions) of each forward, current iteration
        self.gc_s = 0.0

    def mark(self, key):
        self.iters[-1].setdefault(key, time.perf_counter())

    def new_iter(self):
        now = time.perf_counter()
        if self.iters:
            self.iters[-1]["end"] = now
            self.iters[-1]["calls"], self.calls = self.calls, {}
            self.iters[-1]["gc_s"], self.gc_s = self.gc_s, 0.0
        self.iters.append({"start": now})

    def finish(self):
        self.new_iter()
        self.iters.pop()

    def hook(self, name):
        def fwd_hook(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None and self.iters:
                self.calls.setdefault(name, []).append(tuple(ids.shape))
        return fwd_hook


def instrument(clock, ppo_mod):
    """Wraps the module-level functions that PPOTrainer.train() calls, so the marks fall exactly
    on TRL's phase boundaries: batch_generation (the rollout's generate()), forward (the reference
    forward in the rollout; the policy+value forward of each PPO minibatch) and gc.collect."""
    batch_generation, forward = ppo_mod.batch_generation, ppo_mod.forward

    def timed_batch_generation(*a, **k):
        clock.new_iter()  # an iteration starts with its generation
        out = batch_generation(*a, **k)
        clock.mark("gen_end")
        seqs, queries = out[0], a[1]
        # Every response has its full length: no early stop, no pad or EOS sampled.
        assert seqs.shape[1] == queries.shape[1] + clock.response_len, seqs.shape
        assert bool((seqs < clock.vocab).all()), "a pad/EOS id was sampled"
        return out

    def timed_forward(model, *a, **k):
        if isinstance(model, ppo_mod.PolicyAndValueWrapper):
            clock.mark("update_start")  # first training forward of this iteration
        return forward(model, *a, **k)

    def timed_collect(*a):
        t0 = time.perf_counter()
        n = gc.collect(*a)
        clock.gc_s += time.perf_counter() - t0
        return n

    ppo_mod.batch_generation = timed_batch_generation
    ppo_mod.forward = timed_forward
    ppo_mod.gc = types.SimpleNamespace(collect=timed_collect)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    import accelerate
    import datasets
    import transformers
    import trl
    from datasets import Dataset
    from transformers import (LlamaForCausalLM, LlamaForSequenceClassification, TrainerCallback,
                              logging as hf_logging)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    try:
        import trl.experimental.ppo.ppo_trainer as ppo_mod
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    except ImportError:
        sys.exit(f"trl {trl.__version__} has no trl.experimental.ppo (PPO was removed after 1.12.0)")
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()

    n_iters = args.warmup + args.iters
    config = {
        "model": {"arch": "llama", "vocab_size": args.vocab, "hidden_size": args.hidden,
                  "num_hidden_layers": args.layers, "num_attention_heads": args.heads,
                  "num_key_value_heads": args.kv_heads, "intermediate_size": args.intermediate,
                  "max_position_embeddings": args.max_pos, "rope_theta": args.rope_theta,
                  "rms_norm_eps": args.rms_eps, "tie_word_embeddings": not args.untied,
                  "attn_implementation": args.attn, "dtype": "float32", "init": f"random seed {args.seed}"},
        "batch": args.batch, "prompt_len": args.prompt_len, "response_len": args.response_len,
        "temperature": args.temperature, "ppo_epochs": args.ppo_epochs,
        "minibatches": args.minibatches, "minibatch_size": args.batch // args.minibatches,
        "grad_accum": 1, "lr": args.lr, "lr_schedule": "constant", "optimizer": "torch AdamW (adamw_torch)",
        "weight_decay": 0.0, "grad_clip": None, "kl_coef": args.kl_coef, "kl_estimator": args.kl_estimator,
        "gamma": args.gamma, "lam": args.lam, "cliprange": args.cliprange,
        "cliprange_value": args.cliprange_value, "vf_coef": args.vf_coef,
        "whiten_advantages": True, "whiten_rewards": not args.no_whiten_rewards,
        "threads": args.threads, "warmup": args.warmup, "iters": args.iters,
    }
    print(f"# TRL PPO benchmark: trl {trl.__version__}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, accelerate {accelerate.__version__}, {args.threads} threads")
    print("# config: " + json.dumps(config))
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"# WARNING: load average {load:.1f} before start: other processes compete for the "
              f"cores, and torch's intra-op threads ({args.threads}) slow down badly when oversubscribed")

    torch.manual_seed(args.seed)
    policy = LlamaForCausalLM(micro_config(args, False))
    value = LlamaForSequenceClassification(micro_config(args, True))
    reward = LlamaForSequenceClassification(micro_config(args, True))
    policy.generation_config.eos_token_id = None
    policy.generation_config.pad_token_id = None
    policy.generation_config.bos_token_id = None
    tok = tokenizer(args.vocab)
    n_params = sum(p.numel() for p in policy.parameters())
    print(f"# policy {n_params:,} parameters; value/reward "
          f"{sum(p.numel() for p in value.parameters()):,} each")

    g = torch.Generator().manual_seed(args.seed)
    prompts = torch.randint(0, args.vocab, (args.batch * n_iters, args.prompt_len), generator=g)
    train = Dataset.from_dict({"input_ids": prompts.tolist()})

    clock = Clock()
    clock.response_len, clock.vocab = args.response_len, args.vocab
    instrument(clock, ppo_mod)

    class EndOfUpdate(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            clock.mark("step_end")  # after the optimizer steps, the metrics and the lr scheduler

        def on_train_end(self, a, state, control, **kw):
            clock.finish()

    if args.bf16:
        os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = PPOConfig(
            output_dir=out_dir, report_to="none", save_strategy="no", eval_strategy="no",
            logging_strategy="no", disable_tqdm=True, num_sample_generations=0, push_to_hub=False,
            seed=args.seed, per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
            num_mini_batches=args.minibatches, local_rollout_forward_batch_size=args.batch,
            total_episodes=args.batch * n_iters, num_ppo_epochs=args.ppo_epochs,
            response_length=args.response_len, temperature=args.temperature, stop_token=None,
            stop_token_id=None, missing_eos_penalty=None, learning_rate=args.lr,
            lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.0,
            kl_coef=args.kl_coef, kl_estimator=args.kl_estimator, gamma=args.gamma, lam=args.lam,
            cliprange=args.cliprange, cliprange_value=args.cliprange_value, vf_coef=args.vf_coef,
            whiten_rewards=not args.no_whiten_rewards, bf16=args.bf16, fp16=False, use_cpu=True,
            dataloader_num_workers=0,
        )
        trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=None,
                             reward_model=reward, train_dataset=train, value_model=value,
                             callbacks=[EndOfUpdate()])
        for cb in (PrinterCallback, ProgressCallback):  # no per-iteration printing
            trainer.remove_callback(cb)
        torch.set_num_threads(args.threads)  # in case anything reset it
        for name, m in [("policy", trainer.model.policy), ("ref", trainer.ref_model),
                        ("value", trainer.model.value_model.model),
                        ("reward", trainer.reward_model.model)]:
            m.register_forward_pre_hook(clock.hook(name), with_kwargs=True)
        opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate's wrapper
        n_opt = sum(p.numel() for grp in opt.param_groups for p in grp["params"])
        print(f"# optimizer {type(opt).__name__} (foreach={opt.defaults.get('foreach')}, "
              f"fused={opt.defaults.get('fused')}) over {n_opt:,} parameters (policy + value); "
              f"torch threads {torch.get_num_threads()}; accelerate mixed_precision "
              f"{trainer.accelerator.mixed_precision}, native_amp {trainer.accelerator.native_amp}")
        t0 = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t0

    assert len(clock.iters) == n_iters, f"expected {n_iters} iterations, timed {len(clock.iters)}"
    rows = []
    for i, m in enumerate(clock.iters):
        row = {"total": m["end"] - m["start"], "generate": m["gen_end"] - m["start"],
               "score": m["update_start"] - m["gen_end"], "update": m["step_end"] - m["update_start"],
               "after_step": m["end"] - m["step_end"], "gc": m["gc_s"]}
        row["total_excl_gc"] = row["total"] - row["gc"]
        rows.append(row)
        calls = m["calls"]
        kind = "warmup" if i < args.warmup else "timed "
        print(f"  iter {i} ({kind}) {row['total']:7.3f} s = generate {row['generate']:.3f} + score "
              f"(ref/value/reward + GAE) {row['score']:.3f} + update {row['update']:.3f} + after step "
              f"{row['after_step']:.3f}   [gc.collect {row['gc']:.3f}]")
        if i == 0:
            for name, shapes in calls.items():
                shown = {s: shapes.count(s) for s in dict.fromkeys(shapes)}
                print(f"    {name:6s} forwards: {len(shapes):3d}  "
                      + ", ".join(f"{n}x{list(s)}" for s, n in shown.items()))
    timed = rows[args.warmup:]
    med = {k: statistics.median(r[k] for r in timed) for k in timed[0]}
    result = {
        "impl": "trl", "precision": "bf16" if args.bf16 else "fp32", "trl_version": trl.__version__, "torch_version": torch.__version__,
        "transformers_version": transformers.__version__, "accelerate_version": accelerate.__version__,
        "sec_per_iter_median": round(med["total"], 4),
        "iters": [round(r["total"], 4) for r in timed],
        "sec_per_iter_median_excl_gc": round(med["total_excl_gc"], 4),
        "phases_median": {k: round(v, 4) for k, v in med.items()
                          if k not in ("total", "total_excl_gc")},
        "warmup_iters": [round(r["total"], 4) for r in rows[:args.warmup]],
        "forwards_per_iter": {k: len(v) for k, v in clock.iters[-1]["calls"].items()},
        "train_wall_s": round(total, 3),
        "loadavg_1min_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
        "config": config,
    }
    print(f"# median {med['total']:.3f} s/iter over {args.iters} timed iterations "
          f"(generate {med['generate']:.3f}, score {med['score']:.3f}, update {med['update']:.3f}; "
          f"{med['total_excl_gc']:.3f} without TRL's gc.collect calls)")
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
