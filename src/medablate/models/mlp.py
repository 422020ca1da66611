"""The course MLP."""

from __future__ import annotations

from torch import nn

from medablate import names
from medablate.config import MLPConfig
from medablate.layers import InPlaceGradLinear
from medablate.models import InputShape, register_model


@register_model("mlp", convolutional=False, summary="the course MLP: Linear-BatchNorm-activation-Dropout blocks")
def mlp(config: MLPConfig, shape: InputShape, num_outputs: int) -> nn.Sequential:
    """Flatten, then Linear-BatchNorm1d-activation-Dropout blocks, then a linear head.

    Layer order and initialisation match the course notebook's nn.Sequential, so the same seed gives
    the same initial weights. It flattens whatever it gets: (C, H, W) images give C*H*W inputs.
    """
    activation = names.activations()[config.activation.name]
    layers: list[nn.Module] = [nn.Flatten()]
    width = shape[0] * shape[1] * shape[2]
    for hidden, dropout in zip(config.hidden, config.dropout):
        layers.append(InPlaceGradLinear(width, hidden))
        if config.batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(activation(**config.activation.kwargs))
        layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(InPlaceGradLinear(width, num_outputs))
    return nn.Sequential(*layers)
