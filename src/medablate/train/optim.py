"""Optimizer and LR scheduler by torch class name, with horizons counted in the unit they step in.

A scheduler's horizon (T_max, total_iters, ...) defaults to the whole run in its own interval:
epochs for `interval: epoch`, optimizer steps for `interval: step`. So a cosine schedule always
reaches eta_min after the last step; counting T_max in steps but stepping per epoch (the course
notebook's bug, whose LR never decayed) cannot happen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from medablate.config.schema import PLATEAU, OptimizerConfig, SchedulerConfig
from medablate.core import names
from medablate.core.names import HORIZON_ARGUMENT


def build_optimizer(config: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The named optimizer; fused (one kernel, no temporaries) when the class supports it and the user did not choose."""
    cls = names.optimizers()[config.name]
    kwargs = config.kwargs
    params = list(params)
    accepts = names.init_parameters(cls)
    if "fused" in accepts and "fused" not in kwargs and "foreach" not in kwargs:
        try:
            return cls(params, **kwargs, fused=True)
        except (RuntimeError, ValueError, TypeError):
            pass  # this build or device has no fused kernel for this optimizer: use the default
    return cls(params, **kwargs)


def scheduler_horizon(config: SchedulerConfig, epochs: int, steps_per_epoch: int) -> int:
    return epochs if config.interval == "epoch" else epochs * steps_per_epoch


def build_scheduler(config: SchedulerConfig | None, optimizer: torch.optim.Optimizer, epochs: int,
                    steps_per_epoch: int, monitor: str = "val_loss") -> torch.optim.lr_scheduler.LRScheduler | None:
    if config is None:
        return None
    cls = names.schedulers()[config.name]
    kwargs: dict[str, Any] = config.kwargs
    if config.name == PLATEAU:  # it follows the monitored metric: a loss down, anything else up
        kwargs.setdefault("mode", "min" if monitor.endswith("loss") else "max")
    horizon_key = HORIZON_ARGUMENT.get(config.name)
    if horizon_key and horizon_key not in kwargs:
        kwargs[horizon_key] = scheduler_horizon(config, epochs, steps_per_epoch)
    return cls(optimizer, **kwargs)
