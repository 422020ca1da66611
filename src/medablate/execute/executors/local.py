"""The default executor: the runs one after another in this process (and what a worker process does too).

Each run is claimed first, so several processes (workers, a second `medablate run`) share a study folder: a run
another live process holds is left to it. A finished run is only re-evaluated, from its saved predictions, when
the study's evaluation settings changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from medablate.config.schema import EvaluationConfig, Study, to_plain
from medablate.errors import UserError
from medablate.execute import results
from medablate.execute.executors import AfterRun, StudyJob, register_executor
from medablate.execute.plan import Plan, Run, expand
from medablate.execute.prepare import RunContext, data_note, prepare_context
from medablate.execute.progress import ProgressEvents, progress_bars
from medablate.execute.run import (
    Finisher,
    execute_group,
    execute_run,
    panel_from_checkpoint,
    run_config,
    score_panel,
)
from medablate.folder import claims, rundir
from medablate.folder.records import RunRecord
from medablate.scoring.clinical import Predictions, Shifted, evaluate_trial
from medablate.train.fusion import fuses
from medablate.train.tasks import make_task


@register_executor("local")
def train_here(job: StudyJob, context: RunContext) -> list[str]:
    """Train every run nobody else holds, one after another; with job.background, a run's final checkpoints and
    metrics.json are written while the next one trains (the claim is kept until they are)."""
    runs = job.plan.runs
    statuses: dict[str, str] = {}
    with progress_bars(job.console, job.show_progress) as progress, Finisher(job.background) as finisher:
        render = ProgressEvents(job.console, job.out, progress, job.study.name,
                                sum(r.trial.config.training.epochs for r in runs))
        for unit in units(runs, context):
            statuses |= _unit(job, unit, context, render, finisher)
        finisher.wait()
        results.write_results(job.out, job.plan, job.data_note)
    return [statuses[r.id] for r in runs]


def units(runs: list[Run], context: RunContext) -> list[list[Run]]:
    """The runs in the order they train: the seeds of a trial (and fold) together where training.fuse_seeds fuses
    them, else one by one."""
    images = context.data.images
    outputs = {t.id: make_task(t.config.training.loss, len(images.class_names)).num_outputs for t in {
        r.trial.id: r.trial for r in runs}.values()}
    found: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        fused = fuses(run.trial.config, context.device, images.input_shape, outputs[run.trial.id])
        key = (run.trial.id, str(run.fold)) if fused else (run.id,)
        found.setdefault(key, []).append(run)
    return list(found.values())


def train_prepared(study: Study, out: Path, threads: int | None, console: Console) -> list[str]:
    """A worker process's part: train every run of a study the driver prepared that nobody else holds."""
    context = prepare_context(study, out, threads)
    job = StudyJob(study, Path(out), expand(study), console, threads or 1, data_note(context.data),
                   show_progress=False)
    return train_here(job, context)


_contexts: dict[tuple[str, str], tuple[Plan, RunContext]] = {}  # per task process (Ray worker): the prepared data


def prepared(study_plain: dict[str, Any], out: str, threads: int, where: str) -> tuple[Plan, RunContext]:
    """The plan and run context of a study in this process, kept for its next task."""
    key = (out, repr(sorted(study_plain.items(), key=lambda kv: kv[0])))
    if key not in _contexts:
        if not (Path(out) / rundir.STUDY_JSON).exists():
            raise UserError(f"the study folder {out} is not visible on {where}: put --out on storage every node "
                            "mounts at the same path (NFS or similar).")
        study = Study.model_validate(study_plain)
        _contexts[key] = (expand(study), prepare_context(study, Path(out), threads))
    return _contexts[key]


def train_one(study_plain: dict[str, Any], out: str, run_id: str, threads: int, where: str,
              after_run: AfterRun | None = None) -> str:
    """A task on another process or node (Ray, Slurm): claim the run, train it (resuming from its checkpoint), write
    its folder, then after_run (its figures); the run's status. A run another live process holds is left to it."""
    plan, context = prepared(study_plain, out, threads, where)
    run = next(r for r in plan.runs if r.id == run_id)
    run_dir = rundir.trial_dir(Path(out), run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    claim = claims.try_claim(run_dir)
    if claim is None:  # another live process (a hand-started `medablate run`, say) trains it
        return rundir.RUNNING
    try:
        status = rundir.run_status(run_dir)
        if status in rundir.FINISHED:
            return status
        status = rundir.DONE if derive(context.study, run, context, Console(stderr=True)) else execute_run(run, context)
    finally:
        claims.release(claim)
    if after_run is not None and status in rundir.FINISHED:
        after_run(run_dir, f"{context.study.name}: {run.id}", context.for_run(run))
    return status


def _unit(job: StudyJob, unit: list[Run], context: RunContext, render: ProgressEvents,
          finisher: Finisher) -> dict[str, str]:
    """Train the runs of a unit that are neither finished nor held by another process (several: fused); statuses.
    A fused group is one process's: where another holds one of its runs, it is left to that one (every process
    claims a group's runs in the same order, so a group is never split between two)."""
    statuses: dict[str, str] = {}
    taken: list[tuple[Run, claims.Claim]] = []
    if any(run.twin for run in unit):
        finisher.wait()  # the run it takes its training from may be the one whose files are being written
    try:
        for run in unit:
            status, claim = _take(job, run, render, context)
            if claim is None:
                statuses[run.id] = status
            else:
                taken.append((run, claim))
        if len(unit) > 1 and rundir.RUNNING in statuses.values():  # another process trains this fused group
            for run, claim in taken:
                claims.release(claim)
                render.skip(run.trial.config.training.epochs)
                statuses[run.id] = rundir.RUNNING
                job.elsewhere.append(run.id)
            taken = []
        for index, (run, _) in enumerate(taken):
            render.label(run.id, f"run {job.plan.runs.index(run) + 1}/{len(job.plan.runs)} {run.id}"
                         + (f" (fused with {len(taken) - 1} more)" if len(taken) > 1 and index == 0 else ""),
                         run.trial.config.training.epochs)
        releases = [_releaser(job, claim) for _, claim in taken]
        if len(taken) == 1:
            statuses[taken[0][0].id] = execute_run(taken[0][0], context, render, finisher, on_written=releases[0])
        elif taken:
            found = execute_group([r for r, _ in taken], context, render, finisher, on_written=releases)
            statuses |= {r.id: status for (r, _), status in zip(taken, found, strict=True)}
        taken = []  # handed over: each claim goes once its run's files are written
        return statuses
    finally:
        for _, claim in taken:
            claims.release(claim)


def _releaser(job: StudyJob, claim: claims.Claim) -> Callable[[], None]:
    def written() -> None:  # every file of the run is on disk: others may take it, results.csv shows it
        claims.release(claim)
        results.write_results(job.out, job.plan, job.data_note)

    return written


def _take(job: StudyJob, run: Run, render: ProgressEvents, context: RunContext) -> tuple[str, claims.Claim | None]:
    """The run's claim when it is to train here; else its status (finished, or held by another process)."""
    run_dir = rundir.trial_dir(job.out, run.id)
    epochs = run.trial.config.training.epochs
    status = rundir.run_status(run_dir)
    if status in rundir.FINISHED:
        render.skip(epochs)
        evaluation = job.study.evaluation_of(run.trial.config)
        if reevaluate(run_dir, evaluation, lambda: panel_said(job.console, run, run_dir, context)):
            job.console.print(f"re-evaluated {run.id} with evaluation {to_plain(evaluation)} "
                              "from its saved predictions (no retraining)", highlight=False)
        return status, None
    if status == rundir.DAMAGED:
        job.console.print(f"[yellow]{run.id}:[/] {escape(rundir.damage_of(run_dir))}; redoing the run from its "
                          "last good checkpoint (the same numbers).", highlight=False)
    claim = claims.try_claim(run_dir)
    if claim is None:  # another live process trains it: leave it to that one
        render.skip(epochs)
        job.elsewhere.append(run.id)
        return rundir.RUNNING, None
    status = rundir.run_status(run_dir)  # re-read under the claim: another process may have finished it since
    if status not in rundir.FINISHED and derive(job.study, run, context, job.console):
        status = rundir.DONE
    if status in rundir.FINISHED:
        claims.release(claim)
        render.skip(epochs)
        return status, None
    return status, claim


def panel_said(console: Console, run: Run, run_dir: Path, context: RunContext) -> tuple[str, list[Shifted]] | None:
    """A finished run's robustness panel from its best.pt, said first (many shifted sets: minutes on a CPU)."""
    if context.study.evaluation.shifts:
        console.print(f"{run.id}: scoring the robustness panel from {rundir.BEST_PT}", highlight=False)
    return panel_from_checkpoint(run_dir, run, context)


def derive(study: Study, run: Run, context: RunContext, console: Console) -> bool:
    """A run whose trial trains the same model as an earlier trial (they differ only in evaluation.threshold, so the
    same config and seed give the same weights) takes that trial's finished run of its seed: its history,
    checkpoints and predictions, scored again with its own threshold rule (and its panel from best.pt). False where
    that run has not finished, or where MLflow or TensorBoard would miss this run's epochs: it is then trained."""
    twin = run.twin
    if twin is None or study.tracking.mlflow is not None or run.trial.config.training.tensorboard:
        return False
    twin_dir, run_dir = rundir.trial_dir(context.out, twin.id), rundir.trial_dir(context.out, run.id)
    trained = rundir.finished_metrics(twin_dir)
    if trained is None:
        return False
    console.print(f"{run.id}: trained as {twin.id} (only the threshold rule differs): its checkpoints, scored with "
                  f"{run.trial.config.rule!r}", highlight=False)
    claims.real_folder(run_dir)
    rundir.remove_stale_temp_files(run_dir)
    rundir.write_config(run_dir, run_config(run, context)[2])
    rundir.copy_training(twin_dir, run_dir)
    record = RunRecord.model_validate(trained.plain() | {"run": run.id, "trial": run.trial.id, "trained_by": twin.id})
    return rescore(run_dir, record, study.evaluation_of(run.trial.config),
                   lambda: panel_said(console, run, run_dir, context))


def saved_predictions(path: Path, class_names: list[str]) -> tuple[list[str], Predictions] | None:
    """Image ids and predictions from a predictions_*.csv (None when the file is absent)."""
    found = rundir.read_prediction_arrays(path, class_names)
    return (found[0], Predictions(*found[1:])) if found else None


def reevaluate(run_dir: Path, config: EvaluationConfig,
               panel: Callable[[], tuple[str, list[Shifted]] | None] = lambda: None) -> bool:
    """Apply the study's evaluation settings to a finished run from its saved predictions (no retraining): the
    threshold, every metric and the prediction files (the figure step then redraws its figures and examples); the
    robustness panel, which needs the model, from best.pt (`panel`). False when nothing changed."""
    metrics = rundir.metrics_or_none(run_dir)
    # {"shifts": []}: runs from before the panel have no shifts in their record
    if metrics is None or metrics.status != rundir.DONE or metrics.evaluation is None \
            or {"shifts": []} | (metrics.evaluation_config or {}) == to_plain(config):
        return False
    return rescore(run_dir, metrics, config, panel)


def rescore(run_dir: Path, metrics: RunRecord, config: EvaluationConfig,
            panel: Callable[[], tuple[str, list[Shifted]] | None]) -> bool:
    """A finished run's scores made anew with `config` from its saved predictions (and its panel's), its record
    written last; False when it has no validation predictions to score."""
    wanted = to_plain(config)
    names = list(rundir.read_config(run_dir)["resolved"]["class_names"])
    val, test_saved = (saved_predictions(rundir.predictions_file(run_dir, s), names) for s in ("val", "test"))
    if val is None:
        return False
    report, threshold = evaluate_trial(val[1], test_saved[1] if test_saved else None, config, names)
    for split, saved in (("val", val), ("test", test_saved)):
        if saved is not None:
            ids, p = saved
            rundir.write_predictions(rundir.predictions_file(run_dir, split), ids, p.labels, p.probabilities, p.decisions,
                                     names, threshold)
    robustness = score_panel(run_dir, panel(), threshold, names, config.bootstrap_resamples)
    updated = RunRecord.model_validate(metrics.plain() | {"threshold": threshold, "evaluation": report,
                                                           "evaluation_config": wanted, "robustness": robustness})
    rundir.write_metrics(run_dir, updated)  # its figures are now stale: the figure step redraws them
    return True
