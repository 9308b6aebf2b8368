"""DPO benchmark, TRL side (bench/dpo-compare.sh): optimizer steps of TRL's DPOTrainer on CPU with
the setup of crates/train/examples/bench_dpo.rs: a random "micro" Llama (vocab 1024, hidden 128,
4 layers), `batch` pairs per step of a `prompt_len`-token prompt and two `response_len`-token
completions (TRL appends EOS), sigmoid loss, reference log-probs precomputed, fp32. Prints one JSON
line with the median seconds per optimizer step after `warmup` steps (timed by a callback from
on_step_begin to on_step_end)."""
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
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--response-len", type=int, default=32)
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    import trl
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from trl_micro import micro_llama, random_text, step_clock, word_tokenizer

    tokenizer, model = word_tokenizer(), micro_llama()
    rng = random.Random(0)
    n = a.batch * (a.steps + a.warmup)
    data = Dataset.from_list([{"prompt": random_text(rng, a.prompt_len),
                               "chosen": random_text(rng, a.response_len),
                               "rejected": random_text(rng, a.response_len)} for _ in range(n)])
    times = []

    with tempfile.TemporaryDirectory() as out:
        cfg = DPOConfig(
            output_dir=out, per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
            learning_rate=1e-5, lr_scheduler_type="constant", max_steps=a.steps + a.warmup,
            beta=0.1, loss_type="sigmoid", precompute_ref_log_probs=True, use_cpu=True,
            bf16=False, fp16=False, report_to=[], logging_steps=10_000, save_strategy="no",
            dataloader_num_workers=0, max_length=None, seed=0, weight_decay=0.0,
            adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0)
        trainer = DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tokenizer,
                             callbacks=[step_clock(times)])
        trainer.train()
    steps = times[a.warmup:]
    print(json.dumps({"median_s": statistics.median(steps), "steps": steps, "threads": a.threads,
                      "batch": a.batch, "trl_version": trl.__version__}))


if __name__ == "__main__":
    main()
