"""A Linear layer whose weight gradient is accumulated in place.

nn.Linear's backward allocates a fresh weight-gradient tensor every step. For the course MLP's first
layer (65536 x 512 = 33.5 M weights, 128 MiB) that is a 128 MiB allocation per step, which glibc
serves with mmap: the kernel then zero-fills 32768 fresh pages per step, and page faults end up
costing as much as the matrix products. Accumulating with addmm_ into the persistent .grad
buffer computes the same product with no allocation. Use with optimizer.zero_grad(set_to_none=False). Under autocast
(training.precision bf16 / fp16) it is plain nn.Linear.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _InPlaceGradLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.owner = weight  # the Parameter itself: saved_tensors would hand back a different object
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        if ctx.needs_input_grad[1]:
            owner = ctx.owner
            if owner.grad is None:
                owner.grad = torch.zeros_like(owner)
            owner.grad.addmm_(grad_out.t(), x)
        grad_bias = grad_out.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, None, grad_bias


class InPlaceGradLinear(nn.Linear):
    """nn.Linear with the same parameters, initialisation and output; only the backward's memory use differs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or self.bias is None or not torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
            return super().forward(x)  # under autocast (mixed precision) nn.Linear's own casting rules apply
        return _InPlaceGradLinear.apply(x, self.weight, self.bias)
