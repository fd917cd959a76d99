"""Golden fixture for (IA)^3: HF PEFT's IA3Config on tiny-llama-gqa (k, v and the FFN
intermediate through down_proj), random scaling vectors, forward and gradients.

Writes tests/fixtures/ia3-gqa/: the PEFT adapter folder and golden.safetensors with input_ids,
labels, logits, loss and every ia3_l gradient ("grad." + the adapter tensor's name).
"""
import os
import sys

import peft
import torch
from peft import IA3Config, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaForCausalLM


def main(fixtures):
    base = os.path.join(fixtures, "tiny-llama-gqa")
    out = os.path.join(fixtures, "ia3-gqa")
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    config = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                       feedforward_modules=["down_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ia3_l" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    model.save_pretrained(out)
    os.remove(os.path.join(out, "README.md"))

    gen = torch.Generator().manual_seed(3)
    input_ids = torch.randint(0, 101, (2, 11), generator=gen)
    labels = input_ids.clone()
    labels[:, :3] = -100
    res = model(input_ids=input_ids, labels=labels)
    res.loss.backward()
    tensors = {"input_ids": input_ids, "labels": labels, "logits": res.logits.detach().float(),
               "loss": res.loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            tensors["grad." + name.replace(".default", "")] = p.grad.detach().contiguous()
    save_file(tensors, os.path.join(out, "golden.safetensors"),
              metadata={"peft": peft.__version__, "torch": torch.__version__})
    print(f"ia3: loss {res.loss.item():.6f}, {len(tensors) - 4} gradients")


if __name__ == "__main__":
    main(sys.argv[1])
