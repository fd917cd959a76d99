"""Golden fixture for prefix tuning: HF PEFT's PrefixTuningConfig with the reparameterisation
MLP (prefix_projection) on tiny-llama-gqa, random weights, forward and every gradient.

LLaMA with grouped-query attention takes past keys and values per KV head, so the config names
token_dim = num_key_value_heads x head_dim and num_attention_heads = num_key_value_heads (PEFT
0.10 would otherwise build prefixes for every query head).

Writes tests/fixtures/prefix-gqa/:
  train.safetensors   the training-form encoder (embedding, transform.0/2 weights and biases)
  adapter/            PEFT's save_pretrained folder (the MLP dropped: prompt_embeddings holds its
                      output, inference_mode true)
  golden.safetensors  input_ids, labels, logits, loss and grad.<encoder parameter>
"""
import os
import sys

import peft
import torch
from peft import PrefixTuningConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaForCausalLM


def main(fixtures):
    base = os.path.join(fixtures, "tiny-llama-gqa")
    out = os.path.join(fixtures, "prefix-gqa")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    c = model.config
    kv_dim = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, token_dim=kv_dim,
                                num_attention_heads=c.num_key_value_heads,
                                num_layers=c.num_hidden_layers, prefix_projection=True,
                                encoder_hidden_size=24)
    model = get_peft_model(model, config)
    encoder = model.prompt_encoder["default"]
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    save_file({k: v.detach().contiguous() for k, v in encoder.state_dict().items()},
              os.path.join(out, "train.safetensors"))

    gen = torch.Generator().manual_seed(4)
    input_ids = torch.randint(0, 101, (2, 9), generator=gen)
    labels = input_ids.clone()
    labels[:, :2] = -100
    res = model(input_ids=input_ids, labels=labels)
    res.loss.backward()
    golden = {"input_ids": input_ids, "labels": labels,
              "logits": res.logits.detach().float().contiguous(),
              "loss": res.loss.detach().reshape(1)}
    for name, p in encoder.named_parameters():
        golden["grad." + name] = p.grad.detach().contiguous()
    save_file(golden, os.path.join(out, "golden.safetensors"),
              metadata={"peft": peft.__version__, "torch": torch.__version__})

    model.save_pretrained(os.path.join(out, "adapter"))
    os.remove(os.path.join(out, "adapter", "README.md"))
    print(f"prefix: loss {res.loss.item():.6f}")


if __name__ == "__main__":
    main(sys.argv[1])
