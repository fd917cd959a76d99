"""Hugging Face peer for bench/lora_step: transformers LlamaForCausalLM + PEFT LoRA, one training
step (forward, backward, AdamW) on random tokens, timed. Prints one line:
    peer_tokens_per_s <float>
Arguments mirror the C++ benchmark's shape flags."""
import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    p = argparse.ArgumentParser()
    for name, default in [("layers", 6), ("hidden", 512), ("intermediate", 1376), ("heads", 8),
                          ("kv_heads", 8), ("vocab", 32000), ("seq", 256), ("batch", 4),
                          ("rank", 8), ("steps", 5), ("threads", 0)]:
        p.add_argument("--" + name, type=int, default=default)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.kv_heads, max_position_embeddings=a.seq,
                      attn_implementation="eager")
    model = LlamaForCausalLM(cfg)
    model = get_peft_model(model, LoraConfig(
        r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"]))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    times = []
    for step in range(a.steps + 1):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step > 0:  # the first step warms up
            times.append(time.perf_counter() - t0)
    times.sort()
    print(f"peer_tokens_per_s {a.batch * a.seq / times[len(times) // 2]:.1f}")


if __name__ == "__main__":
    main()
