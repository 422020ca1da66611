"""What a trial puts around its network: input standardisation (data.normalize) and test-time augmentation.

Both live in the model, so training, validation, `evaluate` and `predict` apply them identically; the dataset
statistics are buffers and travel in every checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


class Classifier(nn.Module):
    mean: torch.Tensor  # buffers, with normalize: dataset
    std: torch.Tensor

    def __init__(self, net: nn.Module, channels: int, normalize: str, tta: str, num_outputs: int) -> None:
        super().__init__()
        self.net, self.normalize, self.tta, self.single_logit = net, normalize, tta, num_outputs == 1
        if normalize == "dataset":
            self.register_buffer("mean", torch.zeros(channels))
            self.register_buffer("std", torch.ones(channels))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if self.normalize == "dataset":
            self.mean.copy_(mean)
            self.std.copy_(std.clamp_min(EPS))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize == "dataset":
            return (x - self.mean[:, None, None]) / self.std[:, None, None]
        if self.normalize == "image":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(EPS)
        return x

    def single(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of one view (training, saliency)."""
        return self.net(self.standardize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.tta == "none":
            return self.single(x)
        probabilities = torch.stack([self._probabilities(self.single(view)) for view in views(x, self.tta)]).mean(0)
        return self._logits(probabilities)

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float()) if self.single_logit else torch.softmax(logits.float(), dim=1)

    def _logits(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Logits whose probabilities are the averaged ones (the loss's rule then decides as for one view)."""
        p = probabilities.clamp(EPS, 1 - EPS)
        return torch.log(p) - torch.log1p(-p) if self.single_logit else torch.log(p)


CROP = 0.9


def views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """flip: the image and its mirror; crops: the image and its four corner crops of 90% side, resized back."""
    if tta == "flip":
        return [x, x.flip(-1)]
    size = x.shape[-2:]
    h, w = round(size[0] * CROP), round(size[1] * CROP)
    corners = [x[..., :h, :w], x[..., :h, -w:], x[..., -h:, :w], x[..., -h:, -w:]]
    return [x, *(F.interpolate(c, size=size, mode="bilinear", align_corners=False) for c in corners)]
