"""`logit_bias` in `rlhf serve` against transformers' own bias processor
(`SequenceBiasLogitsProcessor`, via `generate(sequence_bias=...)`) on the same checkpoint: with the
same biases, greedy decoding gives the same text. The checkpoint is a randomly initialised small
Llama (its greedy path varies from token to token, unlike a barely trained one that repeats one
token) with the test tokenizer. Biases are chosen to matter: tokens of the unbiased greedy path
are banned or pushed down (so the path changes) and others pulled up.
"""
import os
import shutil

import json
import urllib.request

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from conftest import BIN
from serve_load import start_server

PROMPT = "Tom has 5 apples."


def served_ids(url, bias, n_tokens):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": n_tokens, "temperature": 0,
            "logprobs": 0, "logit_bias": {str(k): v for k, v in bias.items()}}
    req = urllib.request.Request(url + "/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        choice = json.loads(r.read())["choices"][0]
    return choice["logprobs"]["tokens"], choice["finish_reason"]


def reference_ids(model, tok, bias, n_tokens):
    ids = tok(PROMPT, return_tensors="pt").input_ids
    kw = {"sequence_bias": {(k,): float(v) for k, v in bias.items()}} if bias else {}
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, **kw)
    return out[0, ids.shape[1]:].tolist()


def random_llama(model_dir, out):
    """A random small Llama with `model_dir`'s tokenizer, saved as a checkpoint `rlhf` loads."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.5,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(out, safe_serialization=True)
    for f in os.listdir(model_dir):
        if f.startswith("tokenizer") or f in ("special_tokens_map.json", "chat_template.jinja"):
            shutil.copy(os.path.join(model_dir, f), out)
    return tok, model


def test_logit_bias_equals_transformers_processor(model_dir, tmp_path):
    out = str(tmp_path / "tiny")
    tok, model = random_llama(model_dir, out)
    proc, url = start_server(BIN, out, ["--threads", "1"])
    try:
        n = 12
        plain = reference_ids(model, tok, {}, n)
        cases = [
            {},
            {plain[0]: -100.0},                        # ban the first greedy token
            {t: -5.0 for t in set(plain[:4])},         # push the path down
            {7: 8.0, 11: 3.5},                         # pull two tokens up
            {plain[1]: -100.0, 42: 2.0, plain[2]: 1.5},
        ]
        for bias in cases:
            want = reference_ids(model, tok, bias, n)
            texts, _ = served_ids(url, bias, n)
            got_text = "".join(texts)
            want_text = tok.decode(want, skip_special_tokens=True)
            print(f"bias {bias}: transformers {want[:8]}..., served {got_text[:40]!r}")
            assert got_text == want_text, (bias, got_text, want_text)
            if any(v == -100.0 for v in bias.values()):
                assert want != plain, f"bias {bias} should change the greedy path"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
