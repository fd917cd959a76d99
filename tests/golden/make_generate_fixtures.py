"""Golden fixture for generation: transformers' greedy generate(do_sample=False) on tiny-llama-gqa,
alone and with the PEFT LoRA adapter of tests/fixtures/lora-gqa.

Writes tests/fixtures/generate/golden.safetensors: prompt{i} (the prompt ids, BOS first) and
base{i} / lora{i} (the new tokens transformers generates after it, up to max_new_tokens or EOS).
"""
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

MAX_NEW_TOKENS = 16


def greedy(model, prompt):
    out = model.generate(input_ids=prompt.unsqueeze(0), attention_mask=torch.ones(1, len(prompt),
                         dtype=torch.long), do_sample=False, max_new_tokens=MAX_NEW_TOKENS,
                         eos_token_id=2, pad_token_id=0)
    return out[0, len(prompt):].clone()


def main(fixtures):
    out = os.path.join(fixtures, "generate")
    os.makedirs(out, exist_ok=True)
    base_dir = os.path.join(fixtures, "tiny-llama-gqa")
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.cat([torch.tensor([1]), torch.randint(3, 101, (n,), generator=gen)])
               for n in (1, 7, 20)]
    tensors = {}
    model = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    for i, p in enumerate(prompts):
        tensors[f"prompt{i}"] = p
        tensors[f"base{i}"] = greedy(model, p)
    model = PeftModel.from_pretrained(model, os.path.join(fixtures, "lora-gqa")).eval()
    for i, p in enumerate(prompts):
        tensors[f"lora{i}"] = greedy(model, p)
    save_file(tensors, os.path.join(out, "golden.safetensors"),
              metadata={"max_new_tokens": str(MAX_NEW_TOKENS)})
    for k in sorted(tensors):
        print(k, tensors[k].tolist())


if __name__ == "__main__":
    main(sys.argv[1])
