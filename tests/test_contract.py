"""The run folder as a typed, versioned contract (issue 12): an older format is read, a newer one refused with
the version named, a damaged metrics.json is reported as damaged and the run redone."""

from __future__ import annotations

import ast
import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_cli import assert_user_error, medablate
from test_faults import copy_of, finished  # noqa: F401  (the shared finished study)


@pytest.mark.slow  # the same check as the format-1 folder kept in tests/data, on a folder made now
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


# ------------------------------------------------------------------ the typed, versioned contract (issue 19)

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny two-seed study of tests/data (its runs, an ensemble per trial, examples, figures), run now."""
    out = tmp_path_factory.mktemp("fresh") / "out"
    result = medablate("run", str(DATA / "format-study.yaml"), "--out", str(out), "--threads", "1")
    assert result.returncode == 0, result.stderr
    return out


def test_a_newer_format_is_refused_naming_the_version(fresh: Path, tmp_path: Path) -> None:
    out = copy_of({"out": fresh}, tmp_path)
    info = json.loads((out / "study.json").read_text())
    (out / "study.json").write_text(json.dumps(info | {"format": 99}))
    assert_user_error(medablate("status", str(out)), "format 99", "upgrade medablate")


def test_a_damaged_metrics_json_is_named_and_the_run_redone(fresh: Path, tmp_path: Path) -> None:
    out = copy_of({"out": fresh}, tmp_path)
    good = json.loads((out / "trials" / "base-seed0" / "metrics.json").read_text())
    (out / "trials" / "base-seed0" / "metrics.json").write_text('{"run": "base-seed0", "status": "do')
    status = medablate("status", str(out))
    assert status.returncode == 0 and "damaged" in status.stdout
    result = medablate("run", str(DATA / "format-study.yaml"), "--out", str(out), "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "metrics.json is damaged" in " ".join(result.stderr.split())
    redone = json.loads((out / "trials" / "base-seed0" / "metrics.json").read_text())
    assert redone["status"] == "done" and redone["test"] == good["test"]


def test_every_file_a_fresh_study_writes_has_only_typed_keys_and_round_trips(fresh: Path) -> None:
    from medablate.folder.records import FORMAT, EnsembleRecord, Example, FiguresRecord, RunRecord, StudyInfo

    files = [(fresh / "study.json", StudyInfo)]
    files += [(p, RunRecord) for p in sorted(fresh.glob("trials/*/metrics.json"))]
    files += [(p, EnsembleRecord) for p in sorted(fresh.glob("ensembles/*/metrics.json"))]
    files += [(p, FiguresRecord) for p in sorted(fresh.glob("trials/*/figures.json"))]
    assert len([f for f, r in files if r is RunRecord]) == 4 and len([f for f, r in files if r is EnsembleRecord]) == 2
    for path, record_type in files:
        raw = json.loads(path.read_text())
        record = record_type.model_validate(raw)
        assert record.unknown_keys() == [], (path, record.unknown_keys())
        assert record.plain() == raw, path  # every key typed, nothing lost or added on the way back
        if hasattr(record, "format"):
            assert record.format == FORMAT == 3, path
    for path in sorted(fresh.glob("trials/*/examples.json")):
        entries = json.loads(path.read_text())
        assert entries and all(Example.model_validate(e).unknown_keys() == [] for e in entries)


def test_a_metrics_record_with_a_mistyped_value_is_a_damaged_file(fresh: Path, tmp_path: Path) -> None:
    from medablate.folder import rundir

    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(fresh / "trials" / "base-seed0"), str(run)], check=True)
    raw = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(raw | {"best_epoch": "two"}))
    with pytest.raises(rundir.DamagedFile, match="metrics.json is damaged"):
        rundir.read_metrics(run)


@pytest.mark.parametrize("version", [1, 2])
def test_folders_of_formats_1_and_2_kept_in_the_repository_are_still_read(version: int, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(DATA / f"format-{version}", out, symlinks=True)
    assert ("format" in json.loads((out / "study.json").read_text())) == (version == 2)
    for args in (["status", str(out)], ["compare", str(out)], ["report", str(out)]):
        result = medablate(*args)
        assert result.returncode == 0, (args, result.stderr)
    assert "4 done" in " ".join(medablate("status", str(out)).stdout.split())
    rows = {r["run"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert sorted(rows) == sorted(["base-seed0", "base-seed1", "CrossEntropyLoss-seed0", "CrossEntropyLoss-seed1",
                                   "base-ensemble", "CrossEntropyLoss-ensemble"])
    for run in (r for r in rows if not r.endswith("ensemble")):
        history = list(csv.DictReader((out / "trials" / run / "history.csv").open()))
        metrics = json.loads((out / "trials" / run / "metrics.json").read_text())
        assert float(rows[run]["val_acc"]) == pytest.approx(float(history[metrics["best_epoch"] - 1]["val_acc"]))
        highest = metrics["best_val_acc"] if version == 1 else metrics["highest_val_acc"]
        assert float(rows[run]["highest_val_acc"]) == pytest.approx(highest)
    assert (out / "report.html").exists() and (out / "comparisons.csv").exists()


def _contract_names() -> tuple[list[str], list[str]]:
    from medablate.folder import layout

    names = [v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)]
    return [n for n in names if "." in n], [n for n in names if "." not in n]


def test_no_run_folder_file_name_is_spelled_outside_the_contract() -> None:
    """Every file and folder name of a study folder lives in medablate.folder (layout.py); code elsewhere uses the
    names from there, so a name changes in one place. Docstrings may mention them; code may not spell them."""
    files, folders = _contract_names()
    assert "metrics.json" in files and "trials" in folders
    spelled = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, files)) + r")(?!\w)|predictions_(val|test|\{)")
    src = Path(__file__).resolve().parent.parent / "src" / "medablate"
    found = []
    for path in sorted(src.rglob("*.py")):
        if path.parent.name == "folder":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings:
                continue
            parent = parents.get(id(node))
            as_path = isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div) or (
                isinstance(parent, ast.Call) and getattr(parent.func, "id", getattr(parent.func, "attr", "")) == "Path")
            folder = node.value.split("/")[0] in folders and (as_path or "/" in node.value)
            if spelled.search(node.value) or folder:
                found.append(f"{path.relative_to(src)}:{node.lineno}: {node.value[:60]!r}")
    assert not found, "run-folder names spelled outside medablate.folder:\n" + "\n".join(found)
