"""Golden fixture for generation: transformers' greedy generate(do_sample=False) on tiny-llama-gqa,
alone and with the PEFT LoRA adapter of tests/fixtures/lora-gqa, in fp32; and the base in bf16
(eager attention, the form Spartan computes) on three prompts whose 32 greedy tokens in bf16
differ from fp32's, so that a bf16 path computed in fp32 would fail.

Writes tests/fixtures/generate/golden.safetensors: prompt{i} (the prompt ids, BOS first) and
base{i} / lora{i} (the new tokens transformers generates after it, up to max_new_tokens or EOS);
bf16_prompt{i}, bf16_base{i} (bf16's tokens) and bf16_fp32_{i} (fp32's tokens for that prompt).
"""
import os
import sys

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

MAX_NEW_TOKENS = 16
BF16_NEW_TOKENS = 32


def greedy(model, prompt, max_new_tokens=MAX_NEW_TOKENS):
    out = model.generate(input_ids=prompt.unsqueeze(0), attention_mask=torch.ones(1, len(prompt),
                         dtype=torch.long), do_sample=False, max_new_tokens=max_new_tokens,
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
    fp32 = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    bf16 = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16,
                                            attn_implementation="eager").eval()
    gen = torch.Generator().manual_seed(11)
    found = 0
    while found < 3:
        n = int(torch.randint(1, 30, (1,), generator=gen))
        p = torch.cat([torch.tensor([1]), torch.randint(3, 101, (n,), generator=gen)])
        a, b = greedy(fp32, p, BF16_NEW_TOKENS), greedy(bf16, p, BF16_NEW_TOKENS)
        if not torch.equal(a, b):
            tensors[f"bf16_prompt{found}"] = p
            tensors[f"bf16_base{found}"] = b
            tensors[f"bf16_fp32_{found}"] = a
            found += 1
    save_file(tensors, os.path.join(out, "golden.safetensors"),
              metadata={"max_new_tokens": str(MAX_NEW_TOKENS)})
    for k in sorted(tensors):
        print(k, tensors[k].tolist())


if __name__ == "__main__":
    main(sys.argv[1])
