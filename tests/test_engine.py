from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from medablate.config.schema import TrialConfig
from medablate.data.sources import phantom
from medablate.train.engine import Split, Trainer, epoch_permutation, evaluate
from medablate.train.tasks import make_task

CPU = torch.device("cpu")


def tiny_config(**training) -> TrialConfig:  # type: ignore[no-untyped-def]
    return TrialConfig.model_validate({"model": {"hidden": [16], "dropout": [0.2]},
                                       "training": {"epochs": 4, "batch_size": 8, "checkpoint_every": "epoch",
                                                    **training}})


def splits(size: int = 16) -> tuple[Split, Split]:
    data = phantom.generate(24, size, 0)
    train = np.arange(len(data)) % 4 != 0
    return (Split.from_numpy(data.images[train], data.labels[train], CPU),
            Split.from_numpy(data.images[~train], data.labels[~train], CPU))


def trainer(folder: Path, config: TrialConfig, loss: str = "BCEWithLogitsLoss", seed: int = 0) -> Trainer:
    size = side(config.model.model_dump())
    return Trainer(config, make_task(loss, 2), seed, (size, size), ["normal", "pneumonia"], folder, CPU, 5)


def side(model: dict) -> int:
    """The image size a model family's tests use: DenseNet's five halvings need 32 pixels, the others 16."""
    return 32 if model.get("name") == "densenet121" else 16


def test_batch_order_matches_a_shuffled_dataloader() -> None:
    loader = DataLoader(TensorDataset(torch.arange(50)), batch_size=50, shuffle=True)
    torch.manual_seed(3)
    expected = [next(iter(loader))[0].tolist() for _ in range(3)]
    torch.manual_seed(3)
    assert [epoch_permutation(50, CPU).tolist() for _ in range(3)] == expected


def test_history_columns_and_files(tmp_path: Path) -> None:
    train, val = splits()
    fit = trainer(tmp_path, tiny_config()).fit(train, val)
    assert fit.status == "done" and len(fit.history) == 4
    assert list(fit.history[0]) == ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc",
                                    "val_balanced_acc", "val_sensitivity", "val_specificity", "seconds"]
    for name in ("history.csv", "best.pt", "last.pt"):
        assert (tmp_path / name).exists()
    assert fit.best["epoch"] == min(fit.history, key=lambda r: r["val_loss"])["epoch"]
    assert fit.best["best_val_acc"] == max(r["val_acc"] for r in fit.history)  # the engine keeps both
    assert fit.best["val_acc"] == fit.history[fit.best["epoch"] - 1]["val_acc"]


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path: Path) -> None:
    train, val = splits()
    a = trainer(tmp_path / "a", tiny_config()).fit(train, val).history
    b = trainer(tmp_path / "b", tiny_config()).fit(train, val).history
    c = trainer(tmp_path / "c", tiny_config(), seed=1).fit(train, val).history
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a) == strip(b) and strip(a) != strip(c)


class _Stop(Exception):
    """Stands in for a kill between epochs."""


def _stop_after(epochs: int):  # type: ignore[no-untyped-def]
    def on_epoch(row: dict) -> None:
        if row["epoch"] >= epochs:
            raise _Stop
    return on_epoch


def test_resume_continues_number_for_number(tmp_path: Path) -> None:
    train, val = splits()
    full = trainer(tmp_path / "full", tiny_config(epochs=5)).fit(train, val).history
    with pytest.raises(_Stop):
        trainer(tmp_path / "cut", tiny_config(epochs=5)).fit(train, val, on_epoch=_stop_after(2))
    torch.manual_seed(123)  # whatever the process did in between must not matter
    fit = trainer(tmp_path / "cut", tiny_config(epochs=5)).fit(train, val)
    assert fit.resumed_from_epoch == 2
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(fit.history) == strip(full)


def test_a_truncated_last_pt_resumes_from_the_older_slot_number_for_number(tmp_path: Path) -> None:
    """The engine's part of test_resume's whole-study test (-m slow): a last.pt cut short is a note, and the run
    goes on from the previous checkpoint with the numbers of an uninterrupted run."""
    train, val = splits()
    full = trainer(tmp_path / "full", tiny_config(epochs=5)).fit(train, val).history
    with pytest.raises(_Stop):
        trainer(tmp_path / "cut", tiny_config(epochs=5)).fit(train, val, on_epoch=_stop_after(3))
    target = (tmp_path / "cut" / "last.pt").resolve()
    target.write_bytes(target.read_bytes()[:1000])
    resumed = trainer(tmp_path / "cut", tiny_config(epochs=5))
    fit = resumed.fit(train, val)
    assert fit.resumed_from_epoch == 2 and any("previous checkpoint" in note for note in resumed.notes)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(fit.history) == strip(full)


def test_nan_loss_ends_the_trial_as_diverged(tmp_path: Path) -> None:
    train, val = splits()
    config = tiny_config(optimizer={"name": "SGD", "lr": 1e30}, scheduler=None)
    fit = trainer(tmp_path, config, loss="CrossEntropyLoss").fit(train, val)
    assert fit.status == "diverged" and fit.diverged_epoch is not None
    assert len(fit.history) == fit.diverged_epoch


def test_evaluate_counts_a_confusion_matrix() -> None:
    _, val = splits()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2))
    result = evaluate(model, make_task("CrossEntropyLoss", 2), val, batch_size=4)
    assert sum(map(sum, result.confusion)) == len(val) == result.count
    assert result.accuracy == (result.confusion[0][0] + result.confusion[1][1]) / len(val)


def test_bce_and_ce_checkpoints_have_their_head(tmp_path: Path) -> None:
    train, val = splits()
    for loss, width in (("BCEWithLogitsLoss", 1), ("CrossEntropyLoss", 2)):
        trainer(tmp_path / loss, tiny_config(epochs=1), loss=loss).fit(train, val)
        state = torch.load(tmp_path / loss / "best.pt", weights_only=True)
        assert state["meta"]["num_outputs"] == width and state["meta"]["loss"] == loss
        head = [v for k, v in state["model"].items() if k.endswith("weight")][-1]
        assert head.shape[0] == width


def test_balanced_sampler_draws_classes_equally_and_is_seeded() -> None:
    from medablate.train.engine import balanced_order

    labels = torch.tensor([0] * 900 + [1] * 100)
    torch.manual_seed(0)
    order = balanced_order(labels)
    assert len(order) == 1000 and 0.4 < labels[order].float().mean() < 0.6
    torch.manual_seed(0)
    assert torch.equal(order, balanced_order(labels))


def test_class_weights_and_sampler_train_and_resume(tmp_path: Path) -> None:
    train, val = splits()
    config = tiny_config(epochs=3, class_weights="balanced", sampler="balanced")
    full = trainer(tmp_path / "full", config).fit(train, val).history
    with pytest.raises(_Stop):
        trainer(tmp_path / "cut", config).fit(train, val, on_epoch=_stop_after(1))
    resumed = trainer(tmp_path / "cut", config).fit(train, val).history
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed) == strip(full)


def test_a_finished_run_keeps_weights_only_and_no_spare_slots(tmp_path: Path) -> None:
    train, val = splits()
    fit = trainer(tmp_path, tiny_config(epochs=2)).fit(train, val)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in names if not n.startswith(".")] == ["best.pt", "history.csv", "last.pt"]
    assert len([n for n in names if n.startswith(".last.")]) == 1 and len([n for n in names if n.startswith(".best.")]) == 1
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["finished"] and "optimizer" not in state and state["epoch"] == 2
    again = trainer(tmp_path, tiny_config(epochs=2)).fit(train, val)  # a finished run is not retrained
    assert again.history == fit.history


def test_a_trailing_single_image_batch_is_left_out_so_batchnorm_trains(tmp_path: Path) -> None:
    from medablate.train.engine import steps_per_epoch

    assert steps_per_epoch(17, 8) == 2 and steps_per_epoch(16, 8) == 2 and steps_per_epoch(18, 8) == 3
    assert steps_per_epoch(1, 8) == 1
    data = phantom.generate(9, 16, 0)  # 18 images; 17 for training leaves one over with batch 8
    train = Split.from_numpy(data.images[:17], data.labels[:17], CPU)
    val = Split.from_numpy(data.images[17:], data.labels[17:], CPU)
    fit = trainer(tmp_path, TrialConfig.model_validate({"model": {"hidden": [8], "dropout": [0.1]},
                                                         "training": {"epochs": 1, "batch_size": 8}})).fit(train, val)
    assert fit.status == "done"


def test_early_stopping_counts_epochs_without_an_improvement_beyond_min_delta() -> None:
    from medablate.train.checkpointing import epochs_without_improvement

    assert epochs_without_improvement([0.9, 0.8, 0.85, 0.82], "val_loss", 0.0) == 2
    assert epochs_without_improvement([0.9, 0.8, 0.79], "val_loss", 0.05) == 1  # 0.79 is within min_delta of 0.8
    assert epochs_without_improvement([0.6, 0.7, 0.7, 0.65], "val_auc", 0.0) == 2
    assert epochs_without_improvement([float("nan"), 0.7], "val_auc", 0.0) == 0
    assert epochs_without_improvement([], "val_loss", 0.0) == 0


def assert_same_history(resumed: list[dict], full: list[dict], model: dict) -> None:
    """The MLP: number for number. Convolutions on the CPU with several threads round differently from run to run,
    resumed or not (1e-6; more when another process competes for the cores, as under pytest-xdist: one CI run saw an
    uninterrupted first epoch differ by 6e-5), which can flip a rank among 8 validation images: their losses agree
    to 5e-4."""
    if "name" not in model:
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed] == \
            [{k: v for k, v in r.items() if k != "seconds"} for r in full]
        return
    keys = ("epoch", "lr", "train_loss", "val_loss")
    assert [{k: pytest.approx(r[k], rel=5e-4) for k in keys} for r in resumed] == [{k: r[k] for k in keys} for r in full]


FAMILIES = [pytest.param({"hidden": [16], "dropout": [0.2]}, id="mlp"),
            pytest.param({"name": "cnn", "widths": [4, 8], "blocks": [1, 1]}, id="cnn"),
            pytest.param({"name": "resnet18"}, id="monai-resnet18", marks=pytest.mark.slow),  # 11 M parameters: 40 s
            pytest.param({"name": "densenet121", "kwargs": {"init_features": 8, "growth_rate": 4, "dropout_prob": 0.1}},
                         id="monai-densenet121", marks=pytest.mark.slow)]


@pytest.mark.parametrize("model", FAMILIES)
def test_plateau_scheduler_and_early_stopping_stop_and_resume_number_for_number(tmp_path: Path, model: dict) -> None:
    """ReduceLROnPlateau steps on the monitored metric after validation; early stopping ends the run once patience
    epochs bring no improvement; a run stopped between epochs and resumed gives the same history (MLP and CNN)."""
    train, val = splits(side(model))
    config = TrialConfig.model_validate({
        "model": model, "training": {
            "epochs": 12, "batch_size": 8, "checkpoint_every": "epoch", "monitor": "val_acc",
            "scheduler": {"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.5},
            "early_stopping": {"patience": 2}}})
    full = trainer(tmp_path / "full", config).fit(train, val)
    accuracy = [r["val_acc"] for r in full.history]
    assert full.status == "done" and full.stopped_early_epoch == len(full.history) < 12  # it stopped early ...
    best = accuracy.index(max(accuracy))
    assert len(full.history) == best + 3  # ... two epochs after the last improvement
    lrs = [r["lr"] for r in full.history]
    for epoch in range(1, len(lrs)):  # patience 0: the rate halves after every epoch that does not improve
        improved = accuracy[epoch - 1] > max(accuracy[:epoch - 1], default=-1.0)
        assert lrs[epoch] == pytest.approx(lrs[epoch - 1] * (1.0 if improved else 0.5))
    with pytest.raises(_Stop):
        trainer(tmp_path / "cut", config).fit(train, val, on_epoch=_stop_after(best + 2))  # stopped before the end
    resumed = trainer(tmp_path / "cut", config).fit(train, val)
    assert resumed.stopped_early_epoch == full.stopped_early_epoch
    assert_same_history(resumed.history, full.history, model)


def test_mixup_blends_and_cutmix_pastes_a_box_whose_area_is_one_minus_lambda() -> None:
    from medablate.train.augment import make_mixing

    assert make_mixing(0.0, 0.0) is None
    images = torch.rand(6, 1, 16, 16)
    torch.manual_seed(0)
    mixed, perm, lam = make_mixing(0.4, 0.0)(images)  # type: ignore[misc]
    assert 0 <= lam <= 1 and sorted(perm.tolist()) == list(range(6))
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[perm])
    torch.manual_seed(1)
    cut, perm, lam = make_mixing(0.0, 1.0)(images)  # type: ignore[misc]
    from_other = (cut == images[perm]) & (cut != images)
    assert torch.equal(cut[~from_other], images[~from_other])  # outside the box: the image itself
    assert from_other[0, 0].float().mean() == pytest.approx(1 - lam, abs=1 / 256)  # the box: 1 - lambda of the area
    torch.manual_seed(1)
    again, _, _ = make_mixing(0.0, 1.0)(images)  # type: ignore[misc]
    assert torch.equal(again, cut)  # torch's generator: seeded, checkpointed


@pytest.mark.parametrize("model", FAMILIES)
def test_mixup_and_cutmix_train_and_resume_number_for_number(tmp_path: Path, model: dict) -> None:
    """With label smoothing on the mixed targets, every family; a run stopped between epochs resumes exactly."""
    train, val = splits(side(model))
    config = TrialConfig.model_validate({"model": model, "training": {
        "epochs": 4, "batch_size": 8, "checkpoint_every": "epoch", "mixup": 0.4, "cutmix": 1.0, "label_smoothing": 0.1}})
    plain = TrialConfig.model_validate({"model": model, "training": {"epochs": 4, "batch_size": 8,
                                                                     "label_smoothing": 0.1}})
    full = trainer(tmp_path / "full", config).fit(train, val).history
    unmixed = trainer(tmp_path / "plain", plain).fit(train, val).history
    assert [r["train_loss"] for r in full] != [r["train_loss"] for r in unmixed]  # it does mix
    with pytest.raises(_Stop):
        trainer(tmp_path / "cut", config).fit(train, val, on_epoch=_stop_after(2))
    resumed = trainer(tmp_path / "cut", config).fit(train, val).history
    assert_same_history(resumed, full, model)


@pytest.mark.parametrize("model", FAMILIES)
def test_weight_ema_is_what_validation_scores_and_best_pt_keeps_and_it_resumes(tmp_path: Path, model: dict) -> None:
    train, val = splits(side(model))
    settings = {"epochs": 4, "batch_size": 8, "checkpoint_every": "epoch"}
    config = TrialConfig.model_validate({"model": model, "training": {**settings, "ema": {"decay": 0.9}}})
    plain = TrialConfig.model_validate({"model": model, "training": settings})
    run = trainer(tmp_path / "full", config)
    full = run.fit(train, val).history
    unaveraged = trainer(tmp_path / "plain", plain).fit(train, val).history
    close = (lambda a, b: a == b) if "name" not in model else (lambda a, b: a == pytest.approx(b, rel=5e-4))
    assert all(close(a["train_loss"], b["train_loss"]) for a, b in zip(full, unaveraged, strict=True))  # same training
    assert [r["val_loss"] for r in full] != [r["val_loss"] for r in unaveraged]  # validation scores the average
    epoch = run.load_best()  # best.pt's weights are the average's of that epoch: they score its history row
    rescored = evaluate(run.model, run.task, val, batch_size=256)
    assert rescored.loss == pytest.approx(full[epoch - 1]["val_loss"], rel=1e-5)
    with pytest.raises(_Stop):
        trainer(tmp_path / "cut", config).fit(train, val, on_epoch=_stop_after(2))
    resumed = trainer(tmp_path / "cut", config).fit(train, val).history
    assert_same_history(resumed, full, model)


def test_the_weight_average_warms_up_then_keeps_its_decay() -> None:
    """The n-th EMA update moves the average by 1 - min(decay, (1 + n) / (10 + n)) of the way to the weights: 0.82
    at the first update after the copy, then less, down to 1 - decay."""
    from medablate.train.engine import ema_with_warmup

    update = ema_with_warmup(0.99)
    for n, share in ((1, 1 - 2 / 11), (50, 1 - 51 / 60), (5000, 0.01)):
        averaged, current = [torch.zeros(3)], [torch.ones(3)]
        update(averaged, current, torch.tensor(n))
        assert averaged[0].tolist() == pytest.approx([share] * 3)


def test_the_host_counted_average_is_torchs_averaged_model_to_the_bit() -> None:
    """HostCountedAverage keeps its count on the host (no wait for a GPU at each step): every update, the copy at
    the first, the warm-up, BatchNorm's integer buffer and a resume from its state_dict give AveragedModel's numbers."""
    import copy

    from torch.optim.swa_utils import AveragedModel

    from medablate.train.engine import HostCountedAverage, ema_with_warmup

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.LazyLinear(2))
    model(torch.rand(2, 1, 6, 6))
    theirs = AveragedModel(model, multi_avg_fn=ema_with_warmup(0.9), use_buffers=True)
    ours = HostCountedAverage(model, multi_avg_fn=ema_with_warmup(0.9), use_buffers=True)
    for step in range(12):
        model(torch.rand(8, 1, 6, 6))  # BatchNorm's running statistics and its num_batches_tracked move
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        theirs.update_parameters(model)
        ours.update_parameters(model)
        if step == 2:
            saved = copy.deepcopy(theirs.state_dict())
        if step == 5:  # a resume: a fresh average loaded from the saved one reads the count back
            ours = HostCountedAverage(model, multi_avg_fn=ema_with_warmup(0.9), use_buffers=True)
            ours.load_state_dict(theirs.state_dict())
        if step == 8:  # one loaded over its own updates (back to step 2's count) counts from there
            theirs.load_state_dict(saved)
            ours.load_state_dict(saved)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        for key, value in theirs.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), (step, key)
    assert int(ours.n_averaged) == 3 + 3 and ours.count == 6


@pytest.mark.parametrize("model", FAMILIES[:2])
def test_a_training_step_makes_the_device_wait_for_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           model: dict) -> None:
    """The recipe's settings (EMA, a per-step schedule, balanced class weights, label smoothing, AdamW, its
    augmentation but the blur, whose read is left on purpose): between the first step of a run and its epoch's last,
    nothing is read back from the device nor copied to it from the host (on a GPU, each waits for every queued
    kernel; conftest.DeviceWaits). The running sums are read once an epoch, after its last step; the EMA its count
    once a run."""
    from conftest import DeviceWaits
    from medablate.train import engine
    from medablate.train.augment import make_augment

    watch = DeviceWaits(monkeypatch)
    epoch = engine.train_one_epoch

    def watched(*args: Any, **kwargs: Any) -> tuple[float, float]:
        watch.begin()
        on_batch = args[7]  # train_one_epoch(model, task, optimizer, scheduler, per_batch, data, size, on_batch...)

        def stepped(b: int, batches: int) -> None:
            watch.stepped(more=b < batches)
            if on_batch is not None:
                on_batch(b, batches)
        return epoch(*args[:7], stepped, *args[8:], **kwargs)
    monkeypatch.setattr(engine, "train_one_epoch", watched)
    config = TrialConfig.model_validate({
        "model": model,
        "augment": {"rotate": 7, "translate": 0.04, "crop_scale": [0.7, 1.0], "brightness": 0.15, "contrast": 0.3,
                    "gamma": 0.3, "noise": 0.02},
        "training": {"epochs": 2, "batch_size": 8, "loss": "CrossEntropyLoss", "class_weights": "balanced",
                     "optimizer": {"name": "AdamW", "lr": 2e-3, "weight_decay": 1e-4}, "label_smoothing": 0.1,
                     "scheduler": {"name": "CosineAnnealingLR", "interval": "step"}, "ema": {"decay": 0.999}}})
    train, val = splits(side(model))
    run = trainer(tmp_path, config, loss="CrossEntropyLoss")
    run.augment = make_augment(config.augment)  # as the runner sets it from data.augment
    run.fit(train, val)
    assert watch.done > 2
    assert watch.after_the_first_step() == []
    # in the first step: the EMA reads its count (the watch sees it), and the class weights are copied to the
    # device once per process (tasks.on_device keeps them)
    assert [where for _, where in watch.waits if "__int__" in where] and len(watch.waits) <= 2, watch.waits


def test_a_small_cnn_trains_in_channels_last_on_two_cpu_threads_with_odd_batches() -> None:
    """oneDNN's channels-last weight gradient of a strided 1x1 convolution narrower than its channel block (the cnn's
    residual skip at widths [8, 16]) corrupted the heap here on 2 threads for odd batch sizes (oneDNN #6035): the
    training process died. Speed.place runs such a convolution as a subsample and a stride-1 convolution, which
    computes the same outputs and gradients as the model in contiguous memory."""
    import subprocess
    import sys

    code = """
import torch
from medablate.config.schema import TrialConfig
from medablate.train.engine import Speed, build_trial_model
torch.set_num_threads(2)
torch.manual_seed(0)
config = TrialConfig.model_validate({"model": {"name": "cnn", "widths": [8, 16], "blocks": [1, 1]}})
plain = build_trial_model(config, (1, 32, 32), 1)
fast = build_trial_model(config, (1, 32, 32), 1)
fast.load_state_dict(plain.state_dict())
speed = Speed(torch.device("cpu"), "fp32", channels_last=True)
fast = speed.place(fast)
plain.eval(), fast.eval()  # no dropout masks to tell apart; the gradients are still taken
assert sorted(fast.state_dict()) == sorted(plain.state_dict())
for n in (13, 7, 3, 33):
    x = torch.rand(n, 1, 32, 32)
    for model, images in ((plain, x), (fast, x.contiguous(memory_format=torch.channels_last))):
        model.zero_grad()
        model(images).sum().backward()
    grads = [(a.grad - b.grad).abs().max() / b.grad.abs().max() for a, b in zip(fast.parameters(), plain.parameters())]
    assert max(grads) < 1e-4, (n, max(grads))
print("trained")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "trained" in result.stdout, (result.returncode, result.stderr[-2000:])
