"""The study report in a real headless browser (Debian's chromium): loads cleanly, offline, sortable, escaped."""

from __future__ import annotations

import re
import time
import shutil
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from medablate.config.schema import load_study
from medablate.study.runner import StudyRunner

from conftest import write_study

INJECTED = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, every_figure_format: None) -> Path:
    folder = tmp_path_factory.mktemp("report")
    comparisons = [{"name": INJECTED, "vary": {"training.loss": ["BCEWithLogitsLoss", "CrossEntropyLoss"]}},
                   {"name": "activation", "vary": {"model.activation": ["ReLU", "Tanh", "GELU"]},
                    "primary": "robust_acc"}]
    panel = {"threshold": "youden", "shifts": ["noise", {"name": "contrast", "severities": [0, 4], "only_class": "normal"}]}
    path = write_study(folder, seeds=[0, 1], comparisons=comparisons, training={"epochs": 3, "batch_size": 16},
                       evaluation=panel)
    study, _ = load_study(path)
    StudyRunner(study, folder / "out", Console(quiet=True)).run()
    return folder / "out"


def test_files_and_figure_formats(report: Path) -> None:
    assert (report / "report.html").exists() and (report / "report.md").exists()
    for stem in ("activation", "activation-outcomes", "best-trial-curves", "best-trial-roc"):
        for suffix in (".png", ".pdf", ".svg"):
            assert (report / "figures" / f"{stem}{suffix}").exists(), stem + suffix


def test_the_robustness_panel_of_a_study(report: Path) -> None:
    """evaluation.shifts end to end: each run's table, the trials' table, the tested outcome, the report's section."""
    import csv
    import json

    assert (report / "figures" / "activation-robustness.svg").exists()
    for run in sorted((report / "trials").iterdir()):
        rows = list(csv.DictReader((run / "robustness.csv").open()))
        assert [(r["shift"], r["severity"]) for r in rows] == [("clean", "0")] + [("noise", str(k)) for k in range(1, 6)] \
            + [("contrast (normal only)", "0"), ("contrast (normal only)", "4")]
        metrics = json.loads((run / "metrics.json").read_text())
        clean = metrics["evaluation"]["test"]["at_threshold"]  # severity 0 is the clean score, computed again
        for row in (rows[0], rows[6]):
            assert float(row["accuracy"]) == pytest.approx(clean["accuracy"], abs=1e-12)
            assert float(row["roc_auc"]) == pytest.approx(clean["roc_auc"], abs=1e-12)
        shifted = [float(r["accuracy"]) for r in rows if r["severity"] != "0"]
        assert metrics["robustness"]["robust_acc"] == pytest.approx(sum(shifted) / len(shifted))
        assert metrics["robustness"]["split"] == "test" and metrics["threshold"] is not None
    trials = list(csv.DictReader((report / "robustness.csv").open()))
    assert len(trials) == 4 * 8 and {r["runs"] for r in trials} == {"2"}
    tested = [r for r in csv.DictReader((report / "comparisons.csv").open()) if r["outcome"] == "robust_acc"]
    assert {r["role"] for r in tested if r["comparison"] == "activation"} == {"primary"} and len(tested) == 3
    page = (report / "report.md").read_text()
    assert "### Robustness" in page and "accuracy under shift (mean over the robustness panel)" in page


def test_html_is_self_contained_and_escaped(report: Path) -> None:
    page = (report / "report.html").read_text()
    assert INJECTED not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert "<svg" in page and "data:image/png;base64," in page
    # issue 22: each comparison says what its verdicts are over (the seed) and what McNemar and DeLong are over
    assert "its unit is the seed" in page and "(unit: the image)" in page


def test_markdown_has_the_same_tables(report: Path) -> None:
    html_tables = re.findall(r"<thead><tr>(.*?)</tr></thead>", (report / "report.html").read_text().replace("<wbr>", ""))
    rendered = MarkdownIt("commonmark").enable("table").render((report / "report.md").read_text())
    md_tables = re.findall(r"<thead>\s*<tr>(.*?)</tr>\s*</thead>", rendered, re.S)
    assert len(md_tables) == len(html_tables) > 5
    strip = lambda row: re.findall(r"<th[^>]*>(.*?)</th>", row, re.S)  # noqa: E731
    assert [strip(t) for t in md_tables] == [strip(t) for t in html_tables]
    assert "<script>" not in rendered


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_in_a_headless_browser(report: Path) -> None:
    from playwright.sync_api import sync_playwright

    errors, requests, dialogs = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto((report / "report.html").as_uri())
        page.wait_for_load_state("load")

        sizes = page.eval_on_selector_all("figure svg, figure img",
                                          "els => els.map(e => [e.getBoundingClientRect().width, e.getBoundingClientRect().height])")
        assert len(sizes) >= 8 and all(w > 50 and h > 50 for w, h in sizes)
        assert INJECTED in page.inner_text("body")

        def column(index: int) -> list[str]:
            return page.eval_on_selector_all("#trials tbody tr", f"rows => rows.map(r => r.cells[{index}].getAttribute('data-value'))")

        header = page.eval_on_selector_all("#trials th", "ths => ths.map(t => t.textContent)")
        best = header.index("val_acc")
        page.click(f"#trials th:nth-child({best + 1})")
        ascending = [float(v) for v in column(best)]
        assert ascending == sorted(ascending)
        page.click(f"#trials th:nth-child({best + 1})")
        assert [float(v) for v in column(best)] == sorted(ascending, reverse=True)
        page.click("#trials th:nth-child(1)")
        names = column(0)
        assert page.evaluate("names => names.every((n, i) => i === 0 || names[i - 1].localeCompare(n) <= 0)", names)
        assert len(set(names)) == len(names)
        browser.close()
    assert errors == []
    assert dialogs == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
@pytest.mark.parametrize("width", [1400, 800])
def test_the_report_fits_the_window_without_horizontal_scroll(report: Path, width: int) -> None:
    """At 1400 px every table fits its column; below 900 px the wide tables stack (README, "The report")."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto((report / "report.html").as_uri())
        page.wait_for_load_state("load")
        page_width = page.evaluate("document.documentElement.scrollWidth")
        trials = page.evaluate("[document.querySelector('#trials').getBoundingClientRect().width, "
                               "document.querySelector('#trials').parentElement.clientWidth]")
        widest = page.evaluate("Math.max(...[...document.querySelectorAll('table')].map("
                               "t => t.getBoundingClientRect().width - t.parentElement.clientWidth))")
        browser.close()
    assert page_width <= width, f"the page is {page_width} px wide in a {width} px window"
    assert trials[0] <= trials[1] + 1, f"All trials is {trials[0]:.0f} px wide in a {trials[1]} px column"
    assert widest <= 1, f"a table is {widest:.0f} px wider than its column"


def test_tensorboard_events_with_scalars_and_hparams(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    study, _ = load_study(write_study(tmp_path, comparisons=[], training={"epochs": 2, "batch_size": 16, "tensorboard": True}))
    StudyRunner(study, tmp_path / "out", Console(quiet=True)).run()
    logs = tmp_path / "out" / "trials" / "base-seed0" / "tensorboard"
    events = EventAccumulator(str(logs))
    events.Reload()
    assert {"val_acc", "val_loss", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val_acc")] == [1, 2]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_tensorboard_missing_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from medablate.errors import UserError

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith("tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    study, _ = load_study(write_study(tmp_path, training={"epochs": 1, "tensorboard": True}))
    with pytest.raises(UserError, match="pip install"):
        StudyRunner(study, tmp_path / "out", Console(quiet=True))


def test_figure_formats_can_be_narrowed_and_leave_no_stale_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    from medablate.errors import UserError
    from medablate.report import plots

    for formats, expected in (("png,pdf,svg", {".png", ".pdf", ".svg"}), ("svg", {".png", ".svg"}), ("png", {".png"})):
        monkeypatch.setenv("MEDABLATE_FIGURE_FORMATS", formats)
        plots.save(plt.figure(), tmp_path / "figure")
        assert {p.suffix for p in tmp_path.iterdir()} == expected, formats  # none left from the call before
    monkeypatch.setenv("MEDABLATE_FIGURE_FORMATS", "png,gif")
    with pytest.raises(UserError, match="gif is not a figure format"):
        plots.save(plt.figure(), tmp_path / "figure")


def test_a_run_is_drawn_while_others_train_once_its_process_lets_it_go(report: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher hands a run to the helpers only when its record is written and its claim released, once; a run of
    another image size is left to the drawing after the runs."""
    from concurrent.futures import ThreadPoolExecutor

    from medablate.folder import claims
    from medablate.report import run_figures

    monkeypatch.setattr(run_figures.Watcher, "SECONDS", 0.05)
    runs = []
    for name, size in (("base-seed0", 32), ("base-seed1", 64)):
        run_dir = shutil.copytree(report / "trials" / name, tmp_path / name)
        (run_dir / "figures.json").unlink()
        (run_dir / "curves.png").unlink()
        runs.append((run_dir, name, size))
    claim = claims.try_claim(runs[0][0])
    assert claim is not None
    with ThreadPoolExecutor(1) as pool, run_figures.Helpers(pool, 32).watch(runs, "") as watcher:
        time.sleep(0.3)
        assert not watcher.handed  # its process still holds it (its files may still be being written)
        claims.release(claim)
        deadline = time.monotonic() + 10
        while not watcher.handed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(watcher.handed) == [runs[0][0]]
    assert run_figures.current(runs[0][0]) and (runs[0][0] / "curves.png").exists()
    assert not run_figures.current(runs[1][0]) and not (runs[1][0] / "curves.png").exists()


def test_the_analysis_mapped_over_processes_writes_what_it_writes_in_turn(report: Path, tmp_path: Path) -> None:
    """Ensembles and figures mapped over a pool (a study's helpers) give the same tables, figures and report."""
    from medablate.core import children
    from medablate.report.outputs import write_outputs
    from medablate.report.report import build_report

    out = shutil.copytree(report, tmp_path / "out")
    for path in [*(out / "ensembles").rglob("*"), *(out / "figures").glob("*.png")]:
        if path.is_file():
            path.unlink()
    with children.process_pool(2) as pool:
        build_report(out, write_outputs(out, children.mapper_of(pool)), children.mapper_of(pool))
    for name in ("summary.csv", "comparisons.csv", "tables.md", "methods.md", "report.md"):
        assert (out / name).read_text() == (report / name).read_text(), name
    for path in [*(report / "ensembles").rglob("*.*"), *(report / "figures").glob("*.png")]:
        assert (out / path.relative_to(report)).read_bytes() == path.read_bytes(), path
    assert len(list((out / "figures").glob("*.png"))) == len(list((report / "figures").glob("*.png")))
