"""Golden fixtures for the optimizers. AdamW: torch.optim.AdamW on fixed gradients over several
steps, with a learning rate that changes every step (as a schedule does) and weight decay. SoRA's
gates: the official SparseAdamW, restated (sora_gates below).

Writes tests/fixtures/adamw/golden.safetensors: p{i}.init, grad{s}.p{i} for each step s,
p{i}.final, p{i}.exp_avg, p{i}.exp_avg_sq, and lrs (one per step).
"""
import math
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


def official_gate_step(p, grad, state, lr, betas, eps, xi):
    """One step of SoRA's official SparseAdamW (src/sparse_optimizer.py, correct_bias=True, no
    weight decay), restated: the old transformers.AdamW update, then the threshold as three
    in-place masked updates run one after another."""
    beta1, beta2 = betas
    state["step"] += 1
    state["exp_avg"].mul_(beta1).add_(grad, alpha=1.0 - beta1)
    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = state["exp_avg_sq"].sqrt().add_(eps)
    step_size = lr * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
    p.addcdiv_(state["exp_avg"], denom, value=-step_size)
    p[p > xi] -= xi
    p[p < -xi] += xi
    p[p.abs() < xi] = 0.0


def sora_gates(out):
    """tests/fixtures/sora-gates/golden.safetensors: three gate vectors through 40 steps of the
    official gate optimizer under linear warmup (the first step at lr 0, as HF's scheduler gives
    it), gradients of magnitude 1e-5 to 1e-3; g{i}.init, grad{s}.g{i}, g{i}.after{s}, lrs."""
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1)
    xi, betas, eps, steps, warmup, peak = 1e-3, (0.9, 0.999), 1e-6, 40, 8, 5e-3
    gates = [torch.tensor([1.0, 0.0015, -0.0015, 0.0005, -0.3, 0.0025, 0.02, -0.0019]),
             torch.randn(4) * 0.01,
             torch.randn(16) * 0.5]
    scales = [1e-5, 1e-4, 1e-3]
    tensors = {f"g{i}.init": g.clone() for i, g in enumerate(gates)}
    states = [{"step": 0, "exp_avg": torch.zeros_like(g), "exp_avg_sq": torch.zeros_like(g)}
              for g in gates]
    lrs = [peak * s / warmup if s < warmup else peak * (steps - s) / (steps - warmup)
           for s in range(steps)]
    for s, lr in enumerate(lrs):
        for i, g in enumerate(gates):
            grad = torch.randn_like(g) * scales[i]
            tensors[f"grad{s}.g{i}"] = grad.clone()
            official_gate_step(g, grad, states[i], lr, betas, eps, xi)
            tensors[f"g{i}.after{s}"] = g.clone()
    tensors["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    save_file(tensors, os.path.join(out, "golden.safetensors"),
              metadata={"torch": torch.__version__, "betas": "0.9,0.999", "eps": "1e-6",
                        "xi": "1e-3"})
    print(f"sora gates: {steps} steps")


if __name__ == "__main__":
    main(sys.argv[1])
    if len(sys.argv) > 2:
        sora_gates(sys.argv[2])
