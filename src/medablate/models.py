"""Model registry: one name, one constructor. The head size comes from the task, never guessed."""

from __future__ import annotations

from typing import Callable

from torch import nn

from medablate import names
from medablate.config import ModelConfig
from medablate.layers import InPlaceGradLinear

ModelBuilder = Callable[[ModelConfig, tuple[int, int], int], nn.Module]
REGISTRY: dict[str, ModelBuilder] = {}


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def add(builder: ModelBuilder) -> ModelBuilder:
        REGISTRY[name] = builder
        return builder

    return add


def build_model(config: ModelConfig, image_shape: tuple[int, int], num_outputs: int) -> nn.Module:
    return REGISTRY[config.name](config, image_shape, num_outputs)


@register("mlp")
def mlp(config: ModelConfig, image_shape: tuple[int, int], num_outputs: int) -> nn.Sequential:
    """The course MLP: Flatten, then Linear-BatchNorm1d-activation-Dropout blocks, then a linear head.

    Layer order and initialisation match the course notebook's nn.Sequential, so the same seed gives
    the same initial weights.
    """
    activation = names.activations()[config.activation.name]
    layers: list[nn.Module] = [nn.Flatten()]
    width = image_shape[0] * image_shape[1]
    for hidden, dropout in zip(config.hidden, config.dropout):
        layers.append(InPlaceGradLinear(width, hidden))
        if config.batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(activation(**config.activation.kwargs))
        layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(InPlaceGradLinear(width, num_outputs))
    return nn.Sequential(*layers)


def count_outputs(model: nn.Module) -> int:
    """Width of the last Linear layer: how many logits the model emits."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features
