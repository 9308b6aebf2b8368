"""What the TRL sides of the benchmarks share (bench/dpo_trl.py, bench/grpo_trl.py): the random
"micro" Llama of crates/train/examples/bench_*.rs (vocab 1024, hidden 128, 4 layers, fp32), a
word-level tokenizer whose words are the token ids (`t0` … `t1021`, `<pad>`, `<eos>`), random
texts of n words, and a callback that times each optimizer step from on_step_begin to
on_step_end."""
import time

import torch

VOCAB = 1024


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(VOCAB - 2)}
    words["<pad>"], words["<eos>"] = VOCAB - 2, VOCAB - 1
    tok = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def micro_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=344, max_position_embeddings=256,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        pad_token_id=VOCAB - 2, eos_token_id=VOCAB - 1, bos_token_id=None, dtype=torch.float32))


def random_text(rng, n):
    return " ".join(f"t{rng.randrange(VOCAB - 2)}" for _ in range(n))


def step_clock(times):
    """A TrainerCallback appending each optimizer step's seconds to `times`."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kw):
            times.append(time.perf_counter() - self.start)

    return Clock()
