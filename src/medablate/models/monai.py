"""MONAI networks by name: `{name: monai, net: DenseNet121, kwargs: {...}}` or a short alias (resnet18, ...).

medablate sets spatial_dims (2), the input channels (from the data) and the head (from the task), whatever the
network calls them (in_channels / n_input_channels, out_channels / num_classes). Unknown classes and keyword
arguments are config errors, before anything trains.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator
from torch import nn

from medablate.config.base import ModelBase
from medablate.core import names
from medablate.models import register_model

IN_NAMES = ("in_channels", "n_input_channels")
OUT_NAMES = ("out_channels", "num_classes")
# alias -> (builder in monai.networks.nets, the class whose signature its kwargs follow, defaults medablate sets)
ALIASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "resnet18": ("resnet18", "ResNet", {"conv1_t_stride": 2}),  # ImageNet's stem: 7x7 stride 2, then max-pool
    "resnet34": ("resnet34", "ResNet", {"conv1_t_stride": 2}),
    "resnet50": ("resnet50", "ResNet", {"conv1_t_stride": 2}),
    "densenet121": ("DenseNet121", "DenseNet121", {}),
    "efficientnet-b0": ("EfficientNetBN", "EfficientNetBN", {"model_name": "efficientnet-b0", "pretrained": False}),
}


class MonaiConfig(ModelBase):
    """Any network of monai.networks.nets (`{name: monai, net: DenseNet121, kwargs: {...}}`) or a short alias
    (resnet18, resnet34, resnet50, densenet121, efficientnet-b0). spatial_dims, channels and the head are set by
    medablate."""

    name: Literal["monai", "resnet18", "resnet34", "resnet50", "densenet121", "efficientnet-b0"] = "monai"
    net: str | None = Field(None, description="a class or builder in monai.networks.nets (name: monai)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="its keyword arguments")

    @model_validator(mode="after")
    def _known(self) -> MonaiConfig:
        check(self)
        return self

    def describe(self, start: str) -> str:
        net = self.net if self.name == "monai" else self.name
        return f"MONAI's {net}{' (' + str(self.kwargs) + ')' if self.kwargs else ''}{start}"


SET_BY_MEDABLATE = ("spatial_dims", *IN_NAMES, *OUT_NAMES)


def networks() -> dict[str, Any]:
    """Classes and builders of monai.networks.nets that take spatial_dims, input channels and an output size."""
    import monai.networks.nets as nets

    found: dict[str, Any] = {}
    for name, obj in vars(nets).items():
        if name.startswith("_") or not callable(obj) or any(obj is other for other in found.values()):
            continue  # MONAI exports the same class under several spellings (DenseNet121, Densenet121, ...)
        params = _parameters(obj)
        if "spatial_dims" in params and any(p in params for p in IN_NAMES) and any(p in params for p in OUT_NAMES):
            found[name] = obj
    for builder, _, _ in ALIASES.values():
        found.setdefault(builder, getattr(nets, builder))
    return found


def _parameters(obj: Any) -> dict[str, inspect.Parameter]:
    try:
        target = obj.__init__ if inspect.isclass(obj) else obj
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return {}


def resolve(config: Any) -> tuple[str, str, dict[str, Any]]:
    """(builder name, signature class name, keyword arguments) of a MonaiConfig."""
    if config.name in ALIASES:
        builder, signature, defaults = ALIASES[config.name]
        return builder, signature, defaults | dict(config.kwargs)
    return config.net, config.net, dict(config.kwargs)


def check(config: Any) -> None:
    """ValueError naming an unknown network, a network without spatial_dims / channels / head, or an unknown or
    reserved keyword argument, with the closest valid name."""
    import monai.networks.nets as nets

    if config.name == "monai" and not config.net:
        raise ValueError("model name monai needs net: a class of monai.networks.nets, e.g. "
                         "{name: monai, net: DenseNet121}")
    if config.name != "monai" and config.net:
        raise ValueError(f"model {config.name} is an alias that sets its own net; drop net: {config.net} "
                         f"(or use name: monai, net: {config.net})")
    builder, signature, kwargs = resolve(config)
    table = networks()
    if builder not in table:
        raise ValueError(names.unknown_name_message("MONAI network", builder, table))
    reserved = [k for k in kwargs if k in SET_BY_MEDABLATE]
    if reserved:
        raise ValueError(f"model.kwargs sets {', '.join(reserved)}, which medablate sets from the data and the task "
                         "(spatial_dims 2, channels from data.channels, the head from training.loss): drop it")
    valid = accepted(getattr(nets, signature))
    for key in kwargs:
        if key not in valid:
            suggestion = names.closest(key, valid)
            hint = f"did you mean '{suggestion}'?" if suggestion else f"it takes: {', '.join(sorted(valid))}"
            raise ValueError(f"MONAI network {signature} has no argument '{key}': {hint}")


def accepted(cls: Any) -> set[str]:
    """Keyword arguments a network class takes, following **kwargs to its base classes (DenseNet121 -> DenseNet)."""
    valid: set[str] = set()
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else (cls,):
        params = _parameters(klass)
        valid |= {n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()) or klass is nn.Module:
            break
    return valid - set(SET_BY_MEDABLATE)


def build(config: Any, in_channels: int, num_outputs: int) -> nn.Module:
    import monai.networks.nets as nets

    builder, signature, kwargs = resolve(config)
    make: Callable[..., nn.Module] = getattr(nets, builder)
    params = _parameters(getattr(nets, signature))
    in_name = next(p for p in IN_NAMES if p in params)
    out_name = next(p for p in OUT_NAMES if p in params)
    return make(spatial_dims=2, **{in_name: in_channels, out_name: num_outputs}, **kwargs)


@register_model("monai", MonaiConfig, convolutional=True, aliases=tuple(ALIASES),
                summary="any network of monai.networks.nets; aliases " + ", ".join(ALIASES))
def monai(config: MonaiConfig, shape: tuple[int, int, int], num_outputs: int) -> nn.Module:
    return build(config, shape[0], num_outputs)
