"""Fused seeds (issue 20): the seeds of a trial trained as one vmapped model give each seed the numbers of its own
unfused run, to float rounding, for every model family; a fused group stopped anywhere and resumed gives the files
of an uninterrupted fused run.

The tolerance: a fused pass computes the same sums as the unfused one in another order (batched matrix products,
grouped convolutions), so a loss differs in its last float32 bits, and Adam's step (about lr per weight whatever
the gradient's size) lets such a difference grow a little each step. Over these short runs every training and
validation loss of a fused seed stays within 2e-3 of its unfused run (measured: below 2e-4 for the MLP and CNN); a
different seed's loss differs by far more. Resumed fused runs are compared exactly (the MLP) or to 5e-4 (networks
with convolutions, whose CPU sums depend on threads)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import DeviceWaits, medablate, write_study
from medablate.config.schema import TrialConfig
from medablate.train.augment import make_augment
from medablate.train.engine import FitResult, Split, Trainer
from medablate.train.fusion import (
    ELEMENTWISE_OPTIMIZERS,
    FusedGroup,
    RngSlot,
    StackedSteps,
    mask_shapes,
    plain_kernels,
    unfusable,
)
from medablate.train.optim import build_optimizer
from medablate.train.tasks import make_task
from test_engine import CPU, _Stop, _stop_after, splits
from test_resume import command
from test_study import read_csv, without_seconds

TOLERANCE = 2e-3
SEEDS = (0, 1, 2)
# MONAI's deep networks on 32 px images, with BatchNorm over batches of 8 (and 4) images reduced to 1 x 1, are
# chaotic: their first-step gradients agree to 3e-5 (relative), but that grows to loss differences of 0.03 within
# three steps at Adam 1e-3, 0.005 at 1e-5 and at SGD 1e-2, fused or not (as between two thread counts). Their
# comparison runs at lr 0: the shared pass, the dropout masks and the BatchNorm statistics over three epochs, every
# loss within 1e-6. Their resume is compared at lr 1e-4 (a resumed fused run repeats the very same sums).
FAMILIES = [pytest.param({"hidden": [16], "dropout": [0.2]}, 16, 1e-3, id="mlp"),
            pytest.param({"name": "cnn", "widths": [4, 8], "blocks": [1, 1]}, 16, 1e-3, id="cnn"),
            pytest.param({"name": "resnet18"}, 32, 0.0, id="monai-resnet18", marks=pytest.mark.slow),
            pytest.param({"name": "densenet121", "kwargs": {"dropout_prob": 0.2}}, 32, 0.0, id="monai-densenet121",
                         marks=pytest.mark.slow)]


def sized_splits(size: int) -> tuple[Split, Split]:
    if size == 16:
        return splits()
    from medablate.data.sources import phantom

    data = phantom.generate(24, size, 0)
    keep = torch.arange(len(data)) % 4 != 0
    return (Split.from_numpy(data.images[keep.numpy()], data.labels[keep.numpy()], CPU),
            Split.from_numpy(data.images[~keep.numpy()], data.labels[~keep.numpy()], CPU))


def config_of(model: dict, **training: object) -> TrialConfig:
    return TrialConfig.model_validate({"model": model, "training": {
        "epochs": 3, "batch_size": 8, "checkpoint_every": "epoch", "fuse_seeds": "on", **training}})


def fused(folder: Path, config: TrialConfig, train: Split, val: Split, size: int = 16,
          stop_member: int | None = None, stop_after: int = 0,
          on_batch: Callable[[int, int], None] | None = None) -> list[FitResult]:
    """The seeds trained as one fused group, each in folder/seed<N>; stop_member's on_epoch raises _Stop after
    stop_after epochs (a kill between epochs, the other seeds not yet through theirs); on_batch: the first seed's."""
    trainers, rngs = [], []
    for seed in SEEDS:
        t = seed_trainer(folder / f"seed{seed}", config, seed, size)
        t.augment = make_augment(config.augment)  # as the runner sets it from data.augment
        t.begin(train)
        trainers.append(t)
        rngs.append(RngSlot(CPU))
    on_epoch = [(_stop_after(stop_after) if k == stop_member else None) for k in range(len(SEEDS))]
    return FusedGroup(trainers, rngs, [on_batch] + [None] * (len(SEEDS) - 1), on_epoch).fit(train, val)


def seed_trainer(folder: Path, config: TrialConfig, seed: int, size: int) -> Trainer:
    return Trainer(config, make_task("BCEWithLogitsLoss", 2), seed, (size, size), ["normal", "pneumonia"], folder,
                   CPU, 3)


def losses(history: list[dict]) -> list[float]:
    return [v for row in history for v in (row["train_loss"], row["val_loss"])]


@pytest.mark.parametrize(("model", "size", "lr"), FAMILIES)
def test_each_fused_seed_follows_its_unfused_run(tmp_path: Path, model: dict, size: int, lr: float) -> None:
    train, val = sized_splits(size)
    config = config_of(model, optimizer={"name": "Adam", "lr": lr}, scheduler=None if lr == 0 else "CosineAnnealingLR")
    assert unfusable(config, (1, size, size), 1) is None
    together = fused(tmp_path / "fused", config, train, val, size)
    for seed, fit in zip(SEEDS, together, strict=True):
        alone = seed_trainer(tmp_path / f"alone{seed}", config, seed, size).fit(train, val)
        assert len(fit.history) == len(alone.history) == 3
        assert losses(fit.history) == pytest.approx(losses(alone.history), abs=1e-5 if lr == 0 else TOLERANCE)
    first, second = (losses(f.history) for f in together[:2])
    assert max(abs(a - b) for a, b in zip(first, second, strict=True)) > 10 * TOLERANCE  # seeds stay distinct


def test_dropout_masks_are_drawn_as_f_dropout_draws_them() -> None:
    from medablate.train.fusion import draw_masks

    x = torch.rand(8, 16)
    torch.manual_seed(5)
    expected = torch.nn.functional.dropout(x, 0.3, training=True)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Dropout(0.3))
    model[0].weight.data = torch.eye(16)
    model[0].bias.data.zero_()
    torch.manual_seed(5)
    (mask,) = draw_masks(mask_shapes(model, x), CPU)
    assert torch.equal(x * mask, expected)


@pytest.mark.parametrize(("model", "size", "lr"), FAMILIES)
def test_a_fused_group_stopped_between_its_seeds_checkpoints_resumes_identically(tmp_path: Path, model: dict,
                                                                                size: int, lr: float) -> None:
    """The first seed's epoch-2 checkpoint is written, the others' not: the rerun trains the two behind until they
    catch up, then all three together, and every history equals the uninterrupted fused run's."""
    train, val = sized_splits(size)
    config = config_of(model, epochs=4, ema={"decay": 0.9}, mixup=0.2, label_smoothing=0.1,
                       optimizer={"name": "Adam", "lr": lr or 1e-4})
    clean = fused(tmp_path / "clean", config, train, val, size)
    with pytest.raises(_Stop):
        fused(tmp_path / "cut", config, train, val, size, stop_member=0, stop_after=2)
    assert len(read_csv(tmp_path / "cut" / "seed0" / "history.csv")) == 2
    assert len(read_csv(tmp_path / "cut" / "seed1" / "history.csv")) == 1
    resumed = fused(tmp_path / "cut", config, train, val, size)
    for fit, full in zip(resumed, clean, strict=True):
        if model.get("name") != "mlp" and "hidden" not in model:  # a CPU convolution sums in a thread-dependent order
            assert losses(fit.history) == pytest.approx(losses(full.history), abs=5e-4)
        else:
            assert without_seconds(fit.history) == without_seconds(full.history)


def test_a_plain_fused_group_stopped_between_its_seeds_checkpoints_resumes_identically(tmp_path: Path) -> None:
    """Without mixup, the loss is one vmapped loss over every place and the group's steps one stacked step: a rerun
    whose seeds behind step alone (their losses at their own places) gives the uninterrupted run's numbers, exactly."""
    train, val = splits()
    config = config_of({"hidden": [16], "dropout": [0.2]}, epochs=4, label_smoothing=0.1,
                       scheduler="CosineAnnealingLR")
    clean = fused(tmp_path / "clean", config, train, val)
    with pytest.raises(_Stop):
        fused(tmp_path / "cut", config, train, val, stop_member=0, stop_after=2)
    resumed = fused(tmp_path / "cut", config, train, val)
    for fit, full in zip(resumed, clean, strict=True):
        assert without_seconds(fit.history) == without_seconds(full.history)


def test_a_fused_group_stopped_mid_epoch_by_sigterm_resumes_identically(tmp_path: Path) -> None:
    """SIGTERM after a batch of the second epoch: every seed's last.pt records where its epoch stood and its optimizer
    state, its own (not views of the group's stacked tensors, which a file would hold whole), and the rerun goes on
    from that batch to the uninterrupted run's numbers."""
    from medablate import errors
    from medablate.folder.checkpoint import load_checkpoint

    train, val = splits()
    config = config_of({"hidden": [16], "dropout": [0.2]}, scheduler="CosineAnnealingLR")
    clean = fused(tmp_path / "clean", config, train, val)
    calls: list[int] = []

    def on_batch(done: int, batches: int) -> None:
        calls.append(done)
        if len(calls) == batches + 2:  # epoch 2, batch 2: the signal arrives as the batch ends
            errors.on_signal(signal.SIGTERM, None)

    with pytest.raises(errors.Terminated):
        fused(tmp_path / "cut", config, train, val, on_batch=on_batch)
    for seed in SEEDS:
        last = load_checkpoint(tmp_path / "cut" / f"seed{seed}" / "last.pt")
        assert last["cut"]["batch"] == 2
        assert last["cut"]["total_loss"].untyped_storage().nbytes() == 8  # its own number, not the group's rows
        saved = [v for state in last["optimizer"]["state"].values() for v in state.values()]
        assert len(saved) > 4 and all(v.untyped_storage().nbytes() == v.nbytes for v in saved)  # nor views of its
    resumed = fused(tmp_path / "cut", config, train, val)
    for fit, full in zip(resumed, clean, strict=True):
        assert without_seconds(fit.history) == without_seconds(full.history)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE_OPTIMIZERS))
def test_stacked_steps_give_each_seed_its_own_steps_numbers(name: str) -> None:
    """One step over stacked weights equals each seed's own optimizer step, bit for bit, through every change of
    hands: stacked from fresh state, a seed's learning rate cut (each steps alone), rates equal again (stacked from
    the seeds' states), and the seeds' state dicts (what their checkpoints save) equal those of seeds alone. One
    weight never has a gradient (no state, in no seed)."""
    kwargs = {"SGD": {"momentum": 0.9, "weight_decay": 1e-2}, "RMSprop": {"momentum": 0.5}}.get(name, {})
    config = TrialConfig.model_validate({"training": {"optimizer": {"name": name, "lr": 0.05, **kwargs}}})
    torch.manual_seed(0)
    shapes = [(6, 4), (6,), (3, 2, 2), (2,)]
    start = [[torch.randn(s) for s in shapes] for _ in SEEDS]
    grads = [[[torch.randn(s) if i < 3 else None for i, s in enumerate(shapes)] for _ in SEEDS] for _ in range(6)]
    rates = [0.05, 0.05, "cut", "cut", 0.05, 0.05]  # "cut": the second seed's rate halved

    alone = [[torch.nn.Parameter(w.clone()) for w in ws] for ws in start]
    own = [build_optimizer(config.training.optimizer, ps) for ps in alone]
    plain_kernels(own)  # as a fused group's seeds step on a CPU
    stacked = [torch.stack([start[k][i] for k in range(len(SEEDS))]).requires_grad_() for i in range(len(shapes))]
    views = [[torch.nn.Parameter(torch.empty(0)) for _ in shapes] for _ in SEEDS]
    for k, ps in enumerate(views):
        for i, p in enumerate(ps):
            p.data = stacked[i].data[k]
    theirs = [build_optimizer(config.training.optimizer, ps) for ps in views]
    steps = StackedSteps.of(stacked, theirs)
    assert isinstance(steps, StackedSteps)
    for step, rate in enumerate(rates):
        for k in range(len(SEEDS)):
            lr = 0.025 if rate == "cut" and k == 1 else 0.05
            own[k].param_groups[0]["lr"] = theirs[k].param_groups[0]["lr"] = lr
            for i, p in enumerate(alone[k]):
                p.grad = grads[step][k][i]
            own[k].step()
        for i, s in enumerate(stacked[:3]):
            s.grad = torch.stack([grads[step][k][i] for k in range(len(SEEDS))])
        if steps.step():
            assert rate != "cut"
        else:
            assert rate == "cut"
            steps.alone()
            for k, ps in enumerate(views):
                for i, p in enumerate(ps[:3]):
                    p.grad = stacked[i].grad[k]
                theirs[k].step()
        if step % 2:  # a checkpoint: what the seeds' optimizers save
            steps.release()
            for k in range(len(SEEDS)):
                assert all(torch.equal(a, b) for a, b in zip(alone[k], views[k], strict=True))
                mine, reference = theirs[k].state_dict(), own[k].state_dict()
                assert mine["state"].keys() == reference["state"].keys()
                for i, state in reference["state"].items():
                    assert state.keys() == mine["state"][i].keys()
                    assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(mine["state"][i][key]))
                               for key, v in state.items()), (step, i, state, mine["state"][i])


@pytest.mark.parametrize(("training", "augment"), [
    pytest.param({}, {}, id="plain"),
    pytest.param({"ema": {"decay": 0.9}, "scheduler": {"name": "CosineAnnealingLR", "interval": "step"}},
                 {"rotate": 10, "translate": 0.1, "crop_scale": [0.7, 1.0], "flip": True, "contrast": 0.2,
                  "brightness": 0.1, "gamma": 0.2, "noise": 0.05}, id="ema-augment-per-step-schedule")])
def test_a_fused_step_makes_the_device_wait_for_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        training: dict, augment: dict) -> None:
    """On a GPU, reading a value back (item, float, bool, tolist, ...) or copying host data to the card (a tensor
    made from Python numbers, an index that is a Python list) waits for every queued kernel: once a step, it keeps
    the card idle while Python prepares the next (and, with workers side by side, while the others' kernels run).
    So a fused step does neither, but for the first of a fit (the EMA reads its count of updates once) and the
    optimizer's own step counters (conftest.DeviceWaits). The blur augmentation's read is left on purpose."""
    watch = DeviceWaits(monkeypatch)
    step = FusedGroup._step

    def watched(self: FusedGroup, *args: object) -> None:
        watch.begin()
        step(self, *args)  # type: ignore[arg-type]
        watch.stepped()
    monkeypatch.setattr(FusedGroup, "_step", watched)
    train, val = splits()
    config = config_of({"hidden": [16], "dropout": [0.2]}, epochs=2, **training)
    fused(tmp_path, TrialConfig.model_validate({**config.model_dump(), "augment": augment}), train, val)
    assert watch.done > 2
    assert watch.after_the_first_step() == []
    assert len(watch.waits) == (len(SEEDS) if "ema" in training else 0)  # the EMA's count, once a seed


def test_seeds_that_stop_early_leave_the_group_and_the_others_go_on(tmp_path: Path) -> None:
    train, val = splits()
    config = config_of({"hidden": [16], "dropout": [0.2]}, epochs=10, monitor="val_acc",
                       early_stopping={"patience": 1},
                       scheduler={"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.5})
    fits = fused(tmp_path, config, train, val)
    ends = [len(f.history) for f in fits]
    assert all(f.status == "done" for f in fits)
    assert all(f.stopped_early_epoch in (None, len(f.history)) for f in fits)
    assert len(set(ends)) > 1, ends  # the seeds stopped at different epochs: the group shrank and went on
    for seed, fit in zip(SEEDS, fits, strict=True):
        assert len(read_csv(tmp_path / f"seed{seed}" / "history.csv")) == len(fit.history)


def test_what_cannot_fuse_says_why() -> None:
    model = {"hidden": [16], "dropout": [0.2]}
    assert "compile" in (unfusable(config_of(model, compile=True), (1, 16, 16), 1) or "")
    assert "fp16" in (unfusable(config_of(model, precision="fp16"), (1, 16, 16), 1) or "")


@pytest.mark.slow  # three studies (24 s); the default suite resumes groups stopped between seeds in the engine
def test_a_sigkilled_fused_study_reruns_to_the_files_of_an_uninterrupted_one(tmp_path: Path) -> None:
    """A trial's 3 seeds, fused, killed after the second seed's first checkpoint (the group's seeds are then at
    different epochs), then rerun: results.csv and every history equal an uninterrupted fused study's."""
    study = write_study(tmp_path, seeds=list(SEEDS), comparisons=[], training={"epochs": 3, "fuse_seeds": "on"})
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert medablate("run", str(study), "--out", str(clean)).returncode == 0
    first = subprocess.run(command(study, killed), capture_output=True, text=True,
                           env={**os.environ, "MEDABLATE_KILL_AT": "after-checkpoint@2"})
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert len(list(killed.glob("trials/*/last.pt"))) == 2  # killed between its seeds' checkpoints
    rerun = medablate("run", str(study), "--out", str(killed))
    assert rerun.returncode == 0, rerun.stderr
    assert without_seconds(read_csv(killed / "results.csv")) == without_seconds(read_csv(clean / "results.csv"))
    runs = sorted(p.name for p in (clean / "trials").iterdir())
    assert len(runs) == 3
    for run in runs:
        assert (without_seconds(read_csv(killed / "trials" / run / "history.csv"))
                == without_seconds(read_csv(clean / "trials" / run / "history.csv")))


@pytest.mark.slow  # a study (19 s)
def test_a_group_whose_shared_pass_fails_trains_its_seeds_one_after_another(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer vmap cannot batch (MONAI's stochastic depth draws inside the forward, say) must not fail the study:
    the seeds train unfused, with a note (their numbers are then fuse_seeds: off's: the same code path)."""
    from medablate.train import fusion

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("vmap: called random operation while in randomness error mode")

    monkeypatch.setattr(fusion.FusedGroup, "_shared_pass", fails)
    study = write_study(tmp_path, seeds=[0, 1], comparisons=[], training={"epochs": 2, "fuse_seeds": "on"})
    result = medablate("run", str(study), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "could not train fused" in result.stdout + result.stderr
    for run in ("base-seed0", "base-seed1"):
        assert len(read_csv(tmp_path / "out" / "trials" / run / "history.csv")) == 2
        assert (tmp_path / "out" / "trials" / run / "metrics.json").exists()
