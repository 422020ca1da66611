import math

import pytest
import torch

from medablate.config.schema import OptimizerConfig, SchedulerConfig
from medablate.train.optim import build_optimizer, build_scheduler


def lrs_per_epoch(scheduler_config: SchedulerConfig, epochs: int, steps: int) -> list[float]:
    """The LR each epoch runs at (its first step's LR), stepping the scheduler as the engine does."""
    optimizer = build_optimizer(OptimizerConfig(name="SGD", lr=1.0), [torch.nn.Parameter(torch.zeros(1))])
    scheduler = build_scheduler(scheduler_config, optimizer, epochs, steps)
    assert scheduler is not None
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        for _ in range(steps):
            optimizer.step()
            if scheduler_config.interval == "step":
                scheduler.step()
        if scheduler_config.interval == "epoch":
            scheduler.step()
    return out


def cosine(t: float, horizon: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * t / horizon))


@pytest.mark.parametrize("epochs", [2, 5, 40])
def test_cosine_per_epoch_follows_the_closed_form(epochs: int) -> None:
    lrs = lrs_per_epoch(SchedulerConfig(name="CosineAnnealingLR", interval="epoch"), epochs, steps=3)
    assert lrs == pytest.approx([cosine(e, epochs) for e in range(epochs)], abs=1e-12)


def test_cosine_per_step_follows_the_closed_form() -> None:
    epochs, steps = 4, 5
    lrs = lrs_per_epoch(SchedulerConfig(name="CosineAnnealingLR", interval="step"), epochs, steps)
    assert lrs == pytest.approx([cosine(e * steps, epochs * steps) for e in range(epochs)], abs=1e-12)


def test_two_epoch_cosine_runs_its_second_epoch_at_half_the_lr() -> None:
    assert lrs_per_epoch(SchedulerConfig(name="CosineAnnealingLR"), 2, 50) == pytest.approx([1.0, 0.5])


def test_forty_epoch_cosine_ends_under_one_percent() -> None:
    assert lrs_per_epoch(SchedulerConfig(name="CosineAnnealingLR"), 40, 50)[-1] < 0.01


def test_polynomial_power_one_is_linear_to_zero() -> None:
    lrs = lrs_per_epoch(SchedulerConfig(name="PolynomialLR", power=1), 10, 2)
    assert lrs == pytest.approx([1 - e / 10 for e in range(10)])


def test_an_explicit_horizon_is_kept() -> None:
    lrs = lrs_per_epoch(SchedulerConfig(name="CosineAnnealingLR", T_max=4), 2, 1)
    assert lrs == pytest.approx([1.0, cosine(1, 4)])


def test_step_lr_has_no_horizon_and_steps_per_epoch() -> None:
    lrs = lrs_per_epoch(SchedulerConfig(name="StepLR", step_size=2, gamma=0.5), 5, 3)
    assert lrs == pytest.approx([1, 1, 0.5, 0.5, 0.25])


def test_adam_is_fused_when_the_user_did_not_choose() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert build_optimizer(OptimizerConfig(name="Adam", lr=1e-3), params).defaults.get("fused") is True
    chosen = build_optimizer(OptimizerConfig(name="Adam", lr=1e-3, foreach=True), params)
    assert not chosen.defaults.get("fused")
