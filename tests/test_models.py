"""Issue 10: the model registry, starting weights, standardisation and test-time augmentation, Grad-CAM, the speed
switches, the shift augmentations, and an exact resume of a CNN trial after SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import write_study
from medablate.config.schema import AugmentConfig, TrialConfig, validate_study
from medablate.core.registry import MODELS
from medablate.errors import UserError
from medablate.models import build_model, count_outputs, entry
from medablate.models.cnn import CNNConfig
from medablate.models.mlp import MLPConfig
from medablate.models.monai import MonaiConfig
from medablate.models.weights import load_weights
from test_cli import medablate
from test_resume import assert_same_numbers, command

SMALL = {
    "mlp": MLPConfig(hidden=[16], dropout=[0.1]),
    "cnn": CNNConfig(widths=[8, 16], blocks=[1, 1]),
    "resnet18": MonaiConfig(name="resnet18"),
    "resnet34": MonaiConfig(name="resnet34", kwargs={"widen_factor": 0.25}),
    "resnet50": MonaiConfig(name="resnet50", kwargs={"widen_factor": 0.25}),
    "densenet121": MonaiConfig(name="densenet121", kwargs={"init_features": 8, "growth_rate": 4}),
    "efficientnet-b0": MonaiConfig(name="efficientnet-b0"),
    "monai": MonaiConfig(name="monai", net="DenseNet", kwargs={"init_features": 8, "growth_rate": 4,
                                                              "block_config": [2, 2]}),
}


def test_every_registered_model_is_tested() -> None:
    from medablate.models.monai import ALIASES as MONAI_ALIASES

    assert set(MODELS.names()) | set(MONAI_ALIASES) <= set(SMALL)


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize(("channels", "outputs"), [(1, 1), (3, 2)])
def test_forward_and_backward_give_one_logit_per_output_and_a_gradient_to_every_parameter(
        name: str, channels: int, outputs: int) -> None:
    torch.manual_seed(0)
    model = build_model(SMALL[name], (channels, 64, 64), outputs)
    logits = model(torch.rand(2, channels, 64, 64))
    assert logits.shape == (2, outputs) and count_outputs(model) == outputs
    logits.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize(("model", "expected"), [
    ({"name": "cnn", "widht": [8]}, "model.widht: unknown key 'widht': did you mean 'widths'?"),
    ({"name": "resnt18"}, "model.name: unknown model 'resnt18': did you mean 'resnet18'?"),
    ({"name": "monai", "net": "DenseNet12"}, "unknown MONAI network 'DenseNet12': did you mean 'DenseNet121'?"),
    ({"name": "densenet121", "kwargs": {"growth_rat": 4}}, "has no argument 'growth_rat': did you mean 'growth_rate'?"),
    ({"name": "resnet18", "kwargs": {"num_classes": 3}}, "kwargs sets num_classes, which medablate sets"),
    ({"name": "monai"}, "model name monai needs net"),
    ({"name": "cnn", "widths": [8, 16], "blocks": [1]}, "must name the same, non-zero number of stages"),
    ({"hidden": [8], "dropout": [0.1], "widths": [3]}, "model.widths: unknown key 'widths'"),
])
def test_a_misspelt_model_key_or_name_is_named_with_the_valid_ones(model: dict, expected: str) -> None:
    with pytest.raises(UserError) as error:
        validate_study({"name": "x", "model": model}, "study.yaml")
    assert expected in str(error.value)


def test_set_model_name_starts_a_fresh_model_section(tmp_path: Path) -> None:
    from medablate.config.schema import load_study

    path = tmp_path / "s.yaml"
    path.write_text("name: s\n")
    study, _ = load_study(path, ["model.name=cnn", "model.widths=[8, 16]", "model.blocks=[1, 1]"])
    assert study.model.name == "cnn" and study.model.widths == [8, 16]


def test_varying_the_architecture_gives_each_model_only_its_own_keys() -> None:
    from medablate.execute.plan import expand

    study = validate_study({"name": "x", "model": {"name": "cnn", "widths": [8, 16], "blocks": [1, 1]},
                            "comparisons": [{"name": "arch", "vary": {"model.name": ["cnn", "resnet18", "mlp"]}}]}, "s")
    models = {t.id: t.config.model for t in expand(study).trials}
    assert models["base"].widths == [8, 16] and models["resnet18"].name == "resnet18" and models["mlp"].hidden


# ------------------------------------------------------------------ starting weights


def test_weights_from_an_rgb_imagenet_style_file_fold_the_first_conv_and_reinitialise_the_head(tmp_path: Path) -> None:
    torch.manual_seed(1)
    rgb = build_model(MonaiConfig(name="resnet18"), (3, 64, 64), 1000)
    path = tmp_path / "pretrained.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in rgb.state_dict().items()}, "epoch": 90}, path)
    torch.manual_seed(2)
    grey = build_model(MonaiConfig(name="resnet18"), (1, 64, 64), 2)
    head_before = grey.fc.weight.detach().clone()
    report = load_weights(grey, path)
    assert report.folded == ["conv1.weight"]
    assert torch.equal(grey.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(grey.layer4[0].conv1.weight, rgb.layer4[0].conv1.weight)
    assert any(r.startswith("fc.weight [1000, 512] -> [2, 512]") for r in report.reshaped)
    assert torch.equal(grey.fc.weight, head_before)  # the fresh head is kept
    assert not report.missing and not report.unexpected
    assert "folded RGB" in report.summary() and "re-initialised" in report.summary()


def test_weights_of_another_architecture_or_a_bad_file_are_clear_errors(tmp_path: Path) -> None:
    cnn = build_model(CNNConfig(widths=[8, 16], blocks=[1, 1]), (1, 32, 32), 1)
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(UserError, match="shares no tensor"):
        load_weights(cnn, other)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="could not be read as a PyTorch state dict"):
        load_weights(cnn, tmp_path / "junk.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_weights(cnn, tmp_path / "missing.pt")


def test_a_study_starts_from_weights_records_their_sha256_and_prints_the_summary(tmp_path: Path) -> None:
    torch.manual_seed(0)
    donor = build_model(CNNConfig(widths=[8, 16], blocks=[1, 1]), (3, 32, 32), 5)
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in donor.state_dict().items()}}, tmp_path / "donor.pt")
    study = write_study(tmp_path, model={"name": "cnn", "widths": [8, 16], "blocks": [1, 1], "weights": "donor.pt"},
                        training={"epochs": 1, "batch_size": 16}, comparisons=[])
    out = tmp_path / "out"
    result = medablate("run", str(study), "--out", str(out))
    assert result.returncode == 0, result.stderr
    printed = " ".join((result.stdout + result.stderr).split())
    assert "weights: loaded" in printed and "folded RGB" in printed, printed
    config = yaml.safe_load((out / "trials" / "base-seed0" / "config.yaml").read_text())
    import hashlib

    digest = hashlib.sha256((tmp_path / "donor.pt").read_bytes()).hexdigest()
    assert config["resolved"]["weights_sha256"] == digest
    assert list(json.loads((out / "study.json").read_text())["weights"].values()) == [digest]
    # the conv model's saliency is Grad-CAM, in predict --saliency and in the report's examples
    from PIL import Image

    from medablate.data.sources import phantom

    pixels = phantom.generate(1, 32, 7).images[1, 0]
    Image.fromarray(pixels).save(tmp_path / "xray.png")
    run = out / "trials" / "base-seed0"
    result = medablate("predict", str(run), str(tmp_path / "xray.png"), "--saliency", str(tmp_path / "maps"), "--json")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "maps" / "xray_saliency.png").is_file()
    assert json.loads((run / "examples.json").read_text())[0]["saliency"] == "Grad-CAM (last convolutional stage)"
    assert "Test images with saliency: Grad-CAM (last convolutional stage)" in (out / "report.md").read_text()


# ------------------------------------------------------------------ standardisation and test-time augmentation


def test_dataset_standardisation_uses_the_training_split_and_travels_in_the_checkpoint(tmp_path: Path) -> None:
    from medablate.folder.checkpoint import load_checkpoint

    study = write_study(tmp_path, model={"name": "cnn", "widths": [8, 16], "blocks": [1, 1]},
                        data={"normalize": "dataset"}, training={"epochs": 1}, comparisons=[])
    out = tmp_path / "out"
    assert medablate("run", str(study), "--out", str(out)).returncode == 0
    state = load_checkpoint(out / "trials" / "base-seed0" / "best.pt")
    from medablate.config.schema import load_study
    from medablate.data import load_data

    loaded, _ = load_study(study)
    images = load_data(loaded.data).images[:60]  # course split: the first 30 of each class train
    train = np.concatenate([images[:30], load_data(loaded.data).images[40:70]]) / 255.0
    assert float(state["model"]["mean"][0]) == pytest.approx(train.mean(), abs=1e-5)
    assert float(state["model"]["std"][0]) == pytest.approx(train.std(), abs=1e-5)


def test_tta_averages_the_probabilities_of_the_views_and_is_recorded() -> None:
    from medablate.models.wrapper import views

    torch.manual_seed(0)
    for tta, count in (("flip", 2), ("crops", 5)):
        for outputs in (1, 2):
            model = build_model(CNNConfig(widths=[8], blocks=[1], dropout=0.0), (1, 32, 32), outputs, tta=tta).eval()
            x = torch.rand(3, 1, 32, 32)
            with torch.no_grad():
                each = [model.net(v) for v in views(x, tta)]
                probability = (torch.stack([torch.sigmoid(e) for e in each]) if outputs == 1
                               else torch.stack([torch.softmax(e, 1) for e in each])).mean(0)
                got = torch.sigmoid(model(x)) if outputs == 1 else torch.softmax(model(x), 1)
            assert len(each) == count and torch.allclose(got, probability, atol=1e-5)
            model.train()
            assert torch.allclose(model(x), model.net(x))  # training sees the one view


# ------------------------------------------------------------------ Grad-CAM


def test_grad_cam_is_highest_on_the_region_that_decides_a_synthetic_image() -> None:
    """Class 1: a bright 6x6 square somewhere on noise; class 0: noise. A small CNN learns it; Grad-CAM's peak for
    a class-1 image falls on its square, and the MLP keeps the input gradient."""
    from medablate.inspect.saliency import last_feature_map, saliency_map

    rng = np.random.default_rng(0)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        x = rng.uniform(0, 0.4, (n, 1, 32, 32)).astype(np.float32)
        y = rng.integers(0, 2, n)
        corners = [(int(rng.integers(2, 24)), int(rng.integers(2, 24))) for _ in range(n)]
        for i, (r, c) in enumerate(corners):
            if y[i]:
                x[i, 0, r:r + 6, c:c + 6] = 1.0
        return torch.from_numpy(x), torch.from_numpy(y), corners

    torch.manual_seed(0)
    model = build_model(CNNConfig(widths=[8, 16], blocks=[1, 1], stem_stride=1, dropout=0.0), (1, 32, 32), 2)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(60):
        x, y, _ = batch(32)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y, corners = batch(40)
    assert last_feature_map(model, x[:1]) is model.features
    hits = 0
    for i in np.flatnonzero(y.numpy())[:10]:
        cam = saliency_map(model, x[i:i + 1], 1, 2)
        r, c = np.unravel_index(cam.argmax(), cam.shape)
        top, left = corners[i]
        hits += top - 3 <= r < top + 9 and left - 3 <= c < left + 9
    assert hits >= 8
    mlp = build_model(MLPConfig(hidden=[8], dropout=[0.0]), (1, 32, 32), 2).eval()
    assert last_feature_map(mlp, x[:1]) is None and saliency_map(mlp, x[:1], 1, 2).shape == (32, 32)


# ------------------------------------------------------------------ speed switches


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_fp16_keeps_its_grad_scaler_in_last_pt(tmp_path: Path, precision: str) -> None:
    from medablate.folder.checkpoint import read_checkpoint

    study = write_study(tmp_path, model={"name": "cnn", "widths": [8, 16], "blocks": [1, 1]},
                        training={"epochs": 2, "precision": precision, "checkpoint_every": "epoch"},
                        comparisons=[{"name": "loss", "vary": {"training.loss": ["CrossEntropyLoss"]}}])
    out = tmp_path / "out"
    result = medablate("run", str(study), "--out", str(out))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "trials" / "CrossEntropyLoss-seed0" / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["precision"] == precision and metrics["channels_last"] is True
    history = (out / "trials" / "CrossEntropyLoss-seed0" / "history.csv").read_text()
    assert "nan" not in history.lower()
    scaler = read_checkpoint(out / "trials" / "CrossEntropyLoss-seed0" / "last.pt", need_model=False).get("scaler")
    assert (scaler is not None and scaler["scale"] > 0) if precision == "fp16" else scaler is None


def test_fp16_scaler_state_is_checkpointed() -> None:
    from medablate.train.engine import Speed

    scaler = Speed(torch.device("cpu"), "fp16").scaler()
    assert scaler.is_enabled() and Speed().scaler().is_enabled() is False


def test_the_inplace_linear_falls_back_to_nn_linear_under_autocast() -> None:
    model = build_model(MLPConfig(hidden=[8], dropout=[0.0]), (1, 8, 8), 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(4, 1, 8, 8))
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_channels_last_is_on_for_conv_nets_only() -> None:
    from medablate.train.engine import speed_of

    cpu = torch.device("cpu")
    assert speed_of(TrialConfig(model=CNNConfig()), cpu).channels_last
    assert not speed_of(TrialConfig(), cpu).channels_last
    assert entry(MonaiConfig(name="resnet18")).convolutional and not entry(MLPConfig()).convolutional


@pytest.mark.slow
def test_compiled_training_stores_the_raw_modules_keys(tmp_path: Path) -> None:
    from medablate.folder.checkpoint import load_checkpoint

    study = write_study(tmp_path, model={"name": "cnn", "widths": [8], "blocks": [1]},
                        training={"epochs": 1, "compile": True}, comparisons=[])
    out = tmp_path / "out"
    assert medablate("run", str(study), "--out", str(out)).returncode == 0
    keys = load_checkpoint(out / "trials" / "base-seed0" / "best.pt")["model"]
    assert keys and not any(k.startswith("_orig_mod.") for k in keys)


# ------------------------------------------------------------------ augmentation aimed at distribution shift


def test_shift_augmentations_keep_shape_and_range_repeat_with_a_seed_and_differ_per_image() -> None:
    from medablate.train.augment import make_augment

    augment = make_augment(AugmentConfig(crop_scale=(0.6, 1.0), gamma=0.3, noise=0.05, blur=1.5, contrast=0.2,
                                         brightness=0.1))
    x = torch.rand(1, 1, 64, 64).expand(6, 3, 64, 64).clone()
    torch.manual_seed(3)
    a = augment(x)
    torch.manual_seed(3)
    assert torch.equal(a, augment(x)) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert not torch.allclose(a[0], a[1])


def test_identity_settings_of_crop_and_blur_change_nothing() -> None:
    from medablate.train.augment import blur, make_augment

    x = torch.rand(4, 1, 32, 32)
    full = make_augment(AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0)))
    assert torch.allclose(full(x), x, atol=1e-5)
    assert torch.allclose(blur(x, torch.zeros(4)), x, atol=1e-6)
    blurred = blur(x, torch.full((4,), 2.0))
    assert blurred.std() < x.std() and torch.allclose(blurred.mean(), x.mean(), atol=1e-2)


def test_a_crop_zooms_in() -> None:
    """A crop of a quarter of the area magnifies: an image with one bright pixel gets a bigger bright spot."""
    from medablate.train.augment import make_augment

    x = torch.zeros(1, 1, 33, 33)
    x[..., 16, 16] = 1
    crop = make_augment(AugmentConfig(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0)))
    torch.manual_seed(0)
    assert (crop(x) > 0.1).sum() > (x > 0.1).sum()


# ------------------------------------------------------------------ a CNN trial resumes exactly after SIGKILL


@pytest.mark.slow  # the CNN's resume; benchmarks/kill_campaign.py --cnn kills CNN studies at random
def test_a_cnn_trial_killed_mid_epoch_resumes_identically(tmp_path: Path) -> None:
    sections = {"data": {"image_size": 32, "normalize": "dataset",
                         "augment": {"crop_scale": [0.7, 1.0], "rotate": 5, "gamma": 0.2, "noise": 0.02, "blur": 1.0}},
                "evaluation": {"tta": "flip"},
                "model": {"name": "cnn", "widths": [8, 16], "blocks": [1, 1]},
                "training": {"epochs": 4, "batch_size": 8, "checkpoint_every": "epoch"}}
    study = write_study(tmp_path, **sections)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(command(study, clean), check=True, capture_output=True)
    environment = os.environ | {"MEDABLATE_KILL_AT": "batch@20"}  # epoch 3 of trial 1 (8 batches an epoch)
    result = subprocess.run(command(study, killed), capture_output=True, text=True, env=environment)
    assert result.returncode == -9
    rerun = medablate("run", str(study), "--out", str(killed))  # the rerun needs no process of its own
    assert rerun.returncode == 0, rerun.stderr
    assert_same_numbers(killed, clean)
    for run in ("base-seed0", "CrossEntropyLoss-seed0"):
        a = json.loads((clean / "trials" / run / "metrics.json").read_text())
        b = json.loads((killed / "trials" / run / "metrics.json").read_text())
        assert a["evaluation"]["test"] == b["evaluation"]["test"] and b["tta"] == "flip"


def test_runs_written_before_the_new_keys_are_not_reported_as_changed() -> None:
    from medablate.execute.prepare import config_differences

    old = {"model": {"name": "mlp", "hidden": [8]}, "training": {"epochs": 3}, "augment": {"rotate": 0.0},
           "seed": 0, "resolved": {"loss": "BCEWithLogitsLoss"}}
    new = {"model": {"name": "mlp", "hidden": [8], "weights": None},
           "training": {"epochs": 3, "precision": "fp32", "compile": False, "channels_last": "auto"},
           "augment": {"rotate": 0.0, "gamma": 0.0, "crop_scale": None, "crop_ratio": [0.75, 1.3333], "noise": 0.0,
                       "blur": 0.0}, "normalize": "none", "tta": "none", "seed": 0,
           "resolved": {"loss": "BCEWithLogitsLoss"}}
    assert config_differences(old, new) == []
    assert config_differences(old, new | {"tta": "flip"}) == ["tta: none -> flip"]
