"""Everything after training that is computed from the run folder alone: the analysis's tables (medablate.analysis),
then the comparisons' figures and the methods text. `medablate run` and `medablate compare` both end here."""

from __future__ import annotations

import math
from pathlib import Path

from medablate.analysis import robustness
from medablate.analysis.compare import Analysis, AnalysisSteps, Found
from medablate.analysis.outcomes import OUTCOMES, scaled
from medablate.config.schema import Study
from medablate.core import names
from medablate.core.children import Mapper, in_turn
from medablate.data.sources.phantom import FIGURE_NOTE
from medablate.execute.plan import Plan, Trial, level_label
from medablate.folder import layout, rundir
from medablate.folder.records import StudyInfo
from medablate.report import plots
from medablate.report.methods import write_methods


def write_outputs(out: Path, mapper: Mapper = in_turn) -> Analysis:
    """results.csv, summary.csv, comparisons.csv, tables.md, the comparisons' figures, methods.md and tables.tex;
    the seed ensembles and the figures mapped over `mapper` (a study's helper processes, where it has them: they
    then draw while this process compares and writes the tables)."""
    steps = AnalysisSteps(Path(out), mapper)
    drawings = plots.Drawings()
    _figures(steps.out, steps.study, steps.plan, steps.info, steps.found, drawings)
    _robustness_figures(steps.out, steps.study, steps.plan, steps.info, drawings)
    drawn = drawings.start(mapper)
    analysis = steps.finish()
    drawn()
    write_methods(out, analysis, analysis.results)
    return analysis


def _figures(out: Path, study: Study, plan: Plan, info: StudyInfo, found: Found, drawings: plots.Drawings) -> None:
    note = FIGURE_NOTE if info.synthetic_data else ""
    for comparison in study.comparisons:
        keys = list(comparison.vary)
        trials = plan.trials_of(comparison.name)
        curves = {level_label(t, keys): [rundir.read_history(d) for d in plan.run_dirs(out, t)] for t in trials}
        unit = "runs (folds x seeds)" if plan.folds else "seeds"
        seeds = f" (mean and 95% band over {len(plan.replicates)} {unit})" if len(plan.replicates) > 1 else ""
        name = names.safe_name(comparison.name)
        drawings.add(plots.overlay, out / layout.FIGURES / name, curves, f"{study.name}: {comparison.name}{seeds}", note)
        per_outcome = {}
        for outcome in OUTCOMES:
            values = {level_label(t, keys): [scaled(outcome, found[(t.id, r)][outcome.key]) for r in plan.replicates
                                             if (t.id, r) in found and math.isfinite(found[(t.id, r)][outcome.key])]
                      for t in trials}
            if any(values.values()) and outcome.key != "seconds":
                per_outcome[outcome.label + (" (points)" if outcome.unit == "points" else "")] = values
        roc = _roc_curves(out, plan, trials, keys)
        if roc:
            split = "test" if all(k.endswith("(test)") for k in roc) else "validation"
            drawings.add(plots.roc_overlay, out / layout.FIGURES / f"{name}-roc",
                         {k.rsplit(" (", 1)[0]: v for k, v in roc.items()},
                         f"{study.name}: {comparison.name}, {split} ROC (first finished seed)", note)
        if per_outcome:
            drawings.add(plots.outcome_strips, out / layout.FIGURES / f"{name}-outcomes", per_outcome,
                         f"{study.name}: {comparison.name}, each dot one {'run' if plan.folds else 'seed'}", note)


def _robustness_figures(out: Path, study: Study, plan: Plan, info: StudyInfo, drawings: plots.Drawings) -> None:
    """DIR/robustness.csv and, per comparison, figures/<comparison>-robustness: its levels under every shift."""
    rows = robustness.write_table(out, plan)
    for comparison in study.comparisons:
        keys, trials = list(comparison.vary), plan.trials_of(comparison.name)
        levels = {level_label(t, keys): [r for r in rows if r["trial"] == t.id] for t in trials}
        path = out / layout.FIGURES / f"{names.safe_name(comparison.name)}-robustness"
        if any(levels.values()):
            seeds = f", mean and 95% band over {len(plan.replicates)} seeds" if len(plan.replicates) > 1 else ""
            drawings.add(plots.robustness, path, levels, f"{study.name}: {comparison.name} under shift{seeds}",
                         FIGURE_NOTE if info.synthetic_data else "")
        else:
            for suffix in plots.FORMATS:
                path.with_name(path.name + suffix).unlink(missing_ok=True)


def _roc_curves(out: Path, plan: Plan, trials: list[Trial], keys: list[str]) -> dict[str, tuple]:
    """Per level: labels and positive-class probabilities of its first finished seed (test, else validation)."""
    curves = {}
    for trial in trials:
        for run_dir in plan.run_dirs(out, trial):
            metrics = rundir.finished_metrics(run_dir)
            positive = metrics.evaluation.positive_class if metrics and metrics.evaluation else None
            split = "test" if rundir.predictions_file(run_dir, "test").exists() else "val"
            found = rundir.positive_curves(run_dir, positive, (split,))
            if found:
                curves[f"{level_label(trial, keys)} ({split})"] = found[split]
                break
    return curves

