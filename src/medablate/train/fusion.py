"""Fused seeds: the seeds of one trial train together as one model on one device (training.fuse_seeds).

Every seed keeps its own Trainer: its model, optimizer, scheduler, EMA, checkpoints, history and run folder, so
every file looks as if the seeds had trained one by one. Only the forward and backward pass are shared: the
seeds' weights are stacked (each model's tensors become views of the stacked ones) and one `torch.func.vmap` over
`functional_call` runs all seeds' batches at once (PyTorch's model-ensembling recipe), so a small network pays for
its kernel launches once instead of once per seed. BatchNorm's running statistics are stacked too and updated in
place under vmap, per seed.

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
from medablate.core import faults
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
    """Dropout masks from the global RNG, as F.dropout draws them on a CPU."""
    masks = []
    for s in shapes:
        memory = torch.channels_last if s.channels_last else torch.contiguous_format
        masks.append(torch.empty(s.shape, device=device, memory_format=memory).bernoulli_(1 - s.p).div_(1 - s.p))
    return masks


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


@dataclass
class Member:
    """A seed in the group: its trainer, RNG, where its current epoch stands, and its result once it ended."""

    trainer: Trainer
    rng: RngSlot
    on_batch: Callable[[int, int], None] | None
    on_epoch: Callable[[dict[str, float]], None] | None
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
        self.members = [Member(t, r, b, e) for t, r, b, e in zip(trainers, rngs, on_batch, on_epoch, strict=True)]
        lead = trainers[0]
        self.config, self.device = lead.config, lead.device
        self.speed = replace(lead.speed, channels_last=False)  # vmap cannot tell a channels-last layout
        self.template, self.feed = shared_module(lead.model)
        self.params, self.buffers = self._stack([t.model for t in trainers])
        self.shapes: dict[tuple[int, ...], list[MaskShape]] = {}
        self.kept: tuple[list[int], dict[str, torch.Tensor]] = ([], {})

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
        for member in members:
            with member.rng.active():
                member.lr, member.started, member.position = member.trainer.epoch_start()
                if member.position is None:
                    order = balanced_order(train.labels) if training.sampler == "balanced" \
                        else epoch_permutation(len(train), self.device)
                    zero = torch.zeros((), dtype=torch.float64, device=self.device)
                    member.position = EpochPosition(order, 0, zero, torch.zeros((), dtype=torch.int64,
                                                                                device=self.device))
        batches = steps_per_epoch(len(train), batch_size)
        first = min(m.position.batch for m in members if m.position is not None)
        for b in range(first, batches):
            active = [m for m in members if m.position is not None and m.position.batch <= b]
            self._step(active, b, batches, train)
            faults.point("batch")
            if b + 1 < batches and stop_requested():
                for member in members:
                    with member.rng.active():
                        assert member.position is not None
                        member.trainer.save_cut(member.position, member.lr, time.perf_counter() - member.started)
                raise take_stop() from None
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
        """One optimizer step of every active seed: its own batch, augmentation and masks; one shared pass."""
        batch_size = self.config.training.batch_size
        inputs, labels, mixes, masks = [], [], [], []
        with self.speed.autocast():
            for member in active:
                trainer, position = member.trainer, member.position
                assert position is not None
                with member.rng.active():
                    index = position.order[b * batch_size:(b + 1) * batch_size]
                    x = self.speed.inputs(train.images[index])
                    x = trainer.augment(x) if trainer.augment is not None else x
                    perm, lam = None, 1.0
                    if trainer.mixing is not None:
                        x, perm, lam = trainer.mixing(x)
                    masks.append(draw_masks(self._mask_shapes(x), self.device))
                inputs.append(x)
                labels.append(train.labels[index])
                mixes.append((perm, lam))
            logits = self._shared_pass([self.members.index(m) for m in active], inputs, masks).float()
        losses = []
        for k, member in enumerate(active):
            task, (perm, lam) = member.trainer.task, mixes[k]
            loss = task.loss(logits[k], labels[k], weighted=task.class_weights is not None, smoothed=True)
            if perm is not None:
                loss = lam * loss + (1 - lam) * task.loss(logits[k], labels[k][perm],
                                                          weighted=task.class_weights is not None, smoothed=True)
            losses.append(loss)
        for grad in (p.grad for p in self.params.values() if p.grad is not None):
            grad.zero_()  # kept, not set to None: a fresh gradient in the weights' layout would be a copy anyway
        torch.stack(losses).sum().backward()
        self._put_back()
        for k, member in enumerate(active):
            self._step_member(member, losses[k], logits[k], labels[k], b, batches)

    def _step_member(self, member: Member, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                     b: int, batches: int) -> None:
        trainer, position = member.trainer, member.position
        assert position is not None
        k = self.members.index(member)
        for name, param in trainer.model.named_parameters():
            grad = self.params[name].grad
            param.grad = grad[k] if grad is not None else None
        trainer.optimizer.step()
        if trainer.ema is not None:
            trainer.ema.update_parameters(trainer.model)
        if trainer.per_batch and trainer.scheduler is not None:
            trainer.scheduler.step()
        position.total_loss += loss.detach().double() * len(labels)
        position.correct += (trainer.task.decisions(logits.detach()) == labels).sum()
        position.batch = b + 1
        if member.on_batch is not None:
            member.on_batch(b + 1, batches)

    def _mask_shapes(self, x: torch.Tensor) -> list[MaskShape]:
        key = tuple(x.shape)
        if key not in self.shapes:
            self.shapes[key] = mask_shapes(self.members[0].trainer.model, x)
        return self.shapes[key]

    def _shared_pass(self, rows: list[int], x: list[torch.Tensor], masks: list[list[torch.Tensor]]) -> torch.Tensor:
        """The logits of every seed from one vmap over the stacked weights (rows: the active seeds' places, x and
        masks theirs). A seed that waits (behind or ahead after a resume) or has ended keeps its place with zeros
        in, no dropout and its BatchNorm statistics put back: each seed's sums then run at the same place in the same
        batched kernels whichever seeds train, so a resumed group gives the numbers of an uninterrupted one."""
        size = len(self.members)
        waiting = [k for k in range(size) if k not in rows]
        inputs = [torch.zeros_like(x[0])] * size
        drawn = [[torch.ones_like(m) for m in masks[0]]] * size
        for row, images, mask in zip(rows, x, masks, strict=True):
            inputs[row], drawn[row] = images, mask
        kept = {n: b[waiting].clone() for n, b in self.buffers.items()} if waiting else {}
        stacked = [torch.stack(layer) for layer in zip(*drawn, strict=True)]

        def one(p: dict[str, torch.Tensor], bufs: dict[str, torch.Tensor], images: torch.Tensor,
                layer_masks: list[torch.Tensor]) -> torch.Tensor:
            self.feed[:] = list(layer_masks)
            return functional_call(self.template, (p, bufs), (images,))

        self.template.train()
        logits = vmap(one, randomness="error")(self.params, self.buffers, torch.stack(inputs), stacked)
        self.kept = (waiting, kept)  # put back after the backward pass, which still reads them
        return logits[rows]

    def _put_back(self) -> None:
        """The waiting seeds' BatchNorm statistics as they were before the shared pass."""
        waiting, kept = self.kept
        with torch.no_grad():
            for name, value in kept.items():
                self.buffers[name][waiting] = value
        self.kept = ([], {})
