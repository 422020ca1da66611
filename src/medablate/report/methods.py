"""From study to paper: DIR/methods.md (a methods paragraph) and DIR/tables.tex (booktabs tables).

Every number comes from the run folder (study.json, summary.csv's rows, comparisons.csv's rows, the runs'
metrics); nothing is typed in by hand, so the text stays true when the study is rerun or extended.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medablate.analysis.outcomes import BY_KEY, scaled
from medablate.config.schema import Study
from medablate.core import atomic
from medablate.execute.plan import Plan, expand, read_study, short_value
from medablate.folder import layout
from medablate.folder.records import StudyInfo
from medablate.scoring import thresholds

if TYPE_CHECKING:
    from medablate.analysis.compare import Analysis

SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test", "cv": "cross-validation"}


def _counts(counts: dict[str, dict[str, int]]) -> str:
    parts = []
    for split, per_class in counts.items():
        detail = ", ".join(f"{n} {name}" for name, n in per_class.items())
        parts.append(f"{sum(per_class.values())} {SPLIT_WORDS.get(split, split)} images ({detail})")
    return "; ".join(parts)


def _method(method: Any, study: Study) -> str:
    split = study.data.split
    if method != "kfold":
        return method
    repeats = f", repeated {split.repeats} times with reshuffled folds" if split.repeats > 1 else ""
    return (f"stratified {split.folds}-fold cross-validation{repeats}: each fold's models trained on the other folds "
            "and validated on it")


def _model(study: Study) -> str:
    model = study.model
    start = f", starting from the weights in {model.weights.name}" if model.weights else ", trained from scratch"
    return model.describe(start)


def _named(config: Any) -> str:
    if config is None:
        return "none"
    arguments = ", ".join(f"{k} {v}" for k, v in config.kwargs.items())
    return f"{config.name}" + (f" ({arguments})" if arguments else "")


def data_paragraph(info: StudyInfo, study: Study) -> str:
    data = info.data
    split = data.split_used or {}
    method = split.get("method", study.data.split.method)
    grouped = "grouped by patient" if (split.get("group_by") or study.data.split.group_by) else "not grouped by patient"
    patients = data.patients
    duplicates = data.duplicates
    removed = sum(duplicates.removed.values()) if duplicates else 0
    shape = data.image_shape
    intensity = data.intensity if "intensity" in data.model_fields_set else "by bit depth"
    text = (f"Data. {'Synthetic phantom images (not patients)' if info.synthetic_data else 'Images'} from the "
            f"{data.source} source, classes {', '.join(data.class_names)}: "
            f"{_counts(data.counts)}. The split ({_method(method, study)}, {grouped}) was fixed for the whole study")
    if patients:
        text += " (patients: " + ", ".join(f"{n} {SPLIT_WORDS.get(s, s)}" for s, n in patients.items()) + ")"
    text += f"; the test set is {data.test_from or 'absent'}. "
    if duplicates:
        text += (f"Exact duplicates (identical decoded pixels) were removed from later splits: {removed} images "
                 f"({duplicates.duplicate_groups} images occurred more than once). ")
    augment = study.data.augment
    colour = "kept as three RGB channels" if study.data.channels == 3 else "converted to one grey channel"
    standardised = {"none": "", "image": ", each standardised to mean 0 and SD 1",
                    "dataset": ", standardised with the training split's mean and SD"}[study.data.normalize]
    sizes = sorted({int(v) for c in study.comparisons for v in c.vary.get("data.image_size", [])}
                   - {study.data.image_size})
    others = (f" ({', '.join(f'{s}x{s}' for s in sizes)} in the trials that vary data.image_size: the same images, "
              "loaded again at that size, in the same split)" if sizes else "")
    text += (f"Images were {colour} (intensity {intensity}), "
             f"resized to {shape[0] if shape else '?'}x{shape[1] if len(shape) > 1 else '?'} pixels{others} and scaled to "
             f"[0, 1]{standardised}; training-time augmentation: "
             + (", ".join(f"{k} {v}" for k, v in augment.model_dump().items() if v and k != "crop_ratio")
                if augment.enabled else "none")
             + (f"; test-time augmentation: {study.evaluation.tta} (probabilities averaged over the views)"
                if study.evaluation.tta != "none" else "") + ".")
    return text


def training_paragraph(info: StudyInfo, study: Study, plan: Plan, results: list[dict[str, Any]]) -> str:
    training = study.training
    machine = info.machine
    threads = machine.torch_threads if machine.torch_threads is not None else "?"
    seconds = sum(float(r["seconds"]) for r in results if r.get("seconds") not in (None, ""))
    varied = "; ".join(f"{c.name}: {', '.join(k for k in c.vary)} in "
                       f"{{{', '.join(short_value(v, values) for values in c.vary.values() for v in values)}}}"
                       for c in study.comparisons)
    return (f"Models and training. The base model was {_model(study)}, trained with {training.loss} for "
            f"{training.epochs} epochs, batch size {training.batch_size}, optimizer {_named(training.optimizer)}, "
            f"learning-rate schedule {_named(training.scheduler)}, class weights {training.class_weights}, sampler "
            f"{training.sampler}{_choices(training)}; the checkpoint used is the epoch with the best "
            f"{training.monitor}. "
            f"Comparisons ({varied or 'none'}) gave {len(plan.trials)} distinct trials, each trained with "
            f"{len(plan.seeds)} seed(s) ({', '.join(map(str, plan.seeds))})"
            f"{f' on each of {len(plan.folds)} folds' if plan.folds else ''}: {len(plan.runs)} runs, "
            f"{f'{seconds / 60:.1f} minutes' if seconds >= 60 else f'{seconds:.1f} s'} of training on "
            f"{machine.device or '?'} "
            f"({machine.platform or '?'}, {threads} threads).")


def statistics_paragraph(study: Study, analysis: Analysis) -> str:
    analysis_config = study.analysis
    test = "paired t-test" if analysis_config.test == "t" else "Wilcoxon signed-rank test"
    sizes = {r["family"]: r["family_size"] for r in analysis.rows if r.get("family")}
    tested = sizes.get("all tests" if study.analysis.family == "all" else "primary tests", 0)
    if not tested:
        family = ("Holm's method; no test was made here, since a test needs at least 3 seeds per level (every "
                  "difference is reported with its interval and no verdict)")
    elif study.analysis.family == "all":
        family = f"Holm's method over all {tested} tests of the study"
    else:
        family = (f"Holm's method over the {tested} primary test{'s' if tested > 1 else ''} (one per level and "
                  "comparison); every other outcome is reported as exploratory, with its raw p-value and no verdict")
    threshold = _threshold_sentence(study)
    paired = (f"paired by seed, with a {test} (an exact sign-flip permutation test where the differences have no "
              "spread)" if study.data.split.method != "kfold" else
              "paired by fold (each fold's runs averaged over seeds), with the corrected resampled t-test (Nadeau & "
              "Bengio 2003; Bouckaert & Frank 2004), whose variance term 1/J + n_test/n_train takes the folds' actual "
              "validation and training sizes; intervals over folds use the same correction")
    return (f"Statistics. Each level was compared with its comparison's reference level, {paired}, alpha "
            f"{analysis_config.alpha}, corrected with {family}. Intervals over seeds are 95% t intervals, intersected "
            f"with the range each metric can take; test-set "
            f"metrics carry 95% bootstrap intervals ({study.evaluation.bootstrap_resamples} resamples, images "
            f"resampled within each class); on the test images, the seed ensembles' decisions were compared with "
            f"McNemar's exact test and their ROC AUCs with DeLong's paired test (DeLong et al. 1988). These two "
            f"hold the trained models fixed: they describe these models on these images and give no verdict on the "
            f"configurations. {threshold} Seed ensembles average the seeds' class probabilities.")


def _threshold_sentence(study: Study) -> str:
    """How decisions were made: the base trial's threshold rule, and the others where a comparison varies it."""
    rule, rules = study.evaluation.rule, study.threshold_rules()
    text = (f"The decision threshold was fixed at {rule} (not chosen on data)" if isinstance(rule, float) else
            f"The decision threshold ({thresholds.describe(rule)}) was chosen on validation only")
    others = [thresholds.describe(r) for r in rules[1:]]
    return text + (f"; the trials that vary it used: {'; '.join(others)} (every rule but a fixed threshold chosen "
                   "on validation only)." if others else ".")


def software_paragraph(info: StudyInfo) -> str:
    versions = info.versions
    return "Software. " + ", ".join(f"{k} {v}" for k, v in versions.items() if v and k != "git_commit") + (
        f"; medablate commit {versions['git_commit']}" if versions.get("git_commit") else "") + "."


def results_paragraph(study: Study, analysis: Analysis) -> str:
    sentences = [f"{comparison}: {text}" for comparison, texts in analysis.sentences.items() for text in texts]
    return "Results. " + (" ".join(sentences) if sentences else "No comparison has finished runs yet.")


def methods_text(info: StudyInfo, study: Study, plan: Plan, analysis: Analysis,
                 results: list[dict[str, Any]]) -> str:
    paragraphs = [data_paragraph(info, study), training_paragraph(info, study, plan, results),
                  statistics_paragraph(study, analysis), software_paragraph(info), results_paragraph(study, analysis)]
    # names from the study file reach this Markdown: as text, never as HTML a viewer would run
    text = "\n\n".join(html.escape(p, quote=False) for p in paragraphs)
    return f"# Methods: {html.escape(study.name)}\n\n" + text + "\n\n(Generated by medablate from this folder.)\n"


LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def latex(text: Any) -> str:
    """Text as LaTeX source: its special characters escaped."""
    value = "--" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    return "".join(LATEX.get(c, c) for c in value)


def _interval(outcome_key: str, mean: float, low: float, high: float) -> str:
    outcome = BY_KEY[outcome_key]
    if math.isnan(mean):
        return "--"
    digits = 1 if outcome.unit in ("points", "epochs") else 3
    shown = f"{scaled(outcome, mean):.{digits}f}"
    return shown if math.isnan(low) else f"{shown} ({scaled(outcome, low):.{digits}f}, {scaled(outcome, high):.{digits}f})"


def _tabular(caption: str, label: str, header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [r"\begin{table}[ht]", r"\centering\small", rf"\caption{{{latex(caption)}}}", rf"\label{{{label}}}",
             r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(latex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex(c) for c in row) + r" \\" for row in rows]
    return lines + [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]


def tables_tex(study: Study, analysis: Analysis) -> str:
    has_test = any(not math.isnan(r.get("test_acc_mean", math.nan)) for r in analysis.summary)
    header = ["trial", "seeds", "test accuracy (95% CI)" if has_test else "val. accuracy (95% CI)",
              "val. accuracy (95% CI)", "ensemble AUC"]
    rows = []
    for row in analysis.summary:
        auc = row.get("ensemble_test_roc_auc") if has_test else row.get("ensemble_val_roc_auc")
        rows.append([row["trial"], str(row["seeds"]),
                     _interval("test_acc" if has_test else "val_acc", *(row[f"{'test_acc' if has_test else 'val_acc'}_{s}"]
                                                                       for s in ("mean", "ci_low", "ci_high"))),
                     _interval("val_acc", *(row[f"val_acc_{s}"] for s in ("mean", "ci_low", "ci_high"))),
                     f"{auc:.3f}" if isinstance(auc, float) and not math.isnan(auc) else "--"])
    lines = [f"% Generated by medablate; \\usepackage{{booktabs}} in the preamble, then \\input{{{layout.TABLES_TEX}}}.",
             ""]
    lines += _tabular(f"{study.name}: results per trial (mean over seeds, 95% CI; accuracy in points)",
                      "tab:results", header, rows)
    comparison_rows = [[r["comparison"], f"{r['level']} vs {r['reference']}", BY_KEY[r["outcome"]].label,
                        _difference(r), _p(r["p"]), _p(r["p_holm"]), r["verdict"]]
                       for r in analysis.rows if r.get("role") == "primary"]
    lines += _tabular(f"{study.name}: primary comparisons (level minus reference, paired by seed; Holm over the "
                      "primary family)", "tab:comparisons",
                      ["comparison", "levels", "outcome", "difference (95% CI)", "p", "p (Holm)", "verdict"],
                      comparison_rows)
    return "\n".join(lines)


def _difference(row: dict[str, Any]) -> str:
    outcome = BY_KEY[row["outcome"]]
    digits = 1 if outcome.unit in ("points", "epochs") else 3
    shown = f"{scaled(outcome, row['difference']):+.{digits}f}"
    if math.isnan(row["ci_low"]):
        return shown
    return f"{shown} ({scaled(outcome, row['ci_low']):+.{digits}f}, {scaled(outcome, row['ci_high']):+.{digits}f})"


def _p(value: float) -> str:
    return "--" if value is None or math.isnan(value) else f"{value:.2g}"


def write_methods(out: Path, analysis: Analysis, results: list[dict[str, Any]]) -> tuple[Path, Path]:
    info, study = read_study(out)
    plan = expand(study)
    methods, tables = Path(out) / layout.METHODS_MD, Path(out) / layout.TABLES_TEX
    atomic.write_text(methods, methods_text(info, study, plan, analysis, results))
    atomic.write_text(tables, tables_tex(study, analysis))
    return methods, tables


def _choices(training: Any) -> str:
    """The training choices that are on: label smoothing, mixup, cutmix, the weight EMA, early stopping."""
    found = [f"label smoothing {training.label_smoothing:g}" if training.label_smoothing else "",
             f"mixup (alpha {training.mixup:g})" if training.mixup else "",
             f"cutmix (alpha {training.cutmix:g})" if training.cutmix else "",
             f"a weight EMA (decay {training.ema.decay:g}) as the model" if training.ema else ""]
    rule = training.early_stopping
    if rule is not None:
        found.append(f"early stopping after {rule.patience} epochs without an improvement of "
                     f"{rule.monitor or training.monitor}" + (f" by more than {rule.min_delta:g}" if rule.min_delta else ""))
    return "".join(f", {text}" for text in found if text)
