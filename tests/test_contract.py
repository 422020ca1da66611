"""The run folder as a typed, versioned contract (issue 12): an older format is read, a newer one refused with
the version named, a damaged metrics.json is reported as damaged and the run redone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from test_cli import assert_user_error, medablate
from test_faults import copy_of, finished  # noqa: F401  (the shared finished study)


def test_a_format_1_folder_is_read_with_its_values_derived(finished: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = copy_of(finished, tmp_path)
    for run_dir in (out / "trials").iterdir():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        old = {k: v for k, v in metrics.items() if k not in ("format", "val_acc", "highest_val_acc",
                                                             "highest_val_acc_epoch", "evaluation_config", "threads")}
        old.update(best_val_acc=metrics["highest_val_acc"], best_val_acc_epoch=metrics["highest_val_acc_epoch"])
        (run_dir / "metrics.json").write_text(json.dumps(old))
    info = json.loads((out / "study.json").read_text())
    info.pop("format")
    (out / "study.json").write_text(json.dumps(info))
    for args in (["status", str(out)], ["compare", str(out)], ["report", str(out)]):
        assert medablate(*args).returncode == 0, args
    rows = {r["run"]: r for r in csv.DictReader((out / "results.csv").open())}
    for run, row in rows.items():
        history = list(csv.DictReader((out / "trials" / run / "history.csv").open()))
        metrics = json.loads((out / "trials" / run / "metrics.json").read_text())
        assert float(row["val_acc"]) == pytest.approx(float(history[metrics["best_epoch"] - 1]["val_acc"]))
        assert float(row["highest_val_acc"]) == pytest.approx(metrics["best_val_acc"])


def test_a_newer_format_is_refused_naming_the_version(finished: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = copy_of(finished, tmp_path)
    info = json.loads((out / "study.json").read_text())
    (out / "study.json").write_text(json.dumps(info | {"format": 99}))
    assert_user_error(medablate("status", str(out)), "format 99", "upgrade medablate")


def test_a_damaged_metrics_json_is_named_and_the_run_redone(finished: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    out = copy_of(finished, tmp_path)
    good = json.loads((out / "trials" / "base-seed0" / "metrics.json").read_text())
    (out / "trials" / "base-seed0" / "metrics.json").write_text('{"run": "base-seed0", "status": "do')
    status = medablate("status", str(out))
    assert status.returncode == 0 and "damaged" in status.stdout
    result = medablate("run", str(finished["study"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "metrics.json is damaged" in " ".join(result.stderr.split())
    redone = json.loads((out / "trials" / "base-seed0" / "metrics.json").read_text())
    assert redone["status"] == "done" and redone["test"] == good["test"]
