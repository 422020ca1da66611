from pathlib import Path

import pytest

from medablate.config.schema import load_study, parse_override, validate_study
from medablate.errors import UserError
from medablate.execute.plan import expand

from conftest import REPO, tiny_study, write_study


def error_of(raw: dict) -> str:
    with pytest.raises(UserError) as info:
        validate_study(raw, "study.yaml")
    return str(info.value)


def test_misspelt_scheduler_gets_the_closest_name() -> None:
    message = error_of({"name": "x", "training": {"scheduler": "CosineAnealingLR"}})
    assert "training.scheduler" in message and "did you mean 'CosineAnnealingLR'" in message


def test_unknown_key_named_with_its_dotted_path_and_suggestion() -> None:
    message = error_of({"name": "x", "training": {"epoch": 3}})
    assert "training.epoch" in message and "did you mean 'epochs'" in message
    assert "data.splitt" in error_of({"name": "x", "data": {"splitt": {}}})


def test_wrong_type_names_path_and_value() -> None:
    message = error_of({"name": "x", "training": {"batch_size": "many"}})
    assert "training.batch_size" in message and "'many'" in message


def test_unknown_keyword_of_a_named_class() -> None:
    message = error_of({"name": "x", "model": {"activation": {"name": "LeakyReLU", "negativ_slope": 0.1}}})
    assert "negative_slope" in message


def test_scheduler_missing_required_argument() -> None:
    assert "step_size" in error_of({"name": "x", "training": {"scheduler": "StepLR"}})


def test_dropout_must_match_hidden_blocks() -> None:
    assert "dropout" in error_of({"name": "x", "model": {"hidden": [8, 8], "dropout": [0.5]}})


def test_loss_must_be_known() -> None:
    assert "did you mean 'CrossEntropyLoss'" in error_of({"name": "x", "training": {"loss": "CrossEntropy"}})


def test_empty_vary_list_is_an_error() -> None:
    message = error_of({"name": "x", "comparisons": [{"name": "c", "vary": {"training.loss": []}}]})
    assert "vary" in message and "training.loss" in message


def test_data_cannot_vary() -> None:
    """The data and its split are shared by every trial (data.image_size can vary: the same images at each size)."""
    assert "data.path" in error_of({"name": "x", "comparisons": [{"name": "c", "vary": {"data.path": ["a", "b"]}}]})
    assert "data.split" in error_of({"name": "x", "comparisons": [{"name": "c", "vary": {"data.split.seed": [1, 2]}}]})


def test_set_overrides_validate_like_the_file(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    study, _ = load_study(path, ["training.epochs=5", "model.hidden=[8]", "model.dropout=[0.1]"])
    assert study.training.epochs == 5 and study.model.hidden == [8]
    with pytest.raises(UserError, match="training.epochs"):
        load_study(path, ["training.epochs=-1"])
    with pytest.raises(UserError, match="key=value"):
        load_study(path, ["training.epochs"])


def test_parse_override_reads_yaml_values() -> None:
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("test=null") == ("test", None)
    assert parse_override("x=CosineAnnealingLR") == ("x", "CosineAnnealingLR")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntraining: {epochs: 3\n")
    with pytest.raises(UserError, match="line"):
        load_study(bad)


def test_missing_study_file() -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_study(Path("/nonexistent/study.yaml"))


def test_course_example_expands_to_six_trials() -> None:
    study, _ = load_study(REPO / "examples" / "course-hw2.yaml")
    plan = expand(study)
    assert len(plan.trials) == 6
    base = [t for t in plan.trials if t.id == "base"]
    assert len(base) == 1 and base[0].comparisons == ["loss", "scheduler", "activation"]
    assert study.training.epochs == 40 and study.training.batch_size == 32
    assert study.model.hidden == [512, 256, 256] and study.model.dropout == [0.9, 0.9, 0.8]
    poly = next(t for t in plan.trials if t.id == "PolynomialLR").config.training.scheduler
    assert poly is not None and poly.kwargs["power"] == 1


def test_seeds_multiply_runs_not_trials() -> None:
    plan = expand(validate_study(tiny_study(seeds=[0, 1, 2]), "t"))
    assert len(plan.trials) == 2 and len(plan.runs) == 6
    assert len({r.id for r in plan.runs}) == 6
