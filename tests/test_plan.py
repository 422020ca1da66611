from medablate.config.schema import validate_study
from medablate.execute.plan import expand

from conftest import tiny_study


def test_grid_of_two_keys_is_the_full_product() -> None:
    raw = tiny_study(comparisons=[{"name": "grid", "vary": {
        "training.loss": ["BCEWithLogitsLoss", "CrossEntropyLoss"],
        "model.activation": ["ReLU", "Tanh", "GELU"]}}])
    plan = expand(validate_study(raw, "t"))
    assert len(plan.trials) == 6
    assert {(t.config.training.loss, t.config.model.activation.name) for t in plan.trials} == {
        (loss, act) for loss in ("BCEWithLogitsLoss", "CrossEntropyLoss") for act in ("ReLU", "Tanh", "GELU")}


def test_identical_trials_across_comparisons_are_shared() -> None:
    raw = tiny_study(comparisons=[
        {"name": "a", "vary": {"training.loss": ["BCEWithLogitsLoss", "CrossEntropyLoss"]}},
        {"name": "b", "vary": {"model.activation": ["ReLU", "Tanh"]}},
        {"name": "c", "vary": {"training.loss": ["CrossEntropyLoss"]}},
    ])
    plan = expand(validate_study(raw, "t"))
    assert len(plan.trials) == 3
    shared = next(t for t in plan.trials if t.config.training.loss == "CrossEntropyLoss")
    assert shared.comparisons == ["a", "c"]


def test_a_string_and_its_mapping_form_are_the_same_trial() -> None:
    raw = tiny_study(comparisons=[{"name": "a", "vary": {"model.activation": ["ReLU", {"name": "ReLU"}]}}])
    assert len(expand(validate_study(raw, "t")).trials) == 1


def test_no_comparisons_means_one_base_trial() -> None:
    plan = expand(validate_study(tiny_study(comparisons=[]), "t"))
    assert [t.id for t in plan.trials] == ["base"]


def test_trial_ids_are_unique_and_readable() -> None:
    raw = tiny_study(comparisons=[{"name": "s", "vary": {"training.scheduler": [
        {"name": "StepLR", "step_size": 1}, {"name": "StepLR", "step_size": 2}]}}])
    ids = [t.id for t in expand(validate_study(raw, "t")).trials]
    assert ids == ["StepLR", "StepLR-2"]
