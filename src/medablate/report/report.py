"""The study report: DIR/report.html (one self-contained page) and DIR/report.md, from the run folder only."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

from medablate.analysis.compare import Analysis, analyse
from medablate.analysis.outcomes import BY_KEY, scaled
from medablate.analysis.transfer import gap_rows, gap_warnings
from medablate.config.schema import Study, flatten, to_plain
from medablate.core import atomic, faults, names
from medablate.core.children import Mapper, in_turn
from medablate.data.sources.phantom import FIGURE_NOTE
from medablate.execute.plan import Plan, Trial, level_label, load_study_folder, reference_trial
from medablate.folder import layout, rundir
from medablate.folder.records import Duplicates, EnsembleRecord, EvaluationReport, RunRecord, StudyInfo
from medablate.report import plots
from medablate.report.document import (
    Block,
    Figure,
    Heading,
    Image,
    Items,
    Paragraph,
    Table,
    render_html,
    render_markdown,
    slug,
)

PATIENT_ID = re.compile(r"(person\d+_|patient[-_]?\d+|IM-\d{4}-)", re.IGNORECASE)
METRIC_ROWS = ["accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv",
               "f1", "brier", "ece"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _number(text: Any) -> Any:
    try:
        return float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return text


def best_trial(plan: Plan, analysis: Analysis) -> Trial | None:
    """Chosen on validation (mean validation accuracy of the checkpoints used, over seeds), never on test."""
    scores = {row["trial"]: row["val_acc_mean"] for row in analysis.summary
              if row["seeds"] and not math.isnan(row["val_acc_mean"])}
    if not scores:
        return None
    best = max(scores, key=lambda t: scores[t])
    return next(t for t in plan.trials if t.id == best)


# ---------------------------------------------------------------- warnings


def warnings(out: Path, info: StudyInfo, study: Study, plan: Plan, results: list[dict[str, str]],
             best: EvaluationReport | None) -> list[str]:
    found = []
    if info.synthetic_data:
        found.append("The data is SYNTHETIC (procedurally generated phantom images, not patients): these numbers say "
                     "nothing about real chest X-rays.")
    if len(plan.replicates) < 3:
        found.append(f"{len(plan.seeds)} seed(s): differences between trials cannot be told from seed noise; use at "
                     "least 3 (5 is better) for verdicts.")
    bad = [r["run"] for r in results if r["status"] in ("diverged", "failed")]
    if bad:
        found.append(f"Diverged or failed runs: {', '.join(bad)}.")
    damaged = [f"{r['run']} ({rundir.damage_of(rundir.trial_dir(out, r['run']))})" for r in results
               if r["status"] == "damaged"]
    if damaged:
        found.append(f"Damaged runs, left out below (a file deleted, cut or overwritten after they finished; "
                     f"`medablate run` with the study redoes them): {'; '.join(damaged)}.")
    unfinished = [r["run"] for r in results if r["status"] not in ("done", "diverged", "failed", "ensemble", "damaged")]
    if unfinished:
        found.append(f"Not finished: {', '.join(unfinished)}; their numbers are missing below.")
    split = _read_csv(out / rundir.SPLIT_CSV)
    if study.data.split.group_by is None and any(PATIENT_ID.search(r["file"]) for r in split[:2000]):
        found.append("File names look like they carry patient ids, and the split is not grouped by patient: images of "
                     "one patient can sit on both sides and inflate validation results.")
    if "test" not in info.data.counts:
        found.append("This study has no test set: every figure comes from the validation split, which also chose the "
                     "checkpoints (and thresholds), so it overstates performance on new images. Hold one out with "
                     "data.split.test_fraction (patient-grouped with group_by) or add a test: section.")
    train = info.data.counts.get("train") or {}
    if train and max(train.values()) > 1.5 * max(1, min(train.values())):
        found.append(f"Class imbalance in training: {', '.join(f'{k} {v}' for k, v in train.items())}; accuracy "
                     "alone can mislead (see balanced accuracy, sensitivity and specificity).")
    if best:
        val = best.val.at_threshold if best.val else None
        test = best.test.at_threshold if best.test else None
        roc_auc, accuracy = (val.roc_auc or 0, val.accuracy or 0) if val else (0, 0)
        if roc_auc >= 0.99 or (test and abs(accuracy - (test.accuracy or 0)) >= 0.05):
            found.append("Validation is near-perfect or far from test for the best trial: checkpoints and thresholds "
                         "chosen on validation may not transfer to new data.")
    return found


# ---------------------------------------------------------------- sections


def summary_section(out: Path, info: StudyInfo, plan: Plan, results: list[dict[str, str]],
                    found: list[str]) -> list[Block]:
    machine, data = info.machine, info.data
    seconds = sum(float(r["seconds"]) for r in results if r.get("seconds"))
    blocks: list[Block] = [Heading(2, "Summary", "summary")]
    if found:
        blocks.append(Items(found, "warning"))
    threads = machine.torch_threads if machine.torch_threads is not None else "?"
    facts: list[list[Any]] = [
        ["study", info.name], ["started", info.started], ["finished", info.finished],
        ["machine", f"{machine.platform or '?'}; {machine.device or '?'}; {threads} threads"
                    + (f"; {machine.gpu}" if machine.gpu else "")],
        ["versions", ", ".join(f"{k} {v}" for k, v in info.versions.items() if v)],
        ["training time (all runs)", f"{seconds / 60:.1f} min"],
        ["trials x seeds" + (" x folds" if plan.folds else ""),
         f"{len(plan.trials)} x {len(plan.seeds)}" + (f" x {len(plan.folds)}" if plan.folds else "")
         + f" = {len(plan.runs)} runs"],
        ["data", f"{data.source} ({'synthetic' if info.synthetic_data else 'real'}), classes "
                 f"{', '.join(data.class_names)}, images {data.image_shape or None}"],
        ["patients per split", ", ".join(f"{k} {v}" for k, v in data.patients.items()) if data.patients
         else "not known (the split is not grouped by patient)"],
        ["duplicates removed", _duplicates(data.duplicates)],
        ["test set", data.test_from or ("none" if "test" not in data.counts else "–")],
        ["intensity", data.intensity or "8-bit (Pillow's convert)"],
        ["data fingerprint", info.data_fingerprint], ["command", info.command or "–"]]
    blocks.append(Table(["", "value"], facts))
    names = data.class_names
    blocks.append(Table(["split", *names, "total"], [[split, *(c.get(n) for n in names), sum(c.values())]
                                                     for split, c in data.counts.items()]))
    return blocks


def _duplicates(found: Duplicates | None) -> str:
    if not found:
        return "not checked (data.duplicates: keep)"
    removed = ", ".join(f"{k} {v}" for k, v in found.removed.items())
    return f"{sum(found.removed.values())} removed ({removed}); {found.duplicate_groups} images occur more than once"


def comparison_section(out: Path, study: Study, plan: Plan, analysis: Analysis, comparison: Any) -> list[Block]:
    keys = list(comparison.vary)
    trials = plan.trials_of(comparison.name)
    reference = reference_trial(study, plan, comparison)
    stem = Path(layout.FIGURES) / names.safe_name(comparison.name)
    blocks: list[Block] = [Heading(2, f"Comparison: {comparison.name}", f"comparison-{slug(comparison.name)}"),
                           Paragraph(f"Varied: {', '.join(keys)}; reference level: {level_label(reference, keys)}.")]
    blocks.append(Figure(stem, "Accuracy and loss per epoch: validation solid (mean with 95% band over seeds), "
                               "train dotted."))
    flats = {t.id: flatten(to_plain(t.config)) for t in trials}
    differing = sorted({k for f in flats.values() for k in f if any(g.get(k) != f.get(k) for g in flats.values())})
    blocks += [Heading(3, "Hyperparameters"),
               Table(["level", *differing], [[level_label(t, keys), *(flats[t.id].get(k) for k in differing)] for t in trials]),
               Table(["shared", "value"], [[k, v] for k, v in flats[reference.id].items() if k not in differing])]
    summary = {row["trial"]: row for row in analysis.summary}
    at_decision = [c for c in ("test_sensitivity", "test_specificity")
                   if any(math.isfinite(summary[t.id][f"{c}_mean"]) for t in trials)]
    columns = ["test_acc", *at_decision, "val_acc", "highest_val_acc", "convergence_epoch", "stability", "best_epoch"]
    header = ["level", "seeds"] + [f"{BY_KEY[c].label}, mean (95% CI)" for c in columns]
    rows = []
    for trial in trials:
        row = summary[trial.id]
        rows.append([level_label(trial, keys), row["seeds"]] + [
            _mean_ci(BY_KEY[c], row[f"{c}_mean"], row[f"{c}_ci_low"], row[f"{c}_ci_high"]) for c in columns])
    blocks += [Heading(3, "Results"), Table(header, rows)]
    blocks.append(Figure(Path(f"{stem}-outcomes"), "Each outcome per level; every dot is one seed."))
    if any((out / f"{stem}-roc{suffix}").exists() for suffix in plots.FORMATS):
        blocks.append(Figure(Path(f"{stem}-roc"), "ROC curve of each level (first finished seed)."))
    blocks += robustness_blocks(out, stem, trials, keys, summary)
    sentences = analysis.sentences.get(comparison.name)
    blocks += [Heading(3, "Conclusions"),
               Items(sentences) if sentences else Paragraph("Not computed: no level has finished runs to compare.", "note"),
               Paragraph(units_paragraph(study, analysis), "note")]
    return blocks


def robustness_blocks(out: Path, stem: Path, trials: list[Trial], keys: list[str],
                      summary: dict[str, dict[str, Any]]) -> list[Block]:
    """The comparison under the robustness panel (evaluation.shifts): its figure and robust_acc / robust_auc."""
    if not any((out / f"{stem}-robustness{suffix}").exists() for suffix in plots.FORMATS):
        return []
    columns = ["test_acc", "robust_acc", "test_auc", "robust_auc"]
    rows = [[level_label(t, keys), summary[t.id]["seeds"]] + [
        _mean_ci(BY_KEY[c], summary[t.id][f"{c}_mean"], summary[t.id][f"{c}_ci_low"], summary[t.id][f"{c}_ci_high"])
        for c in columns] for t in trials]
    return [Heading(3, "Robustness"),
            Paragraph("Each level scored on the same shifted copies of the test images (validation where the study "
                      "has none): brightness, contrast, gamma, blur, noise, resolution, JPEG, zoom and rotation as "
                      "another site's scanner, exposure or processing would change them (evaluation.shifts), at "
                      "severities 1-5 (0: the clean images), at each run's own validated threshold. A robust "
                      "outcome is the mean over every shift and severity above 0; the study's "
                      f"{layout.ROBUSTNESS_CSV} has every number with its interval over seeds, each run's its "
                      "bootstrap CIs."),
            Figure(Path(f"{stem}-robustness"), "Accuracy, ROC AUC, and the threshold's sensitivity (solid) and "
                                               "specificity (dashed) against severity, per shift (mean and 95% "
                                               "band over seeds)."),
            Table(["level", "seeds"] + [f"{BY_KEY[c].label}, mean (95% CI)" for c in columns], rows)]


def units_paragraph(study: Study, analysis: Analysis) -> str:
    """What each verdict's p-value is over: its unit of replication, its family, and where its calibration is shown."""
    sizes = {r["family"]: r["family_size"] for r in analysis.rows if r.get("family")}
    family = "all tests" if study.analysis.family == "all" else "primary tests"
    test = "paired t-test" if study.analysis.test == "t" else "Wilcoxon signed-rank test"
    kfold = study.data.split.method == "kfold"
    unit = (f"the seed (a {test} over seed pairs" if not kfold else
            "the fold (the corrected resampled t-test of Nadeau & Bengio over fold pairs, each fold's runs averaged "
            "over seeds: the folds share training images, which a plain t-test would ignore")
    calibration = ("on A/A studies it said significant in under 1% of cases, not 5%: conservative, benchmarks/"
                   "null_calibration.py --kfold" if kfold else "on A/A studies it said significant in "
                   f"{'about' if study.analysis.test == 't' else 'at most'} 5% of cases, benchmarks/null_calibration.py")
    return (f"Units: a verdict compares configurations; its unit is {unit}, Holm over the study's "
            f"{sizes.get(family, 0)} {family}; {calibration}). McNemar and DeLong compare these trained models on "
            "these test images (unit: the image): they give no verdict on the configurations.")


def _mean_ci(outcome: Any, mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "not computed"
    digits = 1 if outcome.unit in ("points", "epochs", "s") else 4
    spread = "" if math.isnan(low) else f" ({scaled(outcome, low):.{digits}f} to {scaled(outcome, high):.{digits}f})"
    return f"{scaled(outcome, mean):.{digits}f}{spread}"


def best_section(out: Path, study: Study, trial: Trial | None, plan: Plan, test_set: str, drawings: plots.Drawings,
                 synthetic: bool = False) -> tuple[list[Block], EvaluationReport | None]:
    """The best trial over all its finished seeds: curves with a band, ROC with a band and the published
    references, the seed ensemble's metrics and confusion matrix (one seed's when it has only one); its figures
    are added to `drawings`."""
    blocks: list[Block] = [Heading(2, "Best trial", "best-trial")]
    run_dirs = [d for d in (plan.run_dirs(out, trial) if trial else []) if rundir.run_status(d) == "done"]
    if trial is None or not run_dirs:
        return blocks + [Paragraph("Not computed: no finished trial yet.", "note")], None
    ensemble = rundir.read_ensemble(out, trial.id) if len(run_dirs) > 1 else None
    metrics: EnsembleRecord | RunRecord | None = ensemble or rundir.metrics_or_none(run_dirs[0])
    evaluation = metrics.evaluation if metrics else None
    shown_as = (f"the ensemble of its {len(run_dirs)} seeds (mean of their probabilities)" if ensemble
                else f"its one finished seed, {run_dirs[0].name}")
    blocks.append(Paragraph(f"{trial.id}, chosen by the mean validation accuracy of its checkpoints over seeds (never "
                            f"by test); curves and ROC over all {len(run_dirs)} finished seed(s); metrics of "
                            f"{shown_as}."))
    blocks.append(Table(["key", "value"], [[k, v] for k, v in flatten(to_plain(trial.config)).items()]))
    stem = Path(layout.FIGURES) / "best-trial"
    note = FIGURE_NOTE if synthetic else ""
    histories = [rundir.read_history(d) for d in run_dirs]
    if any(histories):
        drawings.add(plots.overlay, out / f"{stem}-curves", {trial.id: histories},
                     f"best trial {trial.id}: {len(run_dirs)} seed(s)", note)
        blocks.append(Figure(Path(f"{stem}-curves"), "Accuracy and loss per epoch: validation solid (mean with 95% "
                                                     "band over seeds), train dotted."))
    blocks += _metric_tables(evaluation)
    positive = evaluation.positive_class if evaluation else None
    per_split = {split: [c[split] for d in run_dirs if split in (c := rundir.positive_curves(d, positive, (split,)))]
                 for split in ("val", "test")}
    marked = [r for r in study.references if "sensitivity" in r.metrics and "specificity" in r.metrics]
    # published results are of real patients: never drawn beside results on synthetic images
    points = [] if synthetic else [(r.name, r.metrics["sensitivity"], r.metrics["specificity"]) for r in marked]
    if any(per_split.values()):
        drawings.add(plots.roc_band, out / f"{stem}-roc", {k: v for k, v in per_split.items() if v},
                     f"best trial {trial.id}: ROC over seeds", points, note)
        if points:
            caption = (f"; markers: published references ({', '.join(name for name, _, _ in points)}), measured on "
                       f"{', '.join(sorted({r.test_set for r in marked}))}; this study's test set: {test_set}")
        elif synthetic and marked:
            caption = ("; published references are not drawn: they were measured on real patients, and this study's "
                       "images are synthetic")
        else:
            caption = ""
        blocks.append(Figure(Path(f"{stem}-roc"), f"ROC per split: mean over seeds with a 95% band{caption}."))
    shown = "test" if evaluation and evaluation.test else "val"
    section = (evaluation.test if shown == "test" else evaluation.val) if evaluation else None
    if section:
        scores = section.at_threshold or section.at_rule
        names = _class_names(metrics) or ["0", "1"]
        drawings.add(plots.confusion, out / f"{stem}-confusion", scores.confusion_matrix, names,
                     f"{shown} confusion matrix ({'ensemble' if ensemble else run_dirs[0].name})", note)
        blocks.append(Figure(Path(f"{stem}-confusion"), f"Confusion matrix on {shown} (rows: true class), "
                                                        f"{'seed ensemble' if ensemble else 'one seed'}."))
    if evaluation and evaluation.test:
        blocks += [Heading(3, "Validation vs test"),
                   Paragraph("Would the validation split have predicted the test result? Each metric at 0.5 and at the "
                             "threshold chosen on validation, and the class prevalence of each split."),
                   Table(["metric", "rule", "validation", "test", "test 95% CI"], gap_rows(evaluation))]
        curves = {s: per_split[s][0] for s in ("val", "test") if per_split.get(s)}
        if curves:
            drawings.add(plots.reliability, out / f"{stem}-reliability", curves,
                         f"best trial {trial.id}: calibration (first seed)", 10, note)
            blocks.append(Figure(Path(f"{stem}-reliability"), "Reliability: observed frequency of the positive class "
                                                              "per bin of predicted probability (first seed)."))
    examples = rundir.read_examples(run_dirs[0])
    if examples:
        method = examples[0].saliency  # examples.json from before issue 10 does not say
        blocks.append(Heading(3, f"Test images with saliency: {method}" if method else "Test images with saliency"))
        relative = run_dirs[0].relative_to(out)
        blocks += [Image(relative / e.file, f"{e.kind}: {e.image} (true {e.label}, predicted "
                                            f"{e.decision}, P({e.decision}) {e.probability:.3f})")
                   for e in examples]
    else:
        blocks.append(Paragraph("Example images: not computed (they need a test set).", "note"))
    return blocks, evaluation


def references_section(out: Path, study: Study, plan: Plan, analysis: Analysis, test_set: str) -> list[Block]:
    """The study's trials (seed ensemble, else the mean over seeds, on test) beside published results."""
    if not study.references:
        return []
    header = ["", "accuracy", "AUC", "sensitivity", "specificity", "test set"]
    rows: list[list[Any]] = []
    for trial in plan.trials:
        record = rundir.read_ensemble(out, trial.id)
        section = record.evaluation.test.at_threshold if record and record.evaluation.test else None
        if section:
            rows.append([f"{trial.id} (seed ensemble)", section.accuracy, section.roc_auc,
                         section.sensitivity, section.specificity, test_set])
        else:
            row = next(r for r in analysis.summary if r["trial"] == trial.id)
            rows.append([f"{trial.id} (mean over seeds)", row.get("test_acc_mean"), None, None, None, test_set])
    same = []
    for reference in study.references:
        values = reference.metrics
        rows.append([f"{reference.name} (published)", values.get("accuracy"), values.get("auc"),
                     values.get("sensitivity"), values.get("specificity"), reference.test_set])
        same.append(study.test_set_name is not None and reference.test_set == study.test_set_name)
    notes = [f"{r.name} was measured on {r.test_set}, not on this study's test set ({test_set}): the numbers are not "
             "directly comparable." for r, s in zip(study.references, same, strict=False) if not s]
    cited = [f"{r.name}: {r.citation}" for r in study.references if r.citation]
    blocks: list[Block] = [Heading(2, "Published references", "references"),
                           Paragraph("This study's trials on its test set (seed ensembles at their validated threshold, "
                                     "or the mean test accuracy over seeds) beside published results."),
                           Table(header, rows)]
    return blocks + ([Items(notes, "warning")] if notes else []) + ([Items(cited)] if cited else [])


def test_set_words(info: StudyInfo, study: Study) -> str:
    if study.test_set_name:
        return study.test_set_name
    count = sum(info.data.counts.get("test", {}).values())
    return f"{count} images, {info.data.test_from or 'none'}" if count else "none"


def _class_names(record: EnsembleRecord | RunRecord | None) -> list[str]:
    if isinstance(record, EnsembleRecord):
        return record.class_names
    return record.test.class_names if record and record.test else []


def _metric_tables(evaluation: EvaluationReport | None) -> list[Block]:
    if not evaluation:
        return [Paragraph("Clinical metrics: not computed for this run.", "note")]
    threshold = evaluation.threshold
    blocks: list[Block] = [Heading(3, "Validation and test metrics")]
    if threshold:
        chosen = "chosen on validation and applied unchanged to test" if not isinstance(threshold.rule, float) \
            else "the same rule on validation and test (not chosen on data)"
        blocks.append(Paragraph(f"Threshold {threshold.value:.4g}: {threshold.description}; {chosen}."))
    at = "at_threshold" if threshold else "at_0.5"
    val = evaluation.val.at(at) if evaluation.val else None
    test = evaluation.test.at(at) if evaluation.test else None
    header = ["metric", "validation", "test", "test 95% CI"]
    rows = []
    for key in METRIC_ROWS:
        ci = (test.interval(key) if test else None) or [None, None]
        rows.append([key, val.metric(key) if val else None, test.metric(key) if test else "not computed (no test set)",
                     f"{ci[0]:.3f} to {ci[1]:.3f}" if ci[0] is not None else "–"])
    return blocks + [Table(header, rows)]


def trials_section(out: Path, plan: Plan, results: list[dict[str, str]]) -> list[Block]:
    columns = ["run", "trial", "seed", "status", *plan.varied_keys, "val_acc", "best_epoch", "highest_val_acc", "test_acc",
               "test_loss", "seconds"]
    rows = [[_number(r.get(c)) if c not in ("run", "trial", "status", *plan.varied_keys) else r.get(c) for c in columns]
            for r in results]
    files = [Path(layout.TRIALS) / r["run"] / layout.METRICS_JSON for r in results]
    links = [str(file) if (out / file).exists() else "" for file in files]
    return [Heading(2, "All trials", "all-trials"),
            Paragraph(f"Click a column header to sort. Each run links to its {layout.METRICS_JSON}; its folder holds "
                      "its config, history, checkpoints, predictions and figures."),
            Table(columns, rows, sortable=True, links={0: links}, element_id="trials")]


def transfer_warnings(out: Path, plan: Plan) -> list[str]:
    """Validation-test gaps and poor calibration, per trial (its seed ensemble, else its first finished seed)."""
    found = []
    for trial in plan.trials:
        record: EnsembleRecord | RunRecord | None = rundir.read_ensemble(out, trial.id)
        if not record:
            record = next((m for d in plan.run_dirs(out, trial) if (m := rundir.finished_metrics(d))), None)
        found += gap_warnings(trial.id, record.evaluation if record else None)
    return found


def methods_links(out: Path) -> list[Block]:
    if not (out / layout.METHODS_MD).exists():
        return []
    return [Heading(2, "For the paper", "paper"),
            Paragraph(f"{layout.METHODS_MD}: a methods paragraph with every number from this folder; {layout.TABLES_TEX}: "
                      "the results and comparison tables as LaTeX (booktabs)."),
            Items([layout.METHODS_MD, layout.TABLES_TEX])]


def build_report(out: Path, analysis: Analysis | None = None, mapper: Mapper = in_turn) -> tuple[Path, Path]:
    """Write report.html and report.md; pass the analysis when the caller has just computed it (and a study's
    helper processes as `mapper`, to draw the best trial's figures at once)."""
    out = Path(out)
    study, plan, info = load_study_folder(out)
    analysis = analysis or analyse(out)
    results = _read_csv(out / rundir.RESULTS_CSV)
    trial = best_trial(plan, analysis)
    test_set = test_set_words(info, study)
    drawings = plots.Drawings()
    best_blocks, best_eval = best_section(out, study, trial, plan, test_set, drawings, info.synthetic_data)
    drawings.draw(mapper)
    found = warnings(out, info, study, plan, results, best_eval) + transfer_warnings(out, plan)
    blocks: list[Block] = [Heading(1, f"medablate study: {study.name}")]
    blocks += summary_section(out, info, plan, results, found)
    for comparison in study.comparisons:
        blocks += comparison_section(out, study, plan, analysis, comparison)
    blocks += best_blocks + references_section(out, study, plan, analysis, test_set)
    blocks += trials_section(out, plan, results) + methods_links(out)
    html_path, md_path = out / layout.REPORT_HTML, out / layout.REPORT_MD
    faults.point("report")
    atomic.write_text(html_path, render_html(f"medablate: {study.name}", blocks, out))
    atomic.write_text(md_path, render_markdown(blocks))
    return html_path, md_path
