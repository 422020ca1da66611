"""Fit one trial: a training loop you can read top to bottom, with per-epoch history and resume.

It knows nothing about studies: it gets a trial config, a seed, tensors and a folder. After every
epoch it writes history.csv, and last.pt (model, optimizer, scheduler and RNG state) when
training.checkpoint_every says so, atomically; a kill at any moment loses at most the epochs since the
last checkpoint, and a resumed run replays them and continues number for number as if it had never
stopped. SIGTERM and SIGINT (with errors.on_signal installed, as the CLI does) stop training after the batch
in progress, with a last.pt of that very step, so the rerun goes on from that batch. The best epoch's
weights are kept in memory, and best.pt is written with last.pt and at the end.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

from medablate.config.schema import PLATEAU, TrialConfig, flatten, to_plain
from medablate.core import faults
from medablate.errors import UserError, stop_between_batches, stop_requested, take_stop
from medablate.models import (
    build_model,
    input_shape,
    is_convolutional,
    network,
    set_dataset_statistics,
)
from medablate.models.weights import load_weights
from medablate.scoring.clinical import epoch_metrics
from medablate.train.augment import Mixing, make_mixing
from medablate.train.checkpointing import CheckpointPolicy, epochs_without_improvement
from medablate.train.optim import build_optimizer, build_scheduler
from medablate.train.tasks import Task
from medablate.train.tracking import TensorBoardLog

CHECKPOINT_FORMAT = 1


@dataclass
class Split:
    """uint8 images (N, C, H, W) and int64 labels, already on the training device."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_numpy(cls, images: np.ndarray, labels: np.ndarray, device: torch.device) -> Split:
        return cls(torch.from_numpy(np.ascontiguousarray(images)).to(device),
                   torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    count: int
    probabilities: np.ndarray | None = None  # (N, classes), with keep_predictions
    decisions: np.ndarray | None = None  # (N,), with keep_predictions


@dataclass
class FitResult:
    status: str  # done | diverged
    history: list[dict[str, float]]
    best: dict[str, Any]
    diverged_epoch: int | None = None
    resumed_from_epoch: int = 0
    stopped_early_epoch: int | None = None  # training.early_stopping ended the run after this epoch
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device is cuda, but this machine has no CUDA GPU visible to torch: "
                        "use training.device: auto (or cpu).")
    return torch.device(name)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """The cores this process may use (cgroup/affinity aware where the platform says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure_threads(requested: int | None = None) -> tuple[int, str]:
    """Torch's intra-op threads and where the number came from: `requested` (--threads), else what the user set
    with OMP_NUM_THREADS / MKL_NUM_THREADS (torch already follows it), else one per core this process may use
    (cgroup/affinity aware). A machine shared with other work should be given --threads or OMP_NUM_THREADS."""
    if requested is not None:
        torch.set_num_threads(requested)
        return requested, "--threads"
    for variable in THREAD_VARIABLES:
        if os.environ.get(variable, "").strip():
            return torch.get_num_threads(), variable
    available = usable_cores()
    if torch.get_num_threads() != available:
        torch.set_num_threads(available)
    return available, "usable cores"


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 batch -> float32 in [0, 1]; done per batch so the data stays uint8 in memory."""
    return images.float().div_(255)


PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Speed:
    """The speed switches as no-op seams: autocast or nullcontext, channels-last or not (nanoGPT's way)."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    channels_last: bool = False

    def autocast(self) -> AbstractContextManager[Any]:
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float in [0, 1], in the model's memory format."""
        x = normalise(images)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on the device, in the memory format of its inputs (on a CPU in channels-last, with its narrow
        strided 1x1 convolutions run as subsample_pointwise says)."""
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.channels_last and self.device.type == "cpu":
            subsample_pointwise(model)
        return model.to(self.device).to(memory_format=memory)  # type: ignore[call-overload]

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


FP32 = Speed()
NARROW = 16  # oneDNN's input-channel block with AVX-512 (8 with AVX2): a narrower strided 1x1 conv is subsampled


def subsample_pointwise(model: torch.nn.Module) -> None:
    """Run each strided 1x1 convolution with fewer than NARROW input channels (a residual skip of a small CNN) as
    what it computes: every s-th pixel, then a stride-1 1x1 convolution. The same parameters, state dict and
    numbers, another kernel: oneDNN's channels-last weight gradient of such a convolution writes past its
    workspace (oneDNN issue #6035, open; the torch 2.13 CPU wheel), which crashed training here with heap
    corruption whenever a batch had an odd size from 3 up on 2 threads, and which gives wrong weight gradients
    with no error on other CPUs. Idempotent: a convolution done once has stride 1."""
    for conv in model.modules():
        if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1) and conv.padding == (0, 0) \
                and conv.stride != (1, 1) and conv.in_channels < NARROW:
            conv.register_forward_pre_hook(partial(_every, tuple(conv.stride)))
            conv.stride = (1, 1)


def _every(step: tuple[int, ...], conv: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (args[0][..., ::step[0], ::step[1]], *args[1:])


def speed_of(config: TrialConfig, device: torch.device) -> Speed:
    training = config.training
    channels_last = training.channels_last == "on" or (
        training.channels_last == "auto" and is_convolutional(config.model))
    return Speed(device, training.precision, channels_last)


def balanced_order(labels: torch.Tensor) -> torch.Tensor:
    """len(labels) draws with replacement, each class equally likely (global RNG, so seeded and resumable)."""
    counts = torch.bincount(labels.cpu())
    weights = (1.0 / counts.double())[labels.cpu()]
    return torch.multinomial(weights, len(labels), replacement=True).to(labels.device)


def epoch_permutation(n: int, device: torch.device) -> torch.Tensor:
    """The batch order DataLoader(shuffle=True) would draw from the global RNG, so seeds match the course loop."""
    torch.empty((), dtype=torch.int64).random_()  # DataLoader's iterator draws a base seed first
    generator = torch.Generator()
    generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
    return torch.randperm(n, generator=generator).to(device)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, task: Task, data: Split, batch_size: int,
             keep_predictions: bool = False, speed: Speed = FP32) -> Evaluation:
    """Loss, accuracy and confusion matrix over data (and per-image predictions when asked), in eval mode."""
    model.eval()
    probabilities, decisions = [], []
    total_loss = torch.zeros((), dtype=torch.float64, device=data.labels.device)
    confusion = torch.zeros((task.num_classes, task.num_classes), dtype=torch.int64, device=data.labels.device)
    for start in range(0, len(data), batch_size):
        with speed.autocast():
            logits = model(speed.inputs(data.images[start:start + batch_size])).float()
        labels = data.labels[start:start + batch_size]
        # batch mean x batch size, as the usual loop sums it: same numbers as the course notebook to the bit
        total_loss += task.loss(logits, labels).double() * len(labels)
        decided = task.decisions(logits)
        # added in place: bincount on a GPU reads its input's maximum back, a wait for the card at every batch
        confusion.view(-1).scatter_add_(0, labels * task.num_classes + decided, torch.ones_like(labels))
        if keep_predictions:
            probabilities.append(task.probabilities(logits.double()).cpu())
            decisions.append(decided.cpu())
    matrix = confusion.cpu()
    correct = int(matrix.diagonal().sum())
    result = Evaluation(float(total_loss) / len(data), correct / len(data), matrix.tolist(), len(data))
    if keep_predictions:
        result.probabilities = torch.cat(probabilities).numpy()
        result.decisions = torch.cat(decisions).numpy()
    return result


def run_now(job: Callable[[], None]) -> None:
    job()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


@dataclass
class EpochPosition:
    """Where an epoch stood after a batch: its batch order, the batches done and the running sums."""

    order: torch.Tensor
    batch: int
    total_loss: torch.Tensor
    correct: torch.Tensor

    def as_state(self) -> dict[str, Any]:
        return {"order": self.order, "batch": self.batch, "total_loss": self.total_loss, "correct": self.correct}


class EpochCut(Exception):
    """Training stopped after a batch (SIGTERM / SIGINT); where it stood, for a checkpoint of that step."""

    def __init__(self, position: EpochPosition) -> None:
        super().__init__(f"stopped after batch {position.batch}")
        self.position = position


def train_one_epoch(model: torch.nn.Module, task: Task, optimizer: torch.optim.Optimizer,
                    scheduler: Any, step_scheduler_per_batch: bool, data: Split, batch_size: int,
                    on_batch: Callable[[int, int], None] | None = None, balanced: bool = False,
                    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    position: EpochPosition | None = None, stop: Callable[[], bool] | None = None,
                    speed: Speed = FP32, scaler: torch.amp.GradScaler | None = None,
                    mixing: Mixing | None = None, after_step: Callable[[], None] | None = None) -> tuple[float, float]:
    """One pass over the training data; returns (mean loss, accuracy) over the epoch's samples. From `position`
    when given (a resumed epoch); raises EpochCut after a batch when stop() says so."""
    model.train()
    device = data.labels.device
    if position is None:
        order = balanced_order(data.labels) if balanced else epoch_permutation(len(data), device)
        position = EpochPosition(order, 0, torch.zeros((), dtype=torch.float64, device=device),
                                 torch.zeros((), dtype=torch.int64, device=device))
    order, total_loss, correct = position.order.to(device), position.total_loss.to(device), position.correct.to(device)
    batches = steps_per_epoch(len(data), batch_size)
    seen = min(len(data), batches * batch_size)
    for b in range(position.batch, batches):
        index = order[b * batch_size:(b + 1) * batch_size]
        labels = data.labels[index]
        images = speed.inputs(data.images[index])
        perm, lam = None, 1.0
        with speed.autocast():
            inputs = augment(images) if augment is not None else images
            if mixing is not None:
                inputs, perm, lam = mixing(inputs)
            logits = model(inputs).float()
        loss = task.loss(logits, labels, weighted=task.class_weights is not None, smoothed=True)
        if perm is not None:  # mixup / cutmix: the loss against both images' labels, weighted as their pixels
            loss = lam * loss + (1 - lam) * task.loss(logits, labels[perm], weighted=task.class_weights is not None,
                                                      smoothed=True)
        optimizer.zero_grad(set_to_none=False)  # keep gradient buffers: no 128 MiB allocation per step
        if scaler is not None and scaler.is_enabled():  # fp16: scaled loss, steps skipped on inf/NaN gradients
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if after_step is not None:  # training.ema: the average follows every step
            after_step()
        if step_scheduler_per_batch and scheduler is not None:
            scheduler.step()
        total_loss += loss.detach().double() * len(index)
        correct += (task.decisions(logits.detach()) == labels).sum()
        if on_batch is not None:
            on_batch(b + 1, batches)
        faults.point("batch")
        if stop is not None and b + 1 < batches and stop():
            raise EpochCut(EpochPosition(order, b + 1, total_loss, correct))
    return float(total_loss) / seen, int(correct) / seen


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Optimizer steps per epoch. A trailing batch of one image is left out (a different image each epoch,
    as the order is shuffled): BatchNorm cannot train on a single sample."""
    batches = math.ceil(count / batch_size)
    return batches - 1 if count % batch_size == 1 and batches > 1 else batches


def flatten_config(config: TrialConfig) -> dict[str, Any]:
    return flatten(to_plain(config))


def checkpoint_meta(config: TrialConfig, task: Task, shape: tuple[int, ...], class_names: list[str]) -> dict[str, Any]:
    """What a checkpoint needs to rebuild its model and score it with the right rule. image_shape is (C, H, W);
    checkpoints from before the channel axis recorded (H, W) (see models.input_shape)."""
    return {"format": CHECKPOINT_FORMAT, "loss": task.loss_name, "num_outputs": task.num_outputs,
            "num_classes": task.num_classes, "class_names": list(class_names), "image_shape": list(shape),
            "model": to_plain(config.model), "normalize": config.normalize, "tta": config.tta}


def build_trial_model(config: TrialConfig, shape: tuple[int, ...], num_outputs: int) -> torch.nn.Module:
    """The trial's model as checkpoints store it (standardisation and test-time augmentation included)."""
    return build_model(config.model, shape, num_outputs, config.normalize, config.tta)


def channel_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and SD per channel of uint8 (N, C, H, W) images, in 0..1 units (data.normalize: dataset)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    square = torch.zeros_like(total)
    for start in range(0, len(images), 512):
        x = images[start:start + 512].double().div_(255)
        total += x.sum(dim=(0, 2, 3))
        square += x.square().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    return mean.float(), (square / count - mean.square()).clamp_min(0).sqrt().float()


Tensors = tuple[torch.Tensor, ...] | list[torch.Tensor]


def ema_with_warmup(decay: float) -> Callable[[Tensors, Tensors, torch.Tensor | int], None]:
    """torch's EMA update with TensorFlow's warm-up (`ExponentialMovingAverage(num_updates=...)`, timm's
    `ModelEmaV3(use_warmup=True)` in spirit): the n-th update uses min(decay, (1 + n) / (10 + n)). Without it the
    average keeps the random initial weights' share decay ** n for thousands of steps (at 0.999: 56% after 5 epochs
    of the recipe, whose EMA model then called every image pneumonia), and early stopping judged that. n is
    AveragedModel's n_averaged, saved in the checkpoint, so a resumed run continues the same ramp."""

    def update(averaged: Tensors, current: Tensors, n_averaged: torch.Tensor | int) -> None:
        n = float(n_averaged)  # HostCountedAverage gives the host's count: no wait for the card
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(averaged, current, n_averaged)

    return update


class HostCountedAverage(AveragedModel):
    """torch's AveragedModel (use_buffers=True) with its count of updates mirrored on the host. AveragedModel's own
    update compares n_averaged, a tensor on the model's device, twice a step, and each comparison waits for the card
    to finish every kernel queued so far; this one reads the count back once (after a load). The same arithmetic, in
    the same groups: the same numbers to the bit, and the same state_dict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count: int | None = None  # n_averaged on the host, read back at the first update after a load

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self.count = None
        return super().load_state_dict(state_dict, strict, assign)

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        assert self.use_buffers and self.multi_avg_fn is not None  # how Trainer builds it
        if self.count is None:
            self.count = int(self.n_averaged)
        averaged = [a.detach() for a in itertools.chain(self.module.parameters(), self.module.buffers())]
        current = [c.detach().to(a.device) for a, c in
                   zip(averaged, itertools.chain(model.parameters(), model.buffers()), strict=True)]
        if self.count == 0:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)
        else:
            pairs = cast(list[list[torch.Tensor | None]], [averaged, current])
            for (_, _), ([ours, theirs], _) in _group_tensors_by_device_and_dtype(pairs).items():
                self.multi_avg_fn(ours, theirs, self.count)  # type: ignore[arg-type]
        self.n_averaged += 1
        self.count += 1


class Trainer:
    """Owns the model, optimizer and scheduler of one trial and seed; its checkpoints' policy owns their files."""

    def __init__(self, config: TrialConfig, task: Task, seed: int, image_shape: tuple[int, ...],
                 class_names: list[str], run_dir: Path, device: torch.device, steps_per_epoch: int) -> None:
        self.config, self.task, self.seed, self.run_dir, self.device = config, task, seed, Path(run_dir), device
        self.notes: list[str] = []  # what resume had to repair and what the weights file held, for the runner
        torch.manual_seed(seed)  # drives initialisation, batch order and dropout
        shape = input_shape(image_shape)
        model = build_trial_model(config, shape, task.num_outputs)
        if config.model.weights is not None:
            self.notes.append(load_weights(network(model), config.model.weights).summary())
        self.speed = speed_of(config, device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        self.model = self.speed.place(model)  # the raw module
        # what trains and evaluates; checkpoints store the raw module's keys (no _orig_mod. prefix)
        self.forward: torch.nn.Module = torch.compile(self.model) if config.training.compile else self.model  # type: ignore[assignment]
        self.scaler = self.speed.scaler()
        ema = config.training.ema  # the average of the weights: what validation scores and the run keeps
        self.ema = HostCountedAverage(self.model, multi_avg_fn=ema_with_warmup(ema.decay), use_buffers=True) \
            if ema is not None else None
        self.scored: torch.nn.Module = self.ema.module if self.ema is not None else self.forward
        self.optimizer = build_optimizer(config.training.optimizer, self.model.parameters())
        self.scheduler = build_scheduler(config.training.scheduler, self.optimizer, config.training.epochs,
                                         steps_per_epoch, config.training.monitor)
        self.per_batch = config.training.scheduler is not None and config.training.scheduler.interval == "step"
        self.on_metric = config.training.scheduler is not None and config.training.scheduler.name == PLATEAU
        self.meta = checkpoint_meta(config, task, shape, class_names)
        self.history: list[dict[str, float]] = []
        training = config.training
        self.checkpoints = CheckpointPolicy(self.run_dir, training.monitor, training.checkpoint_every,
                                            training.keep_checkpoints, device)
        self.augment: Callable[[torch.Tensor], torch.Tensor] | None = None  # set by the runner from data.augment
        self.mixing = make_mixing(training.mixup, training.cutmix)
        self.best_val: Evaluation | None = None  # the best epoch's validation predictions (None after a resume)
        self.cut: dict[str, Any] | None = None  # where SIGTERM/SIGINT stopped the epoch in last.pt, to go on from
        self.writer: Callable[[Callable[[], None]], Any] = run_now  # runs the final writes (the runner: a thread)
        self.pending: Any = None  # what writer returned for them (a Future, or None when already written)
        self.start = 0  # the epochs done before this process took the run over (resume)
        self.log: TensorBoardLog | None = None  # training.tensorboard's writer, from begin()
        self.shares_weights = False  # a fused group's member: its tensors are views of the group's stacked ones

    # -------------------------------------------------------------- checkpoints

    @property
    def best(self) -> dict[str, Any]:
        return self.checkpoints.best

    def _rng_state(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _ema_step(self) -> None:
        assert self.ema is not None  # called only with training.ema
        self.ema.update_parameters(self.model)

    def _weights(self) -> dict[str, Any]:
        """The weights the run keeps as its model: the EMA's with training.ema, else the trained ones."""
        return (self.ema.module if self.ema is not None else self.model).state_dict()

    def _last_state(self) -> dict[str, Any]:
        model, optimizer = self.model.state_dict(), self.optimizer.state_dict()
        if self.shares_weights:  # a view saves its whole storage (every seed of the group), which the others change
            model = {k: v.clone() for k, v in model.items()}
            optimizer["state"] = {i: {k: v.clone() if isinstance(v, torch.Tensor) and v._base is not None else v
                                      for k, v in state.items()} for i, state in optimizer["state"].items()}
        return {"meta": self.meta, "epoch": len(self.history), "model": model, "optimizer": optimizer,
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "rng": self._rng_state(), "history": list(self.history), "best": self.checkpoints.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def resume(self) -> int:
        """Load the last good checkpoint if there is one; return the number of epochs already done."""
        try:
            return self._resume()
        finally:
            self.notes += self.checkpoints.notes
            self.checkpoints.notes = []

    def _resume(self) -> int:
        state = self.checkpoints.last_good_state()
        if state is None:
            return 0
        self.checkpoints.load_state_dict(state["best"])
        if not self.checkpoints.restore_best():
            return 0
        self.history = list(state["history"])
        if "model" in state:
            self.model.load_state_dict(state["model"])
        if state.get("finished"):
            self.write_history()
            return int(state["epoch"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.write_history()  # a kill between a checkpoint and its history row must not lose the row
        self.cut = state.get("cut")  # stopped mid-epoch by SIGTERM/SIGINT: the epoch goes on from that batch
        return int(state["epoch"])

    # -------------------------------------------------------------- the loop

    def fit(self, train: Split, val: Split, on_batch: Callable[[int, int], None] | None = None,
            on_epoch: Callable[[dict[str, float]], None] | None = None) -> FitResult:
        start = self.begin(train)
        with stop_between_batches():
            return self._epochs(start, train, val, on_batch, on_epoch)

    def begin(self, train: Split) -> int:
        """What comes before the first epoch (the training split's class weights and statistics, then resume); the
        number of epochs already done."""
        training = self.config.training
        if training.class_weights == "balanced":
            self.task = self.task.with_balanced_weights(train.labels)
        if training.label_smoothing:
            self.task = replace(self.task, label_smoothing=training.label_smoothing)
        if self.config.normalize == "dataset":
            set_dataset_statistics(self.model, *channel_statistics(train.images))
        self.start = self.resume()
        self.checkpoints.saved_at = time.monotonic()
        self.log = TensorBoardLog(self.run_dir, flatten_config(self.config)) if training.tensorboard else None
        return self.start

    def _epochs(self, start: int, train: Split, val: Split, on_batch: Callable[[int, int], None] | None,
                on_epoch: Callable[[dict[str, float]], None] | None) -> FitResult:
        training = self.config.training
        for epoch in range(start + 1, training.epochs + 1):
            if self.stopped_early():  # decided by the history alone, so a resumed run stops where it stopped
                break
            lr, started, position = self.epoch_start()
            try:
                train_loss, train_acc = train_one_epoch(
                    self.forward, self.task, self.optimizer, self.scheduler, self.per_batch, train, training.batch_size,
                    on_batch, balanced=training.sampler == "balanced", augment=self.augment, position=position,
                    mixing=self.mixing,
                    after_step=self._ema_step if self.ema is not None else None,
                    stop=stop_requested, speed=self.speed, scaler=self.scaler)
            except EpochCut as stopped:
                self.save_cut(stopped.position, lr, time.perf_counter() - started)
                raise take_stop() from None
            diverged = self.end_epoch(epoch, lr, started, train_loss, train_acc, val, on_epoch)
            if diverged is not None:
                return diverged
        return self.end()

    def epoch_start(self) -> tuple[float, float, EpochPosition | None]:
        """An epoch's learning rate, start time and, when SIGTERM stopped it in last.pt, where it goes on from."""
        cut, self.cut = self.cut, None
        started = time.perf_counter() - (cut["seconds"] if cut else 0.0)
        lr = cut["lr"] if cut else current_lr(self.optimizer)
        position = EpochPosition(**{k: cut[k] for k in ("order", "batch", "total_loss", "correct")}) if cut else None
        return lr, started, position

    def end_epoch(self, epoch: int, lr: float, started: float, train_loss: float, train_acc: float, val: Split,
                  on_epoch: Callable[[dict[str, float]], None] | None, due: bool | None = None) -> FitResult | None:
        """After an epoch's training: the epoch's scheduler step, validation, the history row, the best epoch and the
        checkpoint (`due`: when a fused group decides it for all its seeds); a FitResult when the run diverged."""
        training = self.config.training
        if self.scheduler is not None and not self.per_batch and not self.on_metric:
            self.scheduler.step()
        val_eval = evaluate(self.scored, self.task, val, training.eval_batch_size, keep_predictions=True,
                            speed=self.speed)
        # Iterating a validation DataLoader draws one seed from the global RNG; draw it too, so that a
        # seed gives the same batches and dropout masks as the course's DataLoader loop.
        torch.empty((), dtype=torch.int64).random_()
        assert val_eval.probabilities is not None and val_eval.decisions is not None  # keep_predictions
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
               "val_loss": val_eval.loss, "val_acc": val_eval.accuracy,
               **epoch_metrics(val.labels.cpu().numpy(), val_eval.probabilities, val_eval.decisions),
               "seconds": round(time.perf_counter() - started, 3)}
        if not all(math.isfinite(row[k]) for k in ("train_loss", "val_loss")):
            self.history.append(row)
            self.checkpoints.save_best(self.meta)
            self.write_history()
            return FitResult("diverged", self.history, self.best, diverged_epoch=epoch, resumed_from_epoch=self.start)
        self.history.append(row)
        if self.scheduler is not None and self.on_metric:  # ReduceLROnPlateau, before the epoch's checkpoint
            self.scheduler.step(row[training.monitor])  # type: ignore[arg-type]
        if self.checkpoints.update(row, self._weights):
            self.best_val = val_eval
        if self.checkpoints.checkpoint(epoch, self.meta, self._last_state, due):
            faults.point("after-checkpoint")
        self.write_history()
        if self.log is not None:
            self.log.epoch(row)
        if on_epoch is not None:
            on_epoch(row)
        return None

    def end(self) -> FitResult:
        """The run trained every epoch (or stopped early): its final files, and its result."""
        if self.log is not None:
            self.log.close({"best_val_loss": self.best.get("val_loss"), "best_val_acc": self.best.get("best_val_acc")})
        self.finish()
        early = int(self.history[-1]["epoch"]) if self.stopped_early() else None
        return FitResult("done", self.history, self.best, resumed_from_epoch=self.start, stopped_early_epoch=early)

    def stopped_early(self) -> bool:
        """training.early_stopping: whether the history so far ends with `patience` epochs without an improvement."""
        rule = self.config.training.early_stopping
        if rule is None or len(self.history) >= self.config.training.epochs:
            return False
        monitor = rule.monitor or self.config.training.monitor
        values = [row[monitor] for row in self.history]
        return epochs_without_improvement(values, monitor, rule.min_delta) >= rule.patience

    def save_cut(self, position: EpochPosition, lr: float, seconds: float) -> None:
        """last.pt of the step where SIGTERM/SIGINT stopped training (after best.pt, as always)."""
        cut = position.as_state() | {"lr": lr, "seconds": seconds}
        self.checkpoints.save_last(self.meta, self._last_state() | {"cut": cut})

    def finish(self) -> None:
        """A finished run needs no optimizer state nor, by default, its final weights: last.pt keeps the history and
        the best epoch (training.keep_checkpoints: best; last keeps the final weights too, all the optimizer state
        as well), and the spare slot files go, so a finished 256 px course-MLP run holds about 130 MiB (best.pt)
        instead of about 1 GiB. The files are written by self.writer (a background thread, so the next run starts
        at once) from copies of the weights."""
        faults.point("finish")
        state = self.checkpoints.final_state(self._last_state())
        self.pending = self.writer(lambda: self.checkpoints.write_final(self.meta, state))

    def write_history(self) -> None:
        self.checkpoints.write_history(self.history)

    def load_best(self) -> int:
        """The best epoch's weights into the model (from memory; best.pt only when memory has none)."""
        weights, epoch = self.checkpoints.best_model()
        self.model.load_state_dict(weights)
        return epoch

    def has_best(self) -> bool:
        return self.checkpoints.has_best()
