"""From study to paper (issue 13): references, the validation-test gap, methods.md and tables.tex."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from conftest import REPO, write_study
from medablate.config.schema import load_study
from medablate.study.runner import StudyRunner
from medablate.analysis.transfer import gap_rows, gap_warnings
from medablate.folder.records import EvaluationReport

REFERENCES = [{"name": "Kermany 2018", "metrics": {"accuracy": 0.928, "sensitivity": 0.932, "specificity": 0.901,
                                                   "auc": 0.968}, "test_set": "the official 624-image test split",
               "citation": "Cell 172:1122"},
              {"name": "Same-set model", "metrics": {"accuracy": 0.8, "auc": 0.9}, "test_set": "phantom test"}]


@pytest.fixture(scope="module")
def paper_study(tmp_path_factory: pytest.TempPathFactory, every_figure_format: None) -> Path:
    folder = tmp_path_factory.mktemp("paper")
    path = write_study(folder, seeds=[0, 1], training={"epochs": 3}, references=REFERENCES,
                       test_set_name="phantom test")
    study, _ = load_study(path)
    out = folder / "out"
    assert StudyRunner(study, out, Console(quiet=True)).run() == 0
    return out


def test_the_course_example_carries_the_published_references() -> None:
    study, _ = load_study(REPO / "examples" / "course-hw2.yaml")
    names = [r.name for r in study.references]
    assert any("Kermany" in n for n in names) and sum("MedMNIST" in n for n in names) == 3
    kermany = next(r for r in study.references if "Kermany" in r.name)
    assert kermany.metrics == {"accuracy": 0.928, "sensitivity": 0.932, "specificity": 0.901, "auc": 0.968}


def test_references_are_in_the_results_table_and_on_the_roc_figure(paper_study: Path) -> None:
    html = (paper_study / "report.html").read_text()
    section = html.split('id="references"', 1)[1].split("<h2", 1)[0]
    assert "Kermany 2018 (published)" in section and "base (seed ensemble)" in section
    assert "Kermany 2018 was measured on the official 624-image test split, not on this study" in section
    assert "Same-set model was measured" not in section  # the same test set: no warning
    roc = (paper_study / "figures" / "best-trial-roc.svg").read_text()
    assert "Kermany 2018 (published)" not in roc and "SYNTHETIC" in roc  # issue 24: no patients' results on phantoms


def test_the_gap_warning_names_the_metric_that_did_not_transfer() -> None:
    def section(specificity: float, ci: list[float], ece: float = 0.05) -> dict:
        return {"accuracy": 0.9, "roc_auc": 0.95, "sensitivity": 0.95, "specificity": specificity, "ece": ece,
                "confusion_matrix": [[40, 10], [5, 95]],
                "ci95": {"accuracy": [0.85, 0.95], "roc_auc": [0.9, 0.99], "sensitivity": [0.9, 0.99],
                         "specificity": ci}}
    evaluation = {"val": {"at_0.5": section(0.98, [0.9, 1.0]), "at_threshold": section(0.98, [0.9, 1.0])},
                  "test": {"at_0.5": section(0.81, [0.76, 0.86], ece=0.17),
                           "at_threshold": section(0.81, [0.76, 0.86], ece=0.17)}}
    found = gap_warnings("base", EvaluationReport.model_validate(evaluation))
    assert len(found) == 2
    assert "specificity 0.98 on validation, 0.81 on test (test 95% CI 0.76 to 0.86)" in found[0]
    assert "sensitivity" not in found[0] and "ECE 0.170" in found[1]
    same = {"val": evaluation["val"], "test": {k: section(0.97, [0.9, 1.0]) for k in ("at_0.5", "at_threshold")}}
    assert gap_warnings("base", EvaluationReport.model_validate(same)) == []
    rows = gap_rows(EvaluationReport.model_validate(evaluation))
    assert ["specificity", "validated threshold", 0.98, 0.81, "0.760 to 0.860"] in rows
    assert rows[-1][0] == "prevalence of the positive class"


def test_the_report_shows_the_gap_table_and_all_seeds_of_the_best_trial(paper_study: Path) -> None:
    html = (paper_study / "report.html").read_text()
    best = html.split('id="best-trial"', 1)[1].split('id="references"', 1)[0]
    assert "Validation vs test" in best and "prevalence of the positive class" in best
    assert "over all 2 finished seed(s)" in best and "the ensemble of its 2 seeds" in best
    assert "(2 seeds)" in (paper_study / "figures" / "best-trial-roc.svg").read_text()
    assert "mean (95% CI)" in html


def test_methods_numbers_come_from_study_json(paper_study: Path) -> None:
    info = json.loads((paper_study / "study.json").read_text())
    text = (paper_study / "methods.md").read_text()
    for split, words in (("train", "training"), ("val", "validation"), ("test", "test")):
        counts = info["data"]["counts"][split]
        assert f"{sum(counts.values())} {words} images (" + ", ".join(f"{n} {c}" for c, n in counts.items()) in text
    study = info["study"]
    assert f"for {study['training']['epochs']} epochs, batch size {study['training']['batch_size']}" in text
    assert f"trained with {len(study['seeds'])} seed(s)" in text
    assert f"({study['evaluation']['bootstrap_resamples']} resamples" in text
    assert f"torch {info['versions']['torch']}" in text
    with (paper_study / "comparisons.csv").open() as handle:
        sizes = {r["family_size"] for r in csv.DictReader(handle) if r["role"] == "primary"}
    size = sizes.pop() if len(sizes) == 1 else None
    assert size is not None and (f"over the {size} primary test" in text if size not in ("", "0") else
                                 "no test was made here" in text)  # issue 24: never "over the 0 primary tests"
    assert re.search(r"Results\. loss: CrossEntropyLoss vs BCEWithLogitsLoss", text)


def test_tables_tex_compiles_with_pdflatex(paper_study: Path, tmp_path: Path) -> None:
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (.ci/run installs Debian's texlive-latex-base and -recommended)")
    shutil.copy(paper_study / "tables.tex", tmp_path / "tables.tex")
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                        "\\input{tables.tex}\n\\end{document}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000
    assert "\\toprule" in (paper_study / "tables.tex").read_text()
