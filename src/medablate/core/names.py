"""Look up torch classes by name, with 'did you mean' suggestions for misspellings."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import torch


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The most similar candidate (case-insensitive), or None when nothing is close."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def unknown_name_message(kind: str, name: str, candidates: Iterable[str]) -> str:
    candidates = sorted(candidates)
    suggestion = closest(name, candidates)
    hint = f"did you mean '{suggestion}'?" if suggestion else f"valid names: {', '.join(candidates)}"
    return f"unknown {kind} '{name}': {hint}"


def _classes(module: ModuleType, base: type) -> dict[str, type]:
    return {
        n: obj
        for n, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, base) and obj is not base and not n.startswith("_")
    }


def optimizers() -> dict[str, type]:
    classes = _classes(torch.optim, torch.optim.Optimizer)
    # LBFGS needs a closure, SparseAdam sparse gradients, Muon 2-D parameters only.
    for name in ("LBFGS", "SparseAdam", "Muon"):
        classes.pop(name, None)
    return classes


def schedulers() -> dict[str, type]:
    classes = _classes(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler)
    # the meta-schedulers wrap others, and the lambda ones need a function: not supported by name (ReduceLROnPlateau
    # steps on training.monitor after each epoch's validation)
    for name in ("SequentialLR", "ChainedScheduler", "LambdaLR", "MultiplicativeLR", "LRScheduler"):
        classes.pop(name, None)
    return classes


def activations() -> dict[str, type]:
    module_names = set(torch.nn.modules.activation.__all__) - {
        "MultiheadAttention", "GLU", "Softmax", "Softmax2d", "Softmin", "LogSoftmax"}
    return {n: getattr(torch.nn, n) for n in module_names if hasattr(torch.nn, n)} | {"Identity": torch.nn.Identity}


def init_parameters(cls: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of a class's constructor (self included)."""
    return inspect.signature(cls.__init__).parameters


def check_kwargs(kind: str, cls: type, kwargs: dict[str, Any], reserved: Iterable[str] = ()) -> None:
    """Raise ValueError naming an unknown keyword argument of cls, with a suggestion."""
    params = init_parameters(cls)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p not in ("self", *reserved)]
    for key, value in kwargs.items():
        if key not in valid:
            suggestion = closest(key, valid)
            hint = f"did you mean '{suggestion}'?" if suggestion else f"it takes: {', '.join(valid) or 'nothing'}"
            raise ValueError(f"{kind} {cls.__name__} has no argument '{key}': {hint}")
        expected = _scalar_kind(params[key])
        if expected == "bool" and not isinstance(value, bool) or \
                expected == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{kind} {cls.__name__} argument '{key}' takes "
                             f"{'true or false' if expected == 'bool' else 'a number'}, not {value!r}")


def _scalar_kind(parameter: inspect.Parameter) -> str | None:
    """'bool' or 'number' when the parameter's default (or, without one, its annotation) says so; else None."""
    default = parameter.default
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, (int, float)):
        return "number"
    if default is inspect.Parameter.empty:
        annotation = parameter.annotation
        name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        return {"bool": "bool", "int": "number", "float": "number"}.get(name)
    return None


# the argument that is a scheduler's horizon, counted in its own interval (medablate.train.optim)
HORIZON_ARGUMENT = {
    "CosineAnnealingLR": "T_max",
    "PolynomialLR": "total_iters",
    "LinearLR": "total_iters",
    "ConstantLR": "total_iters",
    "OneCycleLR": "total_steps",
    "CosineAnnealingWarmRestarts": "T_0",
}


def missing_required(config_name: str, kwargs: dict[str, Any]) -> list[str]:
    """Required constructor arguments of a scheduler that neither the user nor the horizon rule supplies."""
    params = init_parameters(schedulers()[config_name])
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in ("self", "optimizer")]
    return [n for n in required if n not in kwargs and n != HORIZON_ARGUMENT.get(config_name)]


def safe_name(name: str) -> str:
    """A file-name-safe form of a user's name (comparison, evaluation): letters, digits, '.', '_', '-'."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return "_" + safe[1:] if safe.startswith(".") else safe or "unnamed"  # never '.', '..' or a hidden file
