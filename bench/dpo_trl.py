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
import time
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
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    vocab = 1024
    words = {f"t{i}": i for i in range(vocab - 2)}
    words["<pad>"], words["<eos>"] = vocab - 2, vocab - 1
    tok = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=344, max_position_embeddings=256,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        pad_token_id=vocab - 2, eos_token_id=vocab - 1, bos_token_id=None, dtype=torch.float32))
    rng = random.Random(0)
    text = lambda n: " ".join(f"t{rng.randrange(vocab - 2)}" for _ in range(n))
    n = a.batch * (a.steps + a.warmup)
    data = Dataset.from_list([{"prompt": text(a.prompt_len), "chosen": text(a.response_len),
                               "rejected": text(a.response_len)} for _ in range(n)])

    times, start = [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kw):
            start.append(time.perf_counter())

        def on_step_end(self, *args, **kw):
            times.append(time.perf_counter() - start[-1])

    with tempfile.TemporaryDirectory() as out:
        cfg = DPOConfig(
            output_dir=out, per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
            learning_rate=1e-5, lr_scheduler_type="constant", max_steps=a.steps + a.warmup,
            beta=0.1, loss_type="sigmoid", precompute_ref_log_probs=True, use_cpu=True,
            bf16=False, fp16=False, report_to=[], logging_steps=10_000, save_strategy="no",
            dataloader_num_workers=0, max_length=None, seed=0, weight_decay=0.0,
            adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0)
        trainer = DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tokenizer,
                             callbacks=[Clock()])
        trainer.train()
    steps = times[a.warmup:]
    print(json.dumps({"median_s": statistics.median(steps), "steps": steps, "threads": a.threads,
                      "batch": a.batch, "trl_version": trl.__version__}))


if __name__ == "__main__":
    main()
