"""Model registry: a name, its config class and a builder taking (config, input shape (C, H, W), outputs).

A model is one file in this package: its config class (a medablate.config.base.ModelBase, which also writes the
model's sentence of the methods paragraph) and its builder, decorated with @register_model(name, config, ...); the
study schema's `model` union is built from the registered config classes. The head size comes from the
task, never guessed; input channels from the data. `create_model` adds the trial's input standardisation and
test-time augmentation around the network (only when they are on, so plain networks keep their state-dict keys).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medablate.core.registry import MODELS
from medablate.models.wrapper import Classifier

InputShape = tuple[int, int, int]  # (C, H, W)
Builder = Callable[[Any, InputShape, int], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: type  # its config class (a ModelBase), a member of the study schema's `model` union
    build: Builder
    convolutional: bool  # channels-last, Grad-CAM
    summary: str
    aliases: tuple[str, ...] = ()  # other values of `model.name` that mean this model (resnet18 -> monai)


def register_model(name: str, config: type, convolutional: bool, summary: str,
                   aliases: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        MODELS.register(name, ModelEntry(name, config, builder, convolutional, summary, aliases))
        return builder

    return add


def entry(config: Any) -> ModelEntry:
    """The registered model a config section names (by its name or an alias)."""
    entries = MODELS.entries()
    return next(e for e in entries.values() if config.name == e.name or config.name in e.aliases)


def input_shape(shape: tuple[int, ...]) -> InputShape:
    """(C, H, W) from a recorded image shape: (H, W) is a grey image of a checkpoint from before channels."""
    return (1, int(shape[0]), int(shape[1])) if len(shape) == 2 else (int(shape[0]), int(shape[1]), int(shape[2]))


def build_model(config: Any, shape: tuple[int, ...], num_outputs: int, normalize: str = "none",
                tta: str = "none") -> nn.Module:
    """The trial's network for images of `shape` ((C, H, W), or (H, W) for grey), with its standardisation and
    test-time augmentation when on. Weights are initialised from the global RNG (seeded by the caller)."""
    shape = input_shape(shape)
    net = entry(config).build(config, shape, num_outputs)
    if normalize == "none" and tta == "none":
        return net
    return Classifier(net, shape[0], normalize, tta, num_outputs)


def network(model: nn.Module) -> nn.Module:
    """The network itself, without standardisation and test-time augmentation."""
    return model.net if isinstance(model, Classifier) else model


def count_outputs(model: nn.Module) -> int:
    """Width of the last Linear layer: how many logits the model emits."""
    last = [m for m in network(model).modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


def is_convolutional(config: Any) -> bool:
    return entry(config).convolutional


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def set_dataset_statistics(model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
    if isinstance(model, Classifier):
        model.set_statistics(mean, std)
