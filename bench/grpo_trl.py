"""GRPO benchmark, TRL side (bench/grpo-compare.sh): iterations of TRL's GRPOTrainer on CPU with
the setup of crates/train/examples/bench_grpo.rs: a random "micro" Llama (vocab 1024, hidden 128,
4 layers), `prompts` prompts of `prompt_len` tokens per iteration, G = `group` completions each of
at most `response_len` tokens sampled at temperature 1 with the KV cache, a cheap reward (the
completion's length in characters), group-normalised advantages, β = 0.04 (so the reference model
runs too), one optimizer step over all completions per iteration (no minibatches, one epoch),
fp32. An iteration is TRL's optimizer step, which generates, scores, computes the reference's and
the old log-probs and updates; it is timed by a callback from on_step_begin to on_step_end. Prints
one JSON line with the median seconds per iteration after `warmup` iterations."""
import argparse
import json
import random
import statistics
import tempfile
import warnings

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--response-len", type=int, default=32)
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    import trl
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from trl_micro import micro_llama, random_text, step_clock, word_tokenizer

    tokenizer, model = word_tokenizer(), micro_llama()
    rng = random.Random(0)
    n = a.prompts * (a.iters + a.warmup)
    data = Dataset.from_list([{"prompt": random_text(rng, a.prompt_len)} for _ in range(n)])

    def length_reward(completions, **kw):
        return [float(len(c)) for c in completions]

    times = []

    with tempfile.TemporaryDirectory() as out:
        # TRL builds the reference model from the policy's path, so the random model goes to disk.
        model.save_pretrained(f"{out}/model")
        tokenizer.save_pretrained(f"{out}/model")
        cfg = GRPOConfig(
            output_dir=out, per_device_train_batch_size=a.prompts * a.group,
            gradient_accumulation_steps=1, num_generations=a.group,
            max_completion_length=a.response_len, temperature=1.0, beta=0.04,
            loss_type="grpo", scale_rewards="group", num_iterations=1, learning_rate=5e-5,
            lr_scheduler_type="constant", max_steps=a.iters + a.warmup, use_cpu=True,
            bf16=False, fp16=False, report_to=[], logging_steps=10_000, save_strategy="no",
            dataloader_num_workers=0, seed=0, weight_decay=0.0, adam_beta1=0.9,
            adam_beta2=0.95, max_grad_norm=1.0, shuffle_dataset=False,
            model_init_kwargs={"dtype": torch.float32})
        trainer = GRPOTrainer(model=f"{out}/model", reward_funcs=length_reward, args=cfg,
                              train_dataset=data, processing_class=tokenizer, callbacks=[step_clock(times)])
        trainer.train()
    its = times[a.warmup:]
    print(json.dumps({"median_s": statistics.median(its), "iters": its, "threads": a.threads,
                      "prompts": a.prompts, "group": a.group, "trl_version": trl.__version__}))


if __name__ == "__main__":
    main()
