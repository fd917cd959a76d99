"""Golden fixtures for the LLaMA model: tiny random LlamaForCausalLM folders and their outputs.

Run by scripts/make-golden (inside the peer environment made by scripts/peer-env). Deterministic:
the same versions and seed give the same bytes. For each case it writes
  tests/fixtures/<case>/            save_pretrained() folder (safetensors; sharded for 'gqa')
  tests/fixtures/<case>/golden.safetensors   input_ids, logits (fp32), token_loss, loss,
                                             logits_bf16 (the folder loaded in bfloat16)
"""
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

CASES = {
    # Grouped-query attention, odd vocabulary, MLP width not a multiple of anything nice,
    # saved in several shards with model.safetensors.index.json.
    "tiny-llama-gqa": dict(
        config=dict(vocab_size=101, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                    rope_theta=10000.0, max_position_embeddings=64, tie_word_embeddings=False,
                    initializer_range=0.2),
        max_shard_size="60KB"),
    # Multi-head attention with the LM head tied to the embedding, LLaMA-2-like eps,
    # another rope base, a single safetensors file.
    "tiny-llama-tied": dict(
        config=dict(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                    num_attention_heads=3, num_key_value_heads=3, rms_norm_eps=1e-5,
                    rope_theta=500000.0, max_position_embeddings=64, tie_word_embeddings=True,
                    initializer_range=0.2),
        max_shard_size="10GB"),
}


def make(case, spec, out_root):
    torch.manual_seed(0)
    config = LlamaConfig(**spec["config"], attn_implementation="eager", dtype="float32")
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm weights, so a wrong norm cannot pass
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    folder = os.path.join(out_root, case)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=spec["max_shard_size"])

    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, config.vocab_size, (2, 17), generator=gen)
    with torch.no_grad():
        out = model(input_ids=input_ids, labels=input_ids)
        logits = out.logits.float()
        shift_logits = logits[:, :-1].reshape(-1, config.vocab_size)
        shift_labels = input_ids[:, 1:].reshape(-1)
        token_loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels,
                                                       reduction="none").view(2, -1)
        # bf16 as users load it: from_pretrained(dtype=bfloat16) keeps the rotary inv_freq
        # buffer in fp32 (model.to(bfloat16) would round it to bf16 as well). Eager attention,
        # as Spartan's (softmax in fp32): transformers 5 would otherwise pick SDPA, whose bf16
        # softmax differs from eager by about 2% of the largest logit on these models.
        bf16 = LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16,
                                                attn_implementation="eager").eval()
        logits_bf16 = bf16(input_ids=input_ids).logits.float()
    save_file({"input_ids": input_ids.contiguous(), "logits": logits.contiguous(),
               "token_loss": token_loss.contiguous(), "loss": out.loss.reshape(1).float(),
               "logits_bf16": logits_bf16.contiguous()},
              os.path.join(folder, "golden.safetensors"),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__})
    print(f"{case}: loss {out.loss.item():.6f}, files {sorted(os.listdir(folder))}")


if __name__ == "__main__":
    out_root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    for case, spec in CASES.items():
        make(case, spec, out_root)
