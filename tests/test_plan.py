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


def test_augment_levels_with_the_same_keys_are_named_by_the_values_that_differ() -> None:
    """Levels are named by the keys that are on; where two levels have a key on with different values, the value
    joins the name, so no two levels of a comparison share one (7 and 7.0 are one value)."""
    from medablate.execute.plan import level_label, reference_trial

    raw = tiny_study(data={"augment": {"rotate": 7, "blur": 1.0}}, comparisons=[{"name": "a", "vary": {"data.augment": [
        {}, {"rotate": 7.0, "blur": 1.0}, {"rotate": 7, "blur": 2.0, "noise": 0.05}]}}])
    study = validate_study(raw, "t")
    plan = expand(study)
    assert [t.id for t in plan.trials] == ["none", "base", "rotate+blur2.0+noise"]
    assert [level_label(t, ["data.augment"]) for t in plan.trials] == ["none", "rotate+blur1.0", "rotate+noise+blur2.0"]
    assert reference_trial(study, plan, study.comparisons[0]).id == "base"


def test_threshold_rules_are_levels_named_by_their_targets() -> None:
    """evaluation.threshold can vary like evaluation.tta: the base trial has the study's rule, each level its own
    (validated as evaluation.threshold is), and a bad level is an error that names it."""
    import pytest

    from medablate.errors import UserError

    rules = ["youden", 0.5, {"sensitivity": 0.95}, {"prevalence": 0.3}]
    study = validate_study(tiny_study(evaluation={"threshold": "youden"},
                                      comparisons=[{"name": "rule", "vary": {"evaluation.threshold": rules}}]), "t")
    plan = expand(study)
    assert [t.id for t in plan.trials] == ["base", "0.5", "sensitivity0.95", "prevalence0.3"]
    assert [t.config.rule for t in plan.trials] == rules
    assert [study.evaluation_of(t.config).rule for t in plan.trials] == rules
    assert study.threshold_rules() == rules
    bad = tiny_study(comparisons=[{"name": "rule", "vary": {"evaluation.threshold": [{"sensitivty": 0.9}]}}])
    with pytest.raises(UserError, match="sensitivity"):
        expand(validate_study(bad, "t"))


def test_image_size_is_a_level_with_the_studys_size_as_its_base() -> None:
    study = validate_study(tiny_study(comparisons=[{"name": "px", "vary": {"data.image_size": [32, 24]}}]), "t")
    plan = expand(study)
    assert [(t.id, t.config.image_size) for t in plan.trials] == [("base", 32), ("24", 24)]
