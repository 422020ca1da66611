"""The robustness panel (evaluation.shifts): the shifts themselves, the panel's scores, and what it can tell."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_study
from medablate.config.schema import SHIFT_NAMES, EvaluationConfig, validate_study
from medablate.data.sources.phantom import generate
from medablate.errors import UserError
from medablate.scoring.clinical import CLEAN, Predictions, Shifted, evaluate_trial, robust_means, robustness_rows
from medablate.train import shifts


def phantom_images(size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    found = generate(12, size, seed=3)
    images = found.images.reshape(len(found.labels), 1, size, size)  # (N, C, H, W), as a split holds them
    return torch.from_numpy(images.copy()), torch.from_numpy(found.labels)


def test_the_table_names_every_shift_the_config_accepts() -> None:
    assert tuple(shifts.SHIFTS) == SHIFT_NAMES
    assert all(len(s.levels) == 5 and s.stands_for and s.parameter for s in shifts.SHIFTS.values())


@pytest.mark.parametrize("name", SHIFT_NAMES)
def test_severity_0_is_the_image_itself_and_each_severity_changes_it_more(name: str) -> None:
    images, _ = phantom_images()
    assert shifts.shift_images(images, name, 0) is images
    change = []
    for severity in range(1, 6):
        shifted = shifts.shift_images(images, name, severity)
        assert shifted.dtype == torch.uint8 and shifted.shape == images.shape
        assert torch.equal(shifted, shifts.shift_images(images, name, severity))  # seeded by name and severity
        change.append(float((shifted.float() - images.float()).abs().mean()))
    assert change[0] > 0 and all(a < b for a, b in zip(change, change[1:], strict=False)), change


def test_a_class_conditional_shift_changes_that_class_alone() -> None:
    images, labels = phantom_images()
    only = labels == shifts.class_index(["normal", "pneumonia"], "NORMAL")  # case does not matter
    shifted = shifts.shift_images(images, "contrast", 4, only)
    assert torch.equal(shifted[~only], images[~only]) and not torch.equal(shifted[only], images[only])
    with pytest.raises(UserError, match="did you mean 'normal'"):
        shifts.class_index(["normal", "pneumonia"], "nromal")


def test_the_panel_in_a_study_file_standard_names_and_bad_entries() -> None:
    study = validate_study(tiny_study(evaluation={"shifts": "standard"}), "test")
    assert [s.name for s in study.evaluation.shifts] == list(SHIFT_NAMES)
    assert all(s.severities == [1, 2, 3, 4, 5] for s in study.evaluation.shifts)
    mixed = EvaluationConfig(shifts=["noise", {"name": "blur", "severities": [3, 0, 3], "only_class": "normal"}])
    assert mixed.shifts[1].severities == [0, 3] and mixed.shifts[1].label == "blur (normal only)"
    more = EvaluationConfig(shifts=["standard", {"name": "brightness", "only_class": "normal"}]).shifts
    assert len(more) == 10 and more[-1].label == "brightness (normal only)"
    for bad, words in (({"shifts": "all"}, "neither 'standard'"), ({"shifts": ["noise", "noise"]}, "more than once"),
                       ({"shifts": [{"name": "blur", "severities": [6]}]}, "severities"),
                       ({"shifts": ["briteness"]}, "brightness")):
        with pytest.raises(UserError, match=words):
            validate_study(tiny_study(evaluation=bad), "test")


def _predictions(seed: int, n: int = 300) -> Predictions:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.6).astype(int)
    positive = 1 / (1 + np.exp(-(rng.normal(size=n) + 2 * y - 1)))
    return Predictions(y, np.stack([1 - positive, positive], 1), (positive >= 0.5).astype(int))


def test_a_panel_row_at_severity_0_is_the_clean_score_with_its_interval() -> None:
    val, test = _predictions(0), _predictions(1)
    config = EvaluationConfig(threshold="youden", bootstrap_resamples=500)
    report, threshold = evaluate_trial(val, test, config, ["n", "p"])
    rows = robustness_rows([Shifted(CLEAN, None, 0, None, test), Shifted("noise", None, 3, 300.0, _predictions(2))],
                           threshold, ["n", "p"], 500)
    clean = report["test"]["at_threshold"]
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity", "ppv", "f1", "brier", "ece"):
        assert rows[0][key] == pytest.approx(clean[key], abs=1e-12), key
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        assert [rows[0][f"{key}_low"], rows[0][f"{key}_high"]] == pytest.approx(clean["ci95"][key]), key
    means = robust_means(rows)  # the clean row is no shift: the means are over severities above 0
    assert means == {"robust_acc": rows[1]["accuracy"], "robust_auc": rows[1]["roc_auc"], "shifted_sets": 1}


def test_a_model_trained_with_brightness_augmentation_loses_less_to_a_darker_image(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Phantom images, the course MLP shrunk, 3 seeds each: trained with random brightness (+-0.3), a model loses
    less accuracy to the panel's darkest images (brightness severities 4 and 5) than one trained without. Each run
    says how far its panel has got (a progress event after each shifted set)."""
    from medablate.execute.plan import expand
    from medablate.execute.prepare import prepare_context
    from medablate.execute.run import execute_run
    from medablate.folder import rundir

    raw = tiny_study(seeds=[0, 1, 2], data={"image_size": 32, "phantom": {"count_per_class": 150},
                                            "split": {"method": "stratified", "val_fraction": 0.2}},
                     test={"phantom": {"count_per_class": 100}}, model={"hidden": [64, 32], "dropout": [0.1, 0.1]},
                     training={"epochs": 10, "batch_size": 32}, evaluation={"shifts": ["brightness"]},
                     comparisons=[{"name": "augment", "vary": {"data.augment": [{}, {"brightness": 0.3}]}}])
    study = validate_study(raw, "test")
    context = prepare_context(study, tmp_path, threads=None)
    lost: dict[bool, list[float]] = {False: [], True: []}
    for run in expand(study).runs:
        events: list = []
        assert execute_run(run, context, events.append) == "done"
        assert [(e.data["done"], e.data["total"]) for e in events if e.kind == "panel"] == [(k, 5) for k in range(1, 6)]
        rows = {int(r["severity"]): r["accuracy"] for r in rundir.read_robustness(tmp_path / "trials" / run.id)}
        lost[run.trial.config.augment.brightness > 0].append(rows[0] - (rows[4] + rows[5]) / 2)
    assert len(lost[True]) == len(lost[False]) == 3
    assert np.mean(lost[False]) - np.mean(lost[True]) > 0.015, lost  # measured: 0.054 vs 0.019


def test_the_progress_bar_of_a_run_says_how_far_its_panel_has_got(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io

    from rich.console import Console

    from medablate.execute.progress import ProgressEvents, progress_bars
    from medablate.execute.run import Event

    progress = progress_bars(Console(file=io.StringIO()))
    render = ProgressEvents(progress.console, tmp_path, progress, "study", 4)
    render.label("base-seed0", "base seed 0", 2)
    render(Event("start", "base-seed0", {"total": 10}))
    render(Event("panel", "base-seed0", {"done": 3, "total": 45}))
    assert progress.tasks[-1].description == "base seed 0 robustness panel 3/45 shifted sets"
