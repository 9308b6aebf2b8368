"""Reference values for the model core's parity tests (crates/model/tests/parity.rs).

Creates tiny random GPT-2, Llama and Qwen2 models with transformers, saves each as a checkpoint
dir, and dumps logits for (a) an unpadded batch, (b) a left-padded batch with its attention mask
and position ids, (c) greedy generation from the padded prompts. Run with the repo venv:

    scripts/setup-env.sh --test && .venv/bin/python scripts/reference/model_fixtures.py

Deterministic (fixed seeds); the outputs are committed next to this script's target folder.
"""

import pathlib

import torch
from safetensors.torch import save_file
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/model/tests/fixtures"
VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, INTER, POS = 96, 32, 2, 4, 2, 64, 64


def models():
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    yield "gpt2", GPT2LMHeadModel(GPT2Config(
        n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=POS, n_inner=INTER, **common))
    llama = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                 num_key_value_heads=KV_HEADS, intermediate_size=INTER,
                 max_position_embeddings=POS, rope_theta=500.0, **common)
    yield "llama", LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **llama))
    yield "qwen2", Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, **llama))


def inputs():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, VOCAB, (2, 9), generator=g)
    padded = torch.randint(3, VOCAB, (3, 8), generator=g)
    mask = torch.ones_like(padded)
    mask[1, :3] = 0  # left padding: rows of length 8, 5, 7
    mask[2, :1] = 0
    padded[mask == 0] = 0
    return ids, padded, mask


def main():
    torch.manual_seed(0)
    ids, padded, mask = inputs()
    for name, model in models():
        torch.manual_seed(1)
        with torch.no_grad():  # non-trivial biases and norms, so a swapped tensor shows up
            for p in model.parameters():
                p.normal_(0.0, 0.3)
        model.eval()
        out = OUT / name
        model.save_pretrained(out, safe_serialization=True)
        with torch.no_grad():
            logits = model(input_ids=ids).logits
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            padded_logits = model(input_ids=padded, attention_mask=mask, position_ids=pos).logits
            gen = model.generate(input_ids=padded, attention_mask=mask, max_new_tokens=10,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)
        save_file({
            "input_ids": ids, "logits": logits.float().contiguous(),
            "padded_ids": padded, "padded_mask": mask,
            "padded_logits": padded_logits.float().contiguous(),
            "generated": gen[:, padded.shape[1]:].contiguous(),
        }, out / "reference.safetensors")
        print(name, "params", sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main()
