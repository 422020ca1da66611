"""Where a model looked: Grad-CAM on the last convolutional stage (Selvaraju et al. 2017) for convolutional
networks, the input gradient for the others. Written here rather than taken from monai.visualize.GradCAM, which
needs the layer's dotted name: medablate finds the layer itself, for any network, by watching one forward pass."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medablate.models import network
from medablate.models.wrapper import Classifier


def single_view(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of the image itself (standardised as in training; no test-time augmentation)."""
    return model.single(x) if isinstance(model, Classifier) else model(x)


def score(logits: torch.Tensor, decision: int, num_outputs: int) -> torch.Tensor:
    """The decided class's evidence: its logit (one-logit models: the logit, negated for class 0)."""
    return logits[0, 0] * (1 if decision == 1 else -1) if num_outputs == 1 else logits[0, decision]


def last_feature_map(net: nn.Module, x: torch.Tensor) -> nn.Module | None:
    """The module whose output is the last spatial (B, C, h, w) map of a forward pass, h * w > 1: the last
    convolutional stage (containers finish after their children, so a stage wins over its last convolution)."""
    found: list[nn.Module] = []

    def record(module: nn.Module, _: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
            found.append(module)

    hooks = [m.register_forward_hook(record) for m in net.modules() if m is not net]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return found[-1] if found else None


def grad_cam(model: nn.Module, x: torch.Tensor, decision: int, num_outputs: int, layer: nn.Module) -> np.ndarray:
    """(H, W) map in [0, 1]: ReLU of the layer's activations weighted by their mean gradient, upsampled."""
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        logits = single_view(model, x)
    finally:
        hook.remove()
    activation = captured[-1]
    (gradient,) = torch.autograd.grad(score(logits, decision, num_outputs), activation)
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].detach()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).detach().float().numpy()


def input_gradient(model: nn.Module, x: torch.Tensor, decision: int, num_outputs: int) -> np.ndarray:
    """(H, W): |d score / d pixel|, summed over channels."""
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(score(single_view(model, x), decision, num_outputs), x)
    return gradient[0].abs().sum(0).float().numpy()


GRAD_CAM = "Grad-CAM (last convolutional stage)"
INPUT_GRADIENT = "input gradient"


def target_layer(model: nn.Module, x: torch.Tensor) -> nn.Module | None:
    """Grad-CAM's layer for this model (None: it has no spatial feature map, so the input gradient), found by one
    forward pass of x; the same for every image of one size, so callers keep it. The model is left in eval mode."""
    model.eval()
    inner = model.standardize(x) if isinstance(model, Classifier) else x
    return last_feature_map(network(model), inner)


def method(layer: nn.Module | None) -> str:
    """Which saliency saliency_map gives with this target layer."""
    return INPUT_GRADIENT if layer is None else GRAD_CAM


def saliency_map(model: nn.Module, x: torch.Tensor, decision: int, num_outputs: int,
                 layer: nn.Module | None = None, find: bool = True) -> np.ndarray:
    """(H, W) for one image x (1, C, H, W) in [0, 1]: Grad-CAM on `layer` (found when find is True), else the
    input gradient. The model is left in eval mode."""
    layer = target_layer(model, x) if find else layer
    model.eval()
    with torch.enable_grad():
        if layer is None:
            return input_gradient(model, x, decision, num_outputs)
        return grad_cam(model, x, decision, num_outputs, layer)
