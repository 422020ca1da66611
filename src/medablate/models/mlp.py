"""The course MLP."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt, field_validator, model_validator
from torch import nn

from medablate.config.base import ActivationConfig, ModelBase, as_named
from medablate.core import names
from medablate.models import InputShape, register_model
from medablate.models.layers import InPlaceGradLinear


class MLPConfig(ModelBase):
    """The course MLP: Linear-BatchNorm-activation-Dropout blocks on the flattened image."""

    name: Literal["mlp"] = "mlp"
    hidden: list[StrictInt] = Field(default_factory=lambda: [512, 256, 256])
    dropout: list[float] = Field(default_factory=lambda: [0.9, 0.9, 0.8])
    batchnorm: bool = True
    activation: ActivationConfig = ActivationConfig(name="ReLU")

    _named = field_validator("activation", mode="before")(as_named)

    @model_validator(mode="after")
    def _dropout_per_block(self) -> MLPConfig:
        if len(self.dropout) != len(self.hidden):
            raise ValueError(
                f"dropout has {len(self.dropout)} values but hidden has {len(self.hidden)} blocks: "
                "give one dropout probability per hidden layer")
        if any(not 0 <= p < 1 for p in self.dropout):
            raise ValueError(f"dropout probabilities must be in [0, 1): got {self.dropout}")
        if any(w < 1 for w in self.hidden):
            raise ValueError(f"hidden widths must be positive: got {self.hidden}")
        return self

    def describe(self, start: str) -> str:
        blocks = ", ".join(f"{w} (dropout {p})" for w, p in zip(self.hidden, self.dropout, strict=False))
        return (f"a multilayer perceptron on the flattened image with hidden blocks of {blocks}, each Linear"
                f"{'-BatchNorm' if self.batchnorm else ''}-{self.activation.name}-Dropout"
                + (start if self.weights else ""))


@register_model("mlp", MLPConfig, convolutional=False, summary="the course MLP: Linear-BatchNorm-activation-Dropout blocks")
def mlp(config: MLPConfig, shape: InputShape, num_outputs: int) -> nn.Sequential:
    """Flatten, then Linear-BatchNorm1d-activation-Dropout blocks, then a linear head.

    Layer order and initialisation match the course notebook's nn.Sequential, so the same seed gives
    the same initial weights. It flattens whatever it gets: (C, H, W) images give C*H*W inputs.
    """
    activation = names.activations()[config.activation.name]
    layers: list[nn.Module] = [nn.Flatten()]
    width = shape[0] * shape[1] * shape[2]
    for hidden, dropout in zip(config.hidden, config.dropout, strict=False):
        layers.append(InPlaceGradLinear(width, hidden))
        if config.batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(activation(**config.activation.kwargs))
        layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(InPlaceGradLinear(width, num_outputs))
    return nn.Sequential(*layers)
