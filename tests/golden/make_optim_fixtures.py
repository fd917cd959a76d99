"""Golden fixture for AdamW: torch.optim.AdamW on fixed gradients over several steps, with a
learning rate that changes every step (as a schedule does) and weight decay.

Writes tests/fixtures/adamw/golden.safetensors: p{i}.init, grad{s}.p{i} for each step s,
p{i}.final, p{i}.exp_avg, p{i}.exp_avg_sq, and lrs (one per step).
"""
import os
import sys

import torch
from safetensors.torch import save_file


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    params = [torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)]
    tensors = {f"p{i}.init": p.detach().clone() for i, p in enumerate(params)}
    opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    lrs = [1e-2, 2e-2, 1.5e-2, 5e-3, 1e-3, 0.0, 7e-3]
    for s, lr in enumerate(lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for i, p in enumerate(params):
            p.grad = torch.randn_like(p) * (10.0 if s == 2 else 1.0)
            tensors[f"grad{s}.p{i}"] = p.grad.clone()
        opt.step()
    for i, p in enumerate(params):
        tensors[f"p{i}.final"] = p.detach().clone()
        tensors[f"p{i}.exp_avg"] = opt.state[p]["exp_avg"].clone()
        tensors[f"p{i}.exp_avg_sq"] = opt.state[p]["exp_avg_sq"].clone()
    tensors["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    save_file(tensors, os.path.join(out, "golden.safetensors"),
              metadata={"torch": torch.__version__, "betas": "0.9,0.95", "eps": "1e-8",
                        "weight_decay": "0.1"})
    print(f"adamw: {len(lrs)} steps")


if __name__ == "__main__":
    main(sys.argv[1])
