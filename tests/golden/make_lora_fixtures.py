"""Golden fixture for LoRA: HF PEFT's LoraConfig on tiny-llama-gqa, forward and gradients.

Writes tests/fixtures/lora-gqa/: the PEFT adapter folder (adapter_config.json,
adapter_model.safetensors) with non-zero lora_B (so lora_A's gradients are not zero) and
golden.safetensors with input_ids, labels, logits, loss and every lora_A / lora_B gradient
(keyed by the adapter tensor's name with "grad." in front).
"""
import os
import sys

import peft
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaForCausalLM


def main(fixtures):
    base = os.path.join(fixtures, "tiny-llama-gqa")
    out = os.path.join(fixtures, "lora-gqa")
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                        target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
                        task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn_like(p))
    model.save_pretrained(out)
    os.remove(os.path.join(out, "README.md"))  # a generated model card, not needed

    gen = torch.Generator().manual_seed(2)
    input_ids = torch.randint(0, 101, (2, 13), generator=gen)
    labels = input_ids.clone()
    labels[:, :5] = -100  # a prompt without loss
    out_ = model(input_ids=input_ids, labels=labels)
    out_.loss.backward()
    tensors = {"input_ids": input_ids, "labels": labels, "logits": out_.logits.detach().float(),
               "loss": out_.loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            tensors["grad." + name.replace(".default", "")] = p.grad.detach().contiguous()
    save_file(tensors, os.path.join(out, "golden.safetensors"),
              metadata={"peft": peft.__version__, "torch": torch.__version__})
    print(f"lora: loss {out_.loss.item():.6f}, {len(tensors) - 4} gradients")


if __name__ == "__main__":
    main(sys.argv[1])
