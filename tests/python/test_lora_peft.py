"""LoRA adapters written by `rlhf` against PEFT, and served by `rlhf serve`.

PEFT reads what `rlhf sft --lora` saves and computes the same thing: the same mean NLL on texts
as `rlhf nll` on the adapter, and PEFT's merge gives the weights `rlhf merge` writes. (That
PEFT-made adapters load here with PEFT's logits is crates/model/tests/lora.rs.) The server
serves adapters beside the model, loads and unloads them at run time through vLLM's API, and
the official openai client sees the text change with the adapter and come back without it.
"""
import json
import os

import urllib.error
import urllib.request
import openai
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import BIN, rlhf, start, stop

TEXTS = ["Tom has 5 apples. He eats 2. How many apples does Tom have now?",
         "Sort these numbers: 7, 3, 9.", "Count the words in: the cat sat on the mat."]


@pytest.fixture(scope="module")
def lora(model_dir, tmp_path_factory):
    """A nano model's SFT adapter, trained hard enough to move (rank 4, all linear maps)."""
    d = tmp_path_factory.mktemp("lora")
    world = os.path.join(os.path.dirname(model_dir), "world")
    rlhf("sft", "--model", model_dir, "--data", os.path.join(world, "sft.jsonl"),
         "--out", d / "adapter", "--lora", "--lora-r", "4", "--lora-alpha", "8",
         "--set", "trainer.max_steps=30", "--set", "trainer.lr=3e-3",
         "--set", "trainer.batch_size=8", "--set", "trainer.eval_every=0")
    rlhf("merge", "--adapter", d / "adapter", "--out", d / "merged")
    texts = d / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return {"adapter": str(d / "adapter"), "merged": str(d / "merged"), "texts": str(texts)}


def rlhf_nll(model, texts):
    r = rlhf("nll", "--model", model, "--data", texts)
    return json.loads(r.stdout)


def peft_nll(model, tok):
    total, count = 0.0, 0
    with torch.no_grad():
        for t in TEXTS:
            ids = torch.tensor([tok(t)["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1].double()
            lp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])
            total -= lp.sum().item()
            count += ids.shape[1] - 1
    return total / count, count


def test_peft_loads_our_adapter_and_agrees(model_dir, lora):
    cfg = json.load(open(os.path.join(lora["adapter"], "adapter_config.json")))
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    assert os.path.samefile(cfg["base_model_name_or_path"], model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    base_nll, _ = peft_nll(base, tok)
    peft = PeftModel.from_pretrained(base, lora["adapter"]).eval()
    n_lora = sum(1 for n, _ in peft.named_parameters() if "lora_" in n)
    ours = load_file(os.path.join(lora["adapter"], "adapter_model.safetensors"))
    assert n_lora == len(ours), "PEFT placed every tensor we saved"
    theirs, count = peft_nll(peft, tok)
    got = rlhf_nll(lora["adapter"], lora["texts"])
    assert got["tokens"] == count
    print(f"\nmean NLL: rlhf {got['mean_nll']:.9f}, PEFT {theirs:.9f}, base {base_nll:.6f}")
    assert abs(got["mean_nll"] - theirs) <= 1e-5 * max(1.0, abs(theirs)), (got, theirs)
    assert abs(theirs - base_nll) > 1e-3, "the adapter changes the model"
    # Token by token: the log-probs `rlhf generate` reports for its greedy continuation (the
    # adapter's log-softmax at each position) equal PEFT's on the same ids.
    for prompt in TEXTS[:2]:
        out = json.loads(rlhf("generate", "--model", lora["adapter"], "--prompt", prompt, "--json",
                              "--max-new-tokens", "12", "--temperature", "0").stdout.splitlines()[0])
        ids = tok(prompt)["input_ids"]
        full = torch.tensor([ids + out["token_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(peft(input_ids=full).logits[0].double(), -1)
        theirs_lp = [lp[len(ids) - 1 + i, t].item() for i, t in enumerate(out["token_ids"])]
        worst_lp = max(abs(a - b) for a, b in zip(out["logprobs"], theirs_lp))
        print(f"per-token log-probs of {len(theirs_lp)} generated tokens: max |diff| {worst_lp:.3g}")
        assert worst_lp <= 1e-4, worst_lp
    # PEFT's merge and ours write the same weights.
    merged = peft.merge_and_unload().state_dict()
    written = load_file(os.path.join(lora["merged"], "model.safetensors"))
    worst = max((merged[k].float() - v.float()).abs().max().item() for k, v in written.items())
    print(f"merged weights: max |rlhf merge - PEFT merge_and_unload| = {worst:.3g}")
    assert worst <= 1e-6, worst
    assert abs(rlhf_nll(lora["merged"], lora["texts"])["mean_nll"] - theirs) <= 1e-5


class Answer:
    def __init__(self, status, text):
        self.status_code, self.text = status, text

    def json(self):
        return json.loads(self.text)


def post(url, body):
    """POSTs JSON with the standard library (the openai client has no adapter endpoints)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return Answer(r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.read().decode())


def greedy(client, model):
    """A greedy completion, its token log-probs and the model named."""
    r = client.completions.create(model=model, prompt=TEXTS[0], max_tokens=12, temperature=0,
                                  logprobs=1)
    c = r.choices[0]
    return c.text, c.logprobs.token_logprobs, r.model


def test_served_adapters_load_unload_and_change_the_text(model_dir, lora):
    proc, url = start(["serve", "--model", model_dir, "--port", "0", "--dynamic-adapters",
                       "--served-model-name", "base"])
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        base_text, base_lp, _ = greedy(client, "base")
        r = post(url + "/load_lora_adapter", {"lora_name": "sft", "lora_path": lora["adapter"]})
        assert r.status_code == 200, r.text
        assert {m.id for m in client.models.list().data} == {"base", "sft"}
        text, lp, model = greedy(client, "sft")
        assert model == "sft"
        assert (text, lp) != (base_text, base_lp), "the adapter changes what is served"
        assert greedy(client, "base")[:2] == (base_text, base_lp), "the base is untouched"
        # Loading twice, a bad path and a name clash are 400s; the adapter stays.
        assert post(url + "/load_lora_adapter", {"lora_name": "sft",
                                                 "lora_path": lora["adapter"]}).status_code == 400
        bad = post(url + "/load_lora_adapter", {"lora_name": "x", "lora_path": model_dir})
        assert bad.status_code == 400 and "adapter_config.json" in bad.json()["error"]["message"]
        r = post(url + "/unload_lora_adapter", {"lora_name": "sft"})
        assert r.status_code == 200, r.text
        with pytest.raises(openai.NotFoundError):
            greedy(client, "sft")
        assert greedy(client, "base")[:2] == (base_text, base_lp), "unloading restores the base"
        assert post(url + "/unload_lora_adapter", {"lora_name": "sft"}).status_code == 404
    finally:
        stop(proc)
    # The adapter unmerged on the shared base serves what the merged checkpoint serves.
    proc, url = start(["serve", "--model", lora["merged"], "--port", "0"])
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        merged_text, merged_lp, _ = greedy(client, "merged")
        assert merged_text == text and len(merged_lp) == len(lp) > 0, (merged_text, text)
        assert max(abs(a - b) for a, b in zip(merged_lp, lp)) <= 1e-4
    finally:
        stop(proc)


def test_runtime_loading_is_off_by_default(model_dir, lora):
    proc, url = start(["serve", "--model", model_dir, "--port", "0",
                       "--adapter", "sft=" + lora["adapter"]])
    try:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        assert "sft" in {m.id for m in client.models.list().data}
        greedy(client, "sft")
        r = post(url + "/load_lora_adapter", {"lora_name": "y", "lora_path": "/"})
        assert r.status_code == 404 and "--dynamic-adapters" in r.text
    finally:
        stop(proc)
