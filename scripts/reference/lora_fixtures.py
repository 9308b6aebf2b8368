"""Reference values for the LoRA parity tests (crates/model/tests/lora.rs).

For each tiny random model of `model_fixtures.py` (GPT-2, Llama, Qwen2), PEFT attaches a LoRA
adapter with random (non-zero) A and B, saves it under `<family>/lora/` with
`base_model_name_or_path` = ".." (the fixture model, relative to the adapter), and dumps the
logits of the adapted model on the parity inputs (plain and left-padded) and of the merged model.
The three adapters differ on purpose: Llama all-linear, GPT-2's Conv1D maps (fan_in_fan_out),
Qwen2 two targets with rsLoRA. Run with the repo venv after `model_fixtures.py`:

    scripts/setup-env.sh --test && .venv/bin/pip install peft
    .venv/bin/python scripts/reference/lora_fixtures.py
"""

import json
import pathlib

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

FIX = pathlib.Path(__file__).resolve().parents[2] / "crates/model/tests/fixtures"
SETTINGS = {
    "llama": dict(r=4, lora_alpha=8, target_modules="all-linear"),
    "gpt2": dict(r=3, lora_alpha=5, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True),
    "qwen2": dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], use_rslora=True),
}


def logits(model, ref):
    with torch.no_grad():
        plain = model(input_ids=ref["input_ids"]).logits
        mask = ref["padded_mask"]
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        padded = model(input_ids=ref["padded_ids"], attention_mask=mask, position_ids=pos).logits
    return plain.float().contiguous(), padded.float().contiguous()


def main():
    for name, settings in SETTINGS.items():
        base_dir = FIX / name
        ref = load_file(base_dir / "reference.safetensors")
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
        peft = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **settings))
        torch.manual_seed(3)
        with torch.no_grad():  # B starts at zero; a random B makes the update visible
            for n, p in peft.named_parameters():
                if "lora_" in n:
                    p.normal_(0.0, 0.2)
        peft.eval()
        plain, padded = logits(peft, ref)
        out = base_dir / "lora"
        peft.save_pretrained(out)
        (out / "README.md").unlink(missing_ok=True)  # PEFT's model-card stub
        cfg_path = out / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = ".."
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        merged = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), out
        ).merge_and_unload().eval()
        merged_plain, _ = logits(merged, ref)
        save_file({"logits": plain, "padded_logits": padded, "merged_logits": merged_plain},
                  out / "lora_reference.safetensors")
        print(name, "adapter tensors", sum(1 for n, _ in peft.named_parameters() if "lora_" in n))


if __name__ == "__main__":
    main()
