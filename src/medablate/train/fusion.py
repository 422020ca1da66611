"""Fused seeds: the seeds of one trial train together as one model on one device (training.fuse_seeds).

Every seed keeps its own Trainer: its model, optimizer, scheduler, EMA, checkpoints, history and run folder, so
every file looks as if the seeds had trained one by one. What is shared is the arithmetic: the seeds' weights are
stacked (each model's tensors become views of the stacked ones) and one `torch.func.vmap` over `functional_call`
runs all seeds' batches at once (PyTorch's model-ensembling recipe), so a small network pays for its kernel
launches once instead of once per seed. BatchNorm's running statistics are stacked too and updated in place under
vmap, per seed. The loss is one vmapped loss, the epoch's running sums are the group's rows, and while every seed
trains the optimizer step is one step over the stacked weights (StackedSteps: the seeds' optimizer state is views
of the stacked state), so a step's count of operators hardly grows with the seeds.

Randomness stays each seed's own: its global RNG state is swapped in while its batch order, augmentation, mixing
and dropout masks are drawn, in the order an unfused run draws them. Dropout masks are drawn outside vmap, as
F.dropout draws them on a CPU (`bernoulli_(1 - p)` then `/ (1 - p)`), and handed to the shared pass. So on a CPU
a fused seed follows its unfused run to float rounding (tests/test_fusion.py states the tolerance); on a GPU
F.dropout has a kernel of its own, so the masks differ there, as they differ between GPUs anyway.

A seed joins the shared pass from the epoch and batch its own checkpoint resumes at, and leaves it when it ends
(its epochs done, stopped early or diverged); checkpoints are due for all seeds at once.
"""

from __future__ import annotations

import copy
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.func import functional_call, vmap

from medablate.config.schema import TrialConfig
from medablate.core import faults, names
from medablate.errors import stop_between_batches, stop_requested, take_stop
from medablate.models import input_shape, is_convolutional, network
from medablate.models.layers import InPlaceGradLinear
from medablate.train.engine import (
    EpochPosition,
    FitResult,
    Split,
    Trainer,
    balanced_order,
    build_trial_model,
    epoch_permutation,
    steps_per_epoch,
)

DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
UNFUSABLE_LAYERS = (nn.AlphaDropout, nn.FeatureAlphaDropout)


def unfusable(config: TrialConfig, shape: tuple[int, ...], num_outputs: int) -> str | None:
    """Why this trial's seeds cannot train as one fused model (None: they can)."""
    training = config.training
    if training.compile:
        return "training.compile is on"
    if training.precision == "fp16":
        return "training.precision fp16 scales each seed's loss on its own"
    with torch.random.fork_rng(), torch.device("meta"):  # the layers only: no memory, no draw from the RNG
        model = build_trial_model(config, input_shape(shape), num_outputs)
    odd = next((type(m).__name__ for m in model.modules() if isinstance(m, UNFUSABLE_LAYERS)), None)
    if odd:
        return f"the model has a {odd} layer"
    cumulative = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None for m in model.modules())
    return "a BatchNorm layer averages with momentum None (its step count decides)" if cumulative else None


def fuses(config: TrialConfig, device: torch.device, shape: tuple[int, ...], num_outputs: int) -> bool:
    """Whether training.fuse_seeds fuses this trial's seeds on this device, where the model allows: on, always; auto,
    where it was measured to pay: a network without convolutions (the course MLP) on a GPU. Measured on an H200
    (benchmarks/fusion_time.py): the course MLP's 5 seeds 2.3x faster over 4 epochs (1.3x per epoch after the
    first); the recipe CNN at 128 px 0.94x and a MONAI ResNet-18 0.88x per epoch (a convolution per seed is already
    wide enough); on a 2-core CPU the course MLP 0.34x (the batched products copy their gradients)."""
    wanted = config.training.fuse_seeds
    if wanted == "off" or (wanted == "auto" and (device.type != "cuda" or is_convolutional(config.model))):
        return False
    return unfusable(config, shape, num_outputs) is None


class MaskedDropout(nn.Module):
    """Dropout in the shared pass: multiplies by the mask the seed drew before the pass (a class swapped onto a copy
    of the model's nn.Dropout layers; p and inplace are theirs)."""

    p: float
    feed: list[torch.Tensor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * self.feed.pop(0)


def batch_norm_without_cudnn(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """_BatchNorm.forward for the shared pass. On a GPU, torch.batch_norm asks an image batch (3 and more dimensions)
    for its channels-last layout (to choose cuDNN), which vmap cannot answer: images are normalised with plain tensor
    operations instead, the running statistics updated as the kernel updates them, on every device (so the CPU
    tests check the very code a GPU runs). Features (the MLP's BatchNorm1d) go through the kernel."""
    momentum = 0.0 if self.momentum is None else self.momentum
    if self.training and self.track_running_stats and self.num_batches_tracked is not None:
        self.num_batches_tracked.add_(1)
    batch_statistics = self.training or (self.running_mean is None and self.running_var is None)
    tracked = not self.training or self.track_running_stats
    mean, var = (self.running_mean, self.running_var) if tracked else (None, None)
    if x.dim() < 3:
        return torch.batch_norm(x, self.weight, self.bias, mean, var, batch_statistics, momentum, self.eps, False)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if batch_statistics:
        dims = [0, *range(2, x.dim())]
        batch_var, batch_mean = torch.var_mean(x, dim=dims, correction=0)
        if mean is not None and var is not None:
            count = x.numel() / x.shape[1]
            with torch.no_grad():
                mean.mul_(1 - momentum).add_(batch_mean.detach(), alpha=momentum)
                var.mul_(1 - momentum).add_(batch_var.detach() * (count / max(count - 1, 1)), alpha=momentum)
        mean, var = batch_mean, batch_var
    assert mean is not None and var is not None
    y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
    if self.weight is not None and self.bias is not None:
        y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
    return y


class GlobalMean(nn.Module):
    """Global average pooling to 1 x 1 as a mean (swapped onto a copy of the model's AdaptiveAvgPool2d(1))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1), keepdim=True)


def shared_module(model: nn.Module) -> tuple[nn.Module, list[torch.Tensor]]:
    """A copy of the model for the shared pass (its tensors are replaced at each call) and the list its dropout layers
    take their masks from."""
    template = copy.deepcopy(model)
    feed: list[torch.Tensor] = []
    for module in template.modules():
        if isinstance(module, InPlaceGradLinear):  # its autograd.Function has no vmap rule; nn.Linear's forward
            module.__class__ = nn.Linear  # type: ignore[assignment]
        elif isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
            module.__class__ = GlobalMean  # type: ignore[assignment]  # adaptive_avg_pool2d: no vmap rule (slow)
        elif type(module) in DROPOUTS:
            module.__class__ = MaskedDropout
            module.feed = feed  # type: ignore[assignment]
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.forward = types.MethodType(batch_norm_without_cudnn, module)  # type: ignore[method-assign]
    return template, feed


@dataclass(frozen=True)
class MaskShape:
    p: float
    shape: tuple[int, ...]
    channels_last: bool


def mask_shapes(model: nn.Module, images: torch.Tensor) -> list[MaskShape]:
    """The masks one training pass of `images`' shape draws, in the order the dropout layers draw them (one pass in
    eval mode, which draws nothing and changes no statistic)."""
    found: list[MaskShape] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = inputs[0]
        feature = type(module) is not nn.Dropout  # Dropout1d/2d/3d: one draw per sample and channel
        shape = tuple(x.shape[:2]) + (1,) * (x.dim() - 2) if feature else tuple(x.shape)
        last = not feature and x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last)
        found.append(MaskShape(float(module.p), shape, last))  # type: ignore[arg-type]

    net = network(model)  # the network alone: test-time augmentation's views would repeat its layers
    hooks = [m.register_forward_hook(record) for m in net.modules()
             if type(m) in DROPOUTS and m.p > 0]  # type: ignore[operator]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            net(images)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return found


def draw_masks(shapes: list[MaskShape], device: torch.device) -> list[torch.Tensor]:
    """Dropout masks from the global RNG, as F.dropout draws them on a CPU (draw_mask's draws, each on its own)."""
    masks = []
    for s in shapes:
        mask = torch.empty(s.shape, device=device)
        draw_mask(mask, s)
        masks.append(mask.div_(1 - s.p))
    return masks


def draw_mask(into: torch.Tensor, shape: MaskShape) -> None:
    """A dropout mask drawn into a place of a stacked mask (to be divided by 1 - p), as draw_masks draws it."""
    if shape.channels_last:  # the draw follows the memory layout
        into.copy_(torch.empty(shape.shape, device=into.device, memory_format=torch.channels_last).bernoulli_(
            1 - shape.p))
    else:
        into.bernoulli_(1 - shape.p)


class RngSlot:
    """One seed's global RNG streams (CPU, and the GPU's), swapped in while that seed draws."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextmanager
    def active(self) -> Iterator[None]:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        try:
            yield
        finally:
            self.cpu = torch.get_rng_state()
            if self.cuda is not None:
                self.cuda = torch.cuda.get_rng_state(self.device)


# Optimizers whose step is elementwise: stacked weights step as each seed's would (Adafactor factors a matrix's
# second moment, Muon orthogonalises it, LBFGS searches a line: a stacked weight would change their step)
ELEMENTWISE_OPTIMIZERS = frozenset({"Adam", "AdamW", "SGD", "RMSprop", "NAdam", "RAdam", "Adamax", "Adagrad"})
SCALAR_STATE = frozenset({"step", "mu_product"})  # one number per weight tensor, however large the tensor


class StackedSteps:
    """One optimizer step for every seed of a group at once, over the stacked weights (one fused kernel instead of one
    per seed, and one Python call). The seeds' own optimizers keep their state: its tensors the size of a weight
    are views of the stacked state, as the seeds' weights are views of the stacked weights; its step counts are
    written back to each seed before anyone reads or steps them (a checkpoint, a cut, a seed stepping alone while
    another waits). A step is taken together only while every seed's settings agree (a plateau scheduler may cut
    one seed's rate) and their states stack; otherwise each seed steps alone, with the very same numbers."""

    def __init__(self, stacked: list[torch.Tensor], optimizers: list[torch.optim.Optimizer]) -> None:
        first = optimizers[0]
        if stacked[0].device.type == "cpu":
            plain_kernels(optimizers)
        accepted = names.init_parameters(type(first))
        self.optimizer = type(first)(stacked, **{k: v for k, v in first.defaults.items() if k in accepted})
        self.stacked = stacked
        self.optimizers = optimizers
        self.params = [list(o.param_groups[0]["params"]) for o in optimizers]  # each seed's, in the stacked order
        self.valid = False  # the stacked state is the seeds' (theirs views of it, their step counts its own or behind)
        self.current = False  # the stacked state holds the latest step counts, the seeds' are behind

    @classmethod
    def of(cls, stacked: list[torch.Tensor], optimizers: list[torch.optim.Optimizer]) -> StackedSteps | NoSteps:
        """Stacked steps where the seeds' optimizer allows them (elementwise, one parameter group)."""
        if type(optimizers[0]).__name__ not in ELEMENTWISE_OPTIMIZERS or any(
                len(o.param_groups) != 1 or len(o.param_groups[0]["params"]) != len(stacked) for o in optimizers):
            return NoSteps()
        return cls(stacked, optimizers)

    def step(self) -> bool:
        """Every seed's step at once; False, and nothing done, where they cannot be taken together."""
        settings = [group_settings(o.param_groups[0]) for o in self.optimizers]
        if any(s != settings[0] for s in settings[1:]) or not (self.valid or self._gather()):
            return False
        fresh = [p for p in self.stacked if not self.optimizer.state.get(p)]  # no state yet (or never a gradient)
        self.optimizer.param_groups[0].update({k: v for k, v in self.optimizers[0].param_groups[0].items()
                                               if k != "params"})
        self.optimizer.step()
        if any(self.optimizer.state.get(p) for p in fresh):  # state began at this step: the seeds' is views of it
            self._bind()
        for optimizer in self.optimizers:
            optimizer._opt_called = True  # type: ignore[attr-defined]  # stepped: no LR scheduler warning
        self.valid = self.current = True
        return True

    def alone(self) -> None:
        """The seeds are about to step on their own: their step counts brought up to date, and the stacked state
        gathered anew before the next step taken together."""
        self.release()
        self.valid = False

    def release(self) -> None:
        """The seeds' step counts brought up to date (before a seed steps alone or its state is saved)."""
        if not self.current:
            return
        for i, stacked in self._stepped():
            for params, optimizer in zip(self.params, self.optimizers, strict=True):
                state = optimizer.state[params[i]]
                for key, value in self.optimizer.state[stacked].items():
                    if not self._per_weight(key, value, stacked):
                        state[key] = value.clone() if isinstance(value, torch.Tensor) else value
        self.current = False

    def _stepped(self) -> list[tuple[int, torch.Tensor]]:
        """The stacked weights that have optimizer state (one without a gradient yet has none, nor do the seeds')."""
        return [(i, w) for i, w in enumerate(self.stacked) if self.optimizer.state.get(w)]

    def _per_weight(self, key: str, value: object, weight: torch.Tensor) -> bool:
        return key not in SCALAR_STATE and isinstance(value, torch.Tensor) and value.shape == weight.shape

    def _gather(self) -> bool:
        """The seeds' states stacked, theirs then views of it; False where they differ in kind or step count."""
        merged: dict[torch.Tensor, dict[str, object]] = {}
        for i, stacked in enumerate(self.stacked):
            states = [o.state.get(params[i], {}) for o, params in zip(self.optimizers, self.params, strict=True)]
            if not any(states):  # no seed has stepped this weight yet (or it never had a gradient)
                continue
            if any(s.keys() != states[0].keys() for s in states):
                return False
            merged[stacked] = {}
            for key, value in states[0].items():
                values = [s[key] for s in states]
                if self._per_weight(key, value, self.params[0][i]):
                    merged[stacked][key] = torch.stack(values)
                elif all(same(v, value) for v in values[1:]):
                    merged[stacked][key] = value.clone() if isinstance(value, torch.Tensor) else value
                else:
                    return False
        self.optimizer.state.clear()
        self.optimizer.state.update(merged)
        if merged:
            self._bind()
        self.valid = True
        return True

    def _bind(self) -> None:
        """Each seed's per-weight state a view of its place in the stacked state."""
        for i, stacked in self._stepped():
            for k, (params, optimizer) in enumerate(zip(self.params, self.optimizers, strict=True)):
                state = optimizer.state[params[i]]
                for key, value in self.optimizer.state[stacked].items():
                    if self._per_weight(key, value, stacked):
                        state[key] = value[k]
                    elif key not in state:
                        state[key] = value.clone() if isinstance(value, torch.Tensor) else value


def plain_kernels(optimizers: list[torch.optim.Optimizer]) -> None:
    """On a CPU, fused seeds step with the optimizer's plain kernels (for each tensor, the elementwise operators):
    its fused kernel rounds a tensor's last elements (past the vector width) its own way, so a weight's step would
    depend on where it sits in the tensor (its seed's or the stacked one), and a seed stepping alone would not give
    the numbers of a stacked step."""
    for optimizer in optimizers:
        if optimizer.defaults.get("fused"):
            for settings in (optimizer.defaults, *optimizer.param_groups):
                settings.update(fused=False, foreach=True)


class NoSteps:
    """An optimizer whose seeds always step alone."""

    def step(self) -> bool:
        return False

    def release(self) -> None:
        pass

    def alone(self) -> None:
        pass


def group_settings(group: dict[str, object]) -> dict[str, object]:
    """A parameter group's settings, comparable (a tensor learning rate as its value)."""
    return {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in group.items() if k != "params"}


def same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    return a == b


@dataclass
class Member:
    """A seed in the group: its trainer, RNG, where its current epoch stands, and its result once it ended."""

    trainer: Trainer
    rng: RngSlot
    on_batch: Callable[[int, int], None] | None
    on_epoch: Callable[[dict[str, float]], None] | None
    place: int  # its row in the stacked tensors
    result: FitResult | None = None
    position: EpochPosition | None = None
    lr: float = 0.0
    started: float = 0.0

    @property
    def next_epoch(self) -> int:
        return len(self.trainer.history) + 1


class FusedGroup:
    """The seeds of one trial training as one model: `fit()` returns each seed's FitResult, in order."""

    def __init__(self, trainers: list[Trainer], rngs: list[RngSlot],
                 on_batch: list[Callable[[int, int], None] | None],
                 on_epoch: list[Callable[[dict[str, float]], None] | None]) -> None:
        self.members = [Member(t, r, b, e, k) for k, (t, r, b, e) in
                        enumerate(zip(trainers, rngs, on_batch, on_epoch, strict=True))]
        lead = trainers[0]
        self.config, self.device = lead.config, lead.device
        self.speed = replace(lead.speed, channels_last=False)  # vmap cannot tell a channels-last layout
        self.template, self.feed = shared_module(lead.model)
        self.params, self.buffers = self._stack([t.model for t in trainers])
        self.views = [[(p, self.params[n]) for n, p in t.model.named_parameters()] for t in trainers]
        self.steps = StackedSteps.of(list(self.params.values()), [t.optimizer for t in trainers])
        self.shapes: dict[tuple[int, ...], list[MaskShape]] = {}
        self.kept: tuple[list[int], dict[str, torch.Tensor]] = ([], {})
        self.vmapped_loss = True  # False once PyTorch could not vmap the loss (weighted and label-smoothed CE)
        self.totals = torch.zeros(len(trainers), dtype=torch.float64, device=self.device)  # the epoch's running sums:
        self.corrects = torch.zeros(len(trainers), dtype=torch.int64, device=self.device)  # their positions' views

    def _stack(self, models: list[nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Stacked weights and buffers; each model's own tensors become views of them (optimizers, EMA and
        checkpoints keep working on the models)."""
        params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_()
                  for n, _ in models[0].named_parameters()}
        buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in models]) for n, _ in models[0].named_buffers()}
        for k, model in enumerate(models):
            for name, param in model.named_parameters():
                param.data = params[name].data[k]
            for name in buffers:
                owner, _, attr = name.rpartition(".")
                model.get_submodule(owner)._buffers[attr] = buffers[name][k]
        for trainer in (m.trainer for m in self.members):
            trainer.shares_weights = True
        return params, buffers

    # -------------------------------------------------------------- the loop

    def fit(self, train: Split, val: Split) -> list[FitResult]:
        with stop_between_batches():
            while True:
                self._end_finished()  # a seed past its last epoch ends here, so the next epoch is always due
                waiting = [m for m in self.members if m.result is None]
                if not waiting:
                    break
                epoch = min(m.next_epoch for m in waiting)
                self._epoch(epoch, [m for m in waiting if m.next_epoch == epoch], train, val)
        return [m.result for m in self.members if m.result is not None]

    def _end_finished(self) -> None:
        """Members whose run has ended (every epoch done, or early stopping's rule met) write their final files."""
        for member in self.members:
            trainer = member.trainer
            if member.result is None and (member.next_epoch > self.config.training.epochs or trainer.stopped_early()):
                with member.rng.active():
                    member.result = trainer.end()

    def _epoch(self, epoch: int, members: list[Member], train: Split, val: Split) -> None:
        training = self.config.training
        batch_size = training.batch_size
        self.totals.zero_()
        self.corrects.zero_()
        for member in members:
            with member.rng.active():
                member.lr, member.started, member.position = member.trainer.epoch_start()
                if member.position is None:
                    order = balanced_order(train.labels) if training.sampler == "balanced" \
                        else epoch_permutation(len(train), self.device)
                    member.position = EpochPosition(order, 0, self.totals[member.place], self.corrects[member.place])
                else:  # resumed mid-epoch: its sums so far go on in the group's rows
                    member.position.order = member.position.order.to(self.device)  # gathered with the others'
                    self.totals[member.place] = member.position.total_loss
                    self.corrects[member.place] = member.position.correct
                    member.position.total_loss = self.totals[member.place]
                    member.position.correct = self.corrects[member.place]
        batches = steps_per_epoch(len(train), batch_size)
        first = min(m.position.batch for m in members if m.position is not None)
        for b in range(first, batches):
            active = [m for m in members if m.position is not None and m.position.batch <= b]
            self._step(active, b, batches, train)
            faults.point("batch")
            if b + 1 < batches and stop_requested():
                self.steps.release()
                for member in members:
                    with member.rng.active():
                        assert member.position is not None
                        cut = replace(member.position, total_loss=member.position.total_loss.clone(),
                                      correct=member.position.correct.clone())  # not views of the group's rows
                        member.trainer.save_cut(cut, member.lr, time.perf_counter() - member.started)
                raise take_stop() from None
        self.steps.release()
        due = members[0].trainer.checkpoints.due(epoch)
        for member in members:
            position = member.position
            assert position is not None
            seen = min(len(train), batches * batch_size)
            with member.rng.active():
                member.result = member.trainer.end_epoch(
                    epoch, member.lr, member.started, float(position.total_loss) / seen, int(position.correct) / seen,
                    val, member.on_epoch, due)
            member.position = None

    def _step(self, active: list[Member], b: int, batches: int, train: Split) -> None:
        """One optimizer step of every active seed: its own batch, augmentation and masks; one shared pass, one loss
        (vmapped), and, when every seed of the group steps, one optimizer step over the stacked weights."""
        rows = [m.place for m in active]
        with self.speed.autocast():
            inputs, labels, mixes, masks = self._batches(active, b, train)
            logits = self._shared_pass(rows, inputs, masks).float()
        losses = self._losses(rows, logits, labels, mixes)
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if grads:  # kept, not set to None: a fresh gradient in the weights' layout would be a copy anyway
            torch._foreach_zero_(grads)
        losses.sum().backward()
        self._put_back()
        together = len(active) == len(self.members) and self.steps.step()
        if not together:
            self.steps.alone()
            for member in active:
                self._step_alone(member)
        self._count(rows, losses, logits, labels)
        for member in active:
            self._after_step(member, b, batches)

    def _batches(self, active: list[Member], b: int, train: Split) -> tuple[
            torch.Tensor, torch.Tensor, list[tuple[torch.Tensor | None, float]], list[torch.Tensor]]:
        """Every place's batch, labels and dropout masks, stacked (a waiting seed's place: zeros in, no dropout), each
        active seed's drawn from its own RNG in the order its unfused run draws them; and its mixing (perm, lam).
        Without augmentation or mixing, which draw, the seeds' images are gathered and scaled at once."""
        batch_size, size = self.config.training.batch_size, len(self.members)
        indices = [m.position.order[b * batch_size:(b + 1) * batch_size] for m in active if m.position is not None]
        together = all(m.trainer.augment is None and m.trainer.mixing is None for m in active)
        gathered = self.speed.inputs(train.images[torch.stack(indices)]) if together else None
        direct = gathered is not None and len(active) == size  # every place's batch is the gathered one
        inputs: torch.Tensor | None = gathered if direct else None
        labels: torch.Tensor | None = train.labels[torch.stack(indices)] if direct else None
        masks: list[torch.Tensor] = []
        shapes: list[MaskShape] = []
        mixes: list[tuple[torch.Tensor | None, float]] = []
        for j, (member, index) in enumerate(zip(active, indices, strict=True)):
            trainer = member.trainer
            perm, lam = None, 1.0
            with member.rng.active():
                if gathered is not None:
                    x = gathered[j]
                else:
                    x = self.speed.inputs(train.images[index])
                    x = trainer.augment(x) if trainer.augment is not None else x
                    if trainer.mixing is not None:
                        x, perm, lam = trainer.mixing(x)
                if not shapes:
                    shapes = self._mask_shapes(x)
                    masks = [torch.empty((size, *s.shape), device=self.device) for s in shapes]
                for mask, shape in zip(masks, shapes, strict=True):
                    draw_mask(mask[member.place], shape)
            if inputs is None or labels is None:
                inputs = x.new_zeros((size, *x.shape))
                labels = train.labels.new_zeros((size, len(index)))
            if not direct:
                inputs[member.place] = x
                labels[member.place] = train.labels[index]
            mixes.append((perm, lam))
        assert inputs is not None and labels is not None  # active is never empty
        waiting = [k for k in range(size) if k not in {m.place for m in active}]
        for mask, shape in zip(masks, shapes, strict=True):
            mask.div_(1 - shape.p)
            if waiting:
                mask[waiting] = 1.0
        return inputs, labels, mixes, masks

    def _losses(self, rows: list[int], logits: torch.Tensor, labels: torch.Tensor,
                mixes: list[tuple[torch.Tensor | None, float]]) -> torch.Tensor:
        """The active seeds' losses: one vmapped loss over every place (each seed's at its own place, so its sums
        run the same way whichever seeds train), or, with mixup/cutmix, each seed's own."""
        task = self.members[0].trainer.task
        weighted = task.class_weights is not None
        if self.vmapped_loss and all(perm is None for perm, _ in mixes):
            try:
                every = vmap(lambda y, t: task.loss(y, t, weighted=weighted, smoothed=True))(logits, labels)
                # every place active: no indexing with a list (on a GPU, a copy of it to the card that waits for
                # every queued kernel, once a step)
                return every if len(rows) == len(self.members) else every[rows]
            except RuntimeError:  # PyTorch has no batching rule for this loss: each seed's on its own from now on
                self.vmapped_loss = False
        losses = []
        for row, (perm, lam) in zip(rows, mixes, strict=True):
            loss = task.loss(logits[row], labels[row], weighted=weighted, smoothed=True)
            if perm is not None:
                loss = lam * loss + (1 - lam) * task.loss(logits[row], labels[row][perm], weighted=weighted,
                                                          smoothed=True)
            losses.append(loss)
        return torch.stack(losses)

    def _step_alone(self, member: Member) -> None:
        """The seed's own optimizer step, on its views of the stacked gradients (some seed of the group waits)."""
        for param, stacked in self.views[member.place]:
            param.grad = stacked.grad[member.place] if stacked.grad is not None else None
        member.trainer.optimizer.step()

    def _count(self, rows: list[int], losses: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """The epoch's running loss and correct decisions, in the group's rows (the members' positions view them)."""
        task = self.members[0].trainer.task
        with torch.no_grad():
            loss_sums = losses.double() * labels.shape[1]
            decisions = task.decisions(logits.flatten(0, 1)).view(labels.shape)
            correct = (decisions == labels).sum(dim=1)
            if len(rows) == len(self.members):
                self.totals += loss_sums
                self.corrects += correct
            else:
                for k, row in enumerate(rows):
                    self.totals[row] += loss_sums[k]
                    self.corrects[row] += correct[row]

    def _after_step(self, member: Member, b: int, batches: int) -> None:
        trainer, position = member.trainer, member.position
        assert position is not None
        if trainer.ema is not None:
            trainer.ema.update_parameters(trainer.model)
        if trainer.per_batch and trainer.scheduler is not None:
            trainer.scheduler.step()
        position.batch = b + 1
        if member.on_batch is not None:
            member.on_batch(b + 1, batches)

    def _mask_shapes(self, x: torch.Tensor) -> list[MaskShape]:
        key = tuple(x.shape)
        if key not in self.shapes:
            self.shapes[key] = mask_shapes(self.members[0].trainer.model, x)
        return self.shapes[key]

    def _shared_pass(self, rows: list[int], inputs: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
        """The logits of every place from one vmap over the stacked weights (rows: the active seeds' places). A seed
        that waits (behind or ahead after a resume) or has ended keeps its place, its BatchNorm statistics put back
        after the pass: each seed's sums then run at the same place in the same batched kernels whichever seeds
        train, so a resumed group gives the numbers of an uninterrupted one."""
        waiting = [k for k in range(len(self.members)) if k not in rows]
        kept = {n: b[waiting].clone() for n, b in self.buffers.items()} if waiting else {}

        def one(p: dict[str, torch.Tensor], bufs: dict[str, torch.Tensor], images: torch.Tensor,
                layer_masks: list[torch.Tensor]) -> torch.Tensor:
            self.feed[:] = list(layer_masks)
            return functional_call(self.template, (p, bufs), (images,))

        self.template.train()
        logits = vmap(one, randomness="error")(self.params, self.buffers, inputs, masks)
        self.kept = (waiting, kept)  # put back after the backward pass, which still reads them
        return logits

    def _put_back(self) -> None:
        """The waiting seeds' BatchNorm statistics as they were before the shared pass."""
        waiting, kept = self.kept
        with torch.no_grad():
            for name, value in kept.items():
                self.buffers[name][waiting] = value
        self.kept = ([], {})
