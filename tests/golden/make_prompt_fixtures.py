"""Golden fixture for prompt tuning: HF PEFT's PromptTuningConfig (5 virtual tokens) on
tiny-llama-gqa, random prompt, forward and the prompt's gradient.

Writes tests/fixtures/prompt-gqa/: the PEFT adapter folder and golden.safetensors with
input_ids, labels, logits (of the real tokens only), loss and grad.prompt_embeddings.
"""
import os
import sys

import peft
import torch
from peft import PromptTuningConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaForCausalLM


def main(fixtures):
    base = os.path.join(fixtures, "tiny-llama-gqa")
    out = os.path.join(fixtures, "prompt-gqa")
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    model = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    emb = model.prompt_encoder["default"].embedding
    with torch.no_grad():
        emb.weight.copy_(torch.randn_like(emb.weight))
    model.save_pretrained(out)
    os.remove(os.path.join(out, "README.md"))

    gen = torch.Generator().manual_seed(4)
    input_ids = torch.randint(0, 101, (2, 9), generator=gen)
    labels = input_ids.clone()
    labels[:, :2] = -100
    res = model(input_ids=input_ids, labels=labels)
    res.loss.backward()
    save_file({"input_ids": input_ids, "labels": labels,
               "logits": res.logits[:, 5:].detach().float().contiguous(),
               "loss": res.loss.detach().reshape(1),
               "grad.prompt_embeddings": emb.weight.grad.detach().contiguous()},
              os.path.join(out, "golden.safetensors"),
              metadata={"peft": peft.__version__, "torch": torch.__version__})
    print(f"prompt: loss {res.loss.item():.6f}")


if __name__ == "__main__":
    main(sys.argv[1])
