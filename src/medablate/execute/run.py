"""One run of a study: `execute_run(run, context, events)` trains (or resumes) a trial with one seed, evaluates
the best epoch's weights (kept in memory) and hands the rest to a Finisher.

The runner calls it for each run it holds the claim of, in this process; a worker process or a Ray task builds
the same RunContext from the study folder (the decode cache makes that quick) and calls it alike. It prints
nothing: progress goes out as Events for whoever renders them.

What is not training is kept off the training path. The final checkpoints are written by a thread from copies
of the weights, and a run's figures, example images, threshold and clinical metrics are written by a helper
process at low priority, while the next run trains. metrics.json, the run's done marker, is written last: a kill
at any moment leaves the run resumable, and the rerun redoes only what is missing, with the same numbers.
"""

from __future__ import annotations

import errno
import shutil
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medablate.config.schema import EvaluationConfig, Study, to_plain
from medablate.core import faults
from medablate.data import resolve_source
from medablate.data.sources.npy_pair import DEFAULT_FILES
from medablate.data.split import TRAIN, VAL
from medablate.errors import UserError
from medablate.execute import mlflow_log
from medablate.execute.plan import Plan, Run
from medablate.execute.prepare import RunContext, StudyData
from medablate.folder import checkpoint, claims, rundir
from medablate.folder.records import EvaluationReport, Robustness, RunRecord, TestScore
from medablate.models.weights import sha256
from medablate.scoring.clinical import CLEAN, Predictions, Shifted, evaluate_trial, robust_means, robustness_rows
from medablate.train import shifts
from medablate.train.augment import make_augment
from medablate.train.engine import (
    Evaluation,
    FitResult,
    Speed,
    Split,
    Trainer,
    build_trial_model,
    evaluate,
    speed_of,
    steps_per_epoch,
)
from medablate.train.fusion import FusedGroup, RngSlot
from medablate.train.optim import HORIZON_ARGUMENT, scheduler_horizon
from medablate.train.tasks import Task, make_task


@dataclass
class Event:
    """Progress of a run: start (total steps), batch (steps done), epoch (the history row), panel (shifted sets
    scored of the robustness panel's total), note (text), done (the run's metrics, as far as known when training
    ends)."""

    kind: str
    run: str
    data: dict[str, Any] = field(default_factory=dict)


Events = Callable[[Event], None]


def no_events(event: Event) -> None:
    pass


def resolved_run_config(study: Study, run: Run, data: StudyData, task: Task, device: torch.device,
                        steps: int) -> dict[str, Any]:
    """The fully resolved config of one run, as written to its config.yaml."""
    training = to_plain(run.trial.config.training)
    scheduler = run.trial.config.training.scheduler
    if scheduler is not None and scheduler.name in HORIZON_ARGUMENT:
        training["scheduler"].setdefault(HORIZON_ARGUMENT[scheduler.name],
                                         scheduler_horizon(scheduler, training["epochs"], steps))
    files = study.data.files or DEFAULT_FILES
    data_section = to_plain(study.data) | {"source": resolve_source(study.data.source, study.data.path, files),
                                           "image_size": run.trial.config.image_size}
    return {
        "study": study.name, "trial": run.trial.id, "run": run.id, "seed": run.seed,
        "comparisons": list(run.trial.comparisons), "model": to_plain(run.trial.config.model),
        "training": training, "augment": to_plain(run.trial.config.augment), "data": data_section,
        "normalize": run.trial.config.normalize, "tta": run.trial.config.tta,
        "test": to_plain(study.test) if study.test is not None else None,
        "resolved": {"loss": task.loss_name, "num_outputs": task.num_outputs, "num_classes": task.num_classes,
                     "class_names": data.images.class_names, "image_shape": list(data.images.image_shape),
                     **({"channels": data.images.channels} if data.images.channels != 1 else {}),
                     **weights_record(run.trial.config),
                     "steps_per_epoch": steps, "device": str(device),
                     "synthetic_data": data.synthetic, "data_fingerprint": data.fingerprint(),
                     **fold_fields(run, data)},
    }


def split_sizes(data: StudyData) -> tuple[int, int]:
    """The images a run trains and validates on."""
    return int((data.split == TRAIN).sum()), int((data.split == VAL).sum())


def weights_record(config: Any) -> dict[str, Any]:
    """The starting weights' file and SHA-256, when the model has them."""
    if config.model.weights is None:
        return {}

    return {"weights": str(config.model.weights), "weights_sha256": sha256(config.model.weights)}


def weights_used(plan: Plan) -> dict[str, str]:
    """Starting weights files of a study's models: path -> SHA-256."""
    records = [weights_record(t.config) for t in plan.trials]
    return {r["weights"]: r["weights_sha256"] for r in records if r}


def run_config(run: Run, context: RunContext) -> tuple[Task, int, dict[str, Any]]:
    training = run.trial.config.training
    data = context.for_run(run).data
    task = make_task(training.loss, len(data.images.class_names))
    steps = steps_per_epoch(split_sizes(data)[0], training.batch_size)
    return task, steps, resolved_run_config(context.study, run, data, task, context.device, steps)


def execute_run(run: Run, context: RunContext, events: Events = no_events,
                finisher: Finisher | None = None, on_written: Callable[[], None] | None = None) -> str:
    """Train, evaluate and write one run (the caller holds its claim); its status. The finisher writes the final
    checkpoints and metrics.json (at once when None); on_written is called once every file of the run is written
    (then the claim may go). The run's figures are drawn later, by run_figures."""
    return train_alone(begin_run(run, context, events), events, finisher or Finisher(background=False), on_written)


def train_alone(setup: RunSetup, events: Events, finisher: Finisher, on_written: Callable[[], None] | None) -> str:
    written = None
    try:
        trainer = new_trainer(setup, finisher)
        fit = trainer.fit(setup.context.splits["train"], setup.context.splits["val"], *progress_callbacks(setup, events))
        written = conclude(setup, trainer, fit, events)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a bug or out-of-memory in one run must not lose the others
        setup.job.record = failed_record(setup, exc)
    return close_run(setup, events, finisher, written, on_written)


def execute_group(runs: list[Run], context: RunContext, events: Events = no_events,
                  finisher: Finisher | None = None,
                  on_written: Sequence[Callable[[], None] | None] | None = None) -> list[str]:
    """The seeds of one trial (and fold) trained as one fused model (train.fusion), each written as execute_run
    writes it (the caller holds every claim); their statuses. Where the shared pass fails (a layer vmap cannot batch,
    say), the seeds train one after another instead, each from its own checkpoint, with a note."""
    finisher = finisher or Finisher(background=False)
    setups = [begin_run(run, context, events) for run in runs]
    done = list(on_written or [None] * len(runs))
    try:
        trainers, fits = fit_fused(setups, events, finisher)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if disk_full(exc, setups[0].run_dir):
            raise OSError(errno.ENOSPC, f"no space left on the device while writing {setups[0].run_dir}") from exc
        events(Event("note", runs[0].id, {"text": f"the seeds of trial {runs[0].trial.id} could not train fused "
                                                  f"({type(exc).__name__}: {exc}): training them one after another "
                                                  "(training.fuse_seeds: off skips the attempt)"}))
        return [train_alone(s, events, finisher, d) for s, d in zip(setups, done, strict=True)]
    written: list[Any] = [None] * len(runs)
    for k, (setup, trainer, fit) in enumerate(zip(setups, trainers, fits, strict=True)):
        try:
            written[k] = conclude(setup, trainer, fit, events)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as exc:
            setup.job.record = failed_record(setup, exc)
    return [close_run(s, events, finisher, w, d) for s, w, d in zip(setups, written, done, strict=True)]


def fit_fused(setups: list[RunSetup], events: Events, finisher: Finisher) -> tuple[list[Trainer], list[FitResult]]:
    """Each seed's trainer (built and resumed in turn, its RNG state then kept for it), trained as one group."""
    splits = setups[0].context.splits
    trainers, rngs = [], []
    for setup in setups:
        trainer = new_trainer(setup, finisher)
        trainer.begin(splits["train"])
        trainers.append(trainer)
        rngs.append(RngSlot(setup.context.device))
    callbacks = [progress_callbacks(s, events) for s in setups]
    group = FusedGroup(trainers, rngs, [c[0] for c in callbacks], [c[1] for c in callbacks])
    return trainers, group.fit(splits["train"], splits["val"])


@dataclass
class RunSetup:
    """A run about to train: its context (its fold's), folder, task, resolved config, MLflow run and outputs."""

    run: Run
    context: RunContext
    run_dir: Path
    task: Task
    steps: int
    tracked: Any
    job: OutputsJob
    trainer: Trainer | None = None


def begin_run(run: Run, context: RunContext, events: Events) -> RunSetup:
    """The run's folder made ready (stale temporary files gone, config.yaml written) and its start announced."""
    context = context.for_run(run)
    run_dir = rundir.trial_dir(context.out, run.id)
    task, steps, config = run_config(run, context)
    claims.real_folder(run_dir)
    rundir.remove_stale_temp_files(run_dir)
    rundir.write_config(run_dir, config)
    tracked = mlflow_log.run_log(context.out, run_dir, context.study, run, config)
    events(Event("start", run.id, {"total": run.trial.config.training.epochs * steps}))
    job = OutputsJob(run_dir, to_plain(context.study.evaluation_of(run.trial.config)), context.data.images.class_names)
    return RunSetup(run, context, run_dir, task, steps, tracked, job)


def new_trainer(setup: RunSetup, finisher: Finisher) -> Trainer:
    """The run's trainer (it seeds the global RNG with the run's seed and builds the model)."""
    run, context = setup.run, setup.context
    trainer = Trainer(run.trial.config, setup.task, run.seed, context.data.images.input_shape,
                      context.data.images.class_names, setup.run_dir, context.device, setup.steps)
    trainer.augment = make_augment(run.trial.config.augment)
    trainer.writer = finisher.writer
    setup.trainer = trainer
    return trainer


def progress_callbacks(setup: RunSetup, events: Events) -> tuple[Callable[[int, int], None],
                                                                Callable[[dict[str, Any]], None]]:
    """What the trainer calls after each batch and each epoch: progress events, and the MLflow run's metrics."""
    run_id, trainer = setup.run.id, setup.trainer
    assert trainer is not None

    def on_batch(batch: int, batches: int) -> None:
        events(Event("batch", run_id, {"done": len(trainer.history) * batches + batch}))

    def on_epoch(row: dict[str, Any]) -> None:
        events(Event("epoch", run_id, {"row": row}))
        if setup.tracked is not None:
            setup.tracked.epoch(row)

    return on_batch, on_epoch


def conclude(setup: RunSetup, trainer: Trainer, fit: FitResult, events: Events) -> Any:
    """After training: the best epoch evaluated and scored, the run's record; what the writer returned for its final
    checkpoints."""
    for note in trainer.notes:
        events(Event("note", setup.run.id, {"text": note}))
    if fit.status == rundir.DONE and trainer.has_best():
        evaluate_best(setup.job, trainer, setup.task, setup.context,
                      lambda done, total: events(Event("panel", setup.run.id, {"done": done, "total": total})))
        score(setup.job)  # here, not in the writer thread: its many numpy calls would contend for the GIL
    setup.job.record = run_record(setup.run, trainer, fit, setup.task, setup.context, setup.job)
    return trainer.pending


def failed_record(setup: RunSetup, exc: Exception) -> RunRecord:
    """The record of a run that raised (a full disk is not the run's fault: it stops the study, resumable)."""
    run, run_dir = setup.run, setup.run_dir
    if disk_full(exc, run_dir):
        raise OSError(errno.ENOSPC, f"no space left on the device while writing {run_dir}") from exc
    return RunRecord(format=rundir.FORMAT, run=run.id, trial=run.trial.id, seed=run.seed,
                     **fold_fields(run, setup.context.data), status=rundir.FAILED, error=f"{type(exc).__name__}: {exc}",
                     traceback=traceback.format_exc())


def close_run(setup: RunSetup, events: Events, finisher: Finisher, written: Any,
              on_written: Callable[[], None] | None) -> str:
    """The record to MLflow and the progress display; metrics.json once the final checkpoints are written."""
    record = setup.job.record
    assert record is not None  # set by conclude or failed_record
    if setup.tracked is not None:
        setup.tracked.finish(record)
        if setup.tracked.problem:
            events(Event("note", setup.run.id, {"text": setup.tracked.problem}))
    events(Event("done", setup.run.id, {"metrics": record}))
    finisher.after(written, lambda: write_metrics(setup.job.run_dir, record), on_written)
    return record.status


def write_metrics(run_dir: Path, record: RunRecord) -> None:
    """metrics.json, the run's done marker: after every other file of the run, its final checkpoints included."""
    faults.point("before-metrics")
    rundir.write_metrics(run_dir, record)


def run_record(run: Run, trainer: Trainer, fit: Any, task: Task, context: RunContext, job: OutputsJob) -> RunRecord:
    """metrics.json of a run that trained (done or diverged), built once, from the fit and the best epoch's scores."""
    history, data = fit.history, context.data
    return RunRecord(
        format=rundir.FORMAT, run=run.id, trial=run.trial.id, seed=run.seed, status=fit.status, **fold_fields(run, data),
        epochs_done=len(history), diverged_epoch=fit.diverged_epoch, stopped_early_epoch=fit.stopped_early_epoch,
        best_epoch=fit.best.get("epoch"), best_val_loss=fit.best.get("val_loss"),
        val_acc=fit.best.get("val_acc"), highest_val_acc=fit.best.get("best_val_acc"),
        highest_val_acc_epoch=fit.best.get("best_val_acc_epoch"),
        monitor=trainer.config.training.monitor,
        final_val_acc=history[-1]["val_acc"] if history else None,
        seconds=round(sum(r["seconds"] for r in history), 3),
        synthetic_data=data.synthetic, data_fingerprint=data.fingerprint(),
        loss=task.loss_name, num_outputs=task.num_outputs, threads=torch.get_num_threads(),
        evaluation_config=to_plain(context.study.evaluation_of(trainer.config)),
        tta=trainer.config.tta, normalize=trainer.config.normalize,
        precision=trainer.config.training.precision, channels_last=trainer.speed.channels_last,
        **job.scores(),
    )


def fold_fields(run: Run, data: StudyData) -> dict[str, Any]:
    """kfold: the run's fold and its split sizes, for its record."""
    if run.fold is None:
        return {}
    train, val = split_sizes(data)
    return {"fold": list(run.fold), "train_images": train, "val_images": val}


def evaluate_best(job: OutputsJob, trainer: Trainer, task: Task, context: RunContext,
                  on_shifted: Callable[[int, int], None] | None = None) -> None:
    """The best epoch's predictions on validation and test (and the panel's, on_shifted(done, total) after each
    shifted set), for the finisher to score and write."""
    epoch = trainer.load_best()
    batch = trainer.config.training.eval_batch_size
    data, splits = context.data, context.splits
    # the epoch's own validation pass gave these predictions with these weights: the same numbers, not recomputed
    val = trainer.best_val or evaluate(trainer.model, task, splits["val"], batch, keep_predictions=True,
                                       speed=trainer.speed)
    job.val = ([i for i, s in zip(data.images.ids, data.split, strict=False) if s == VAL], *_arrays(splits["val"], val))
    job.checkpoint_epoch = epoch
    if "test" in splits and data.test is not None:
        test = evaluate(trainer.model, task, splits["test"], batch, keep_predictions=True, speed=trainer.speed)
        job.test = (list(data.test.ids), *_arrays(splits["test"], test))
        job.test_score = TestScore(checkpoint=rundir.BEST_PT, checkpoint_epoch=epoch, accuracy=test.accuracy,
                                   loss=test.loss, confusion_matrix=test.confusion, count=test.count,
                                   class_names=list(data.images.class_names))
    clean = job.test if job.test is not None else job.val  # the panel's split, scored above
    job.panel = panel_predictions(trainer.model, task, context, batch, trainer.speed, Predictions(*clean[1:]),
                                  on_shifted)


def panel_split(context: RunContext) -> str:
    """The split the robustness panel shifts: test, or validation where the study has none."""
    return "test" if "test" in context.splits and context.data.test is not None else "val"


def panel_predictions(model: torch.nn.Module, task: Task, context: RunContext, batch: int, speed: Speed,
                      clean: Predictions | None = None, on_shifted: Callable[[int, int], None] | None = None,
                      ) -> tuple[str, list[Shifted]] | None:
    """evaluation.shifts: the model's predictions on the panel's split, clean (the row 'clean', severity 0; given
    when already at hand) and under every shift at every severity, on_shifted(done, total) after each shifted set;
    None without a panel."""
    panel, names = context.study.evaluation.shifts, context.data.images.class_names
    if not panel:
        return None
    side = panel_split(context)
    split = context.splits[side]
    if clean is None:
        clean = Predictions(*_arrays(split, evaluate(model, task, split, batch, keep_predictions=True, speed=speed)))
    found = [Shifted(CLEAN, None, 0, None, clean)]
    total = sum(len(shift.severities) for shift in panel)
    for shift in panel:
        index = None if shift.only_class is None else shifts.class_index(names, shift.only_class)
        only = None if index is None else split.labels == index
        for severity in shift.severities:
            images = shifts.shift_images(split.images, shift.name, severity, only)
            result = evaluate(model, task, Split(images, split.labels), batch, keep_predictions=True, speed=speed)
            found.append(Shifted(shift.name, None if index is None else names[index], severity,
                                 shifts.level(shift.name, severity), Predictions(*_arrays(split, result))))
            if on_shifted is not None:
                on_shifted(len(found) - 1, total)
    return side, found


def panel_from_checkpoint(run_dir: Path, run: Run, context: RunContext) -> tuple[str, list[Shifted]] | None:
    """The panel's predictions of a finished run's best.pt (its evaluation settings changed after it trained)."""
    if not context.study.evaluation.shifts:
        return None
    context = context.for_run(run)  # no data at another size loaded for nothing
    task = make_task(run.trial.config.training.loss, len(context.data.images.class_names))
    model = build_trial_model(run.trial.config, context.data.images.input_shape, task.num_outputs)
    model.load_state_dict(checkpoint.user_checkpoint(run_dir / rundir.BEST_PT)["model"])
    speed = speed_of(run.trial.config, context.device)
    return panel_predictions(speed.place(model), task, context, run.trial.config.training.eval_batch_size, speed)


# ------------------------------------------------------------------ what is not training


Arrays = tuple[list[str], np.ndarray, np.ndarray, np.ndarray]  # ids, labels, probabilities, decisions


@dataclass
class OutputsJob:
    """A run's numbers once training ends: the metrics so far and the best epoch's predictions."""

    run_dir: Path
    evaluation_settings: dict[str, Any]
    class_names: list[str]
    val: Arrays | None = None
    test: Arrays | None = None
    checkpoint_epoch: int | None = None
    test_score: TestScore | None = None
    threshold: float | None = None
    evaluation: EvaluationReport | None = None
    panel: tuple[str, list[Shifted]] | None = None  # evaluation.shifts: the split and its shifted predictions
    robustness: Robustness | None = None
    record: RunRecord | None = None

    def scores(self) -> dict[str, Any]:
        """The best epoch's part of the run's record (nothing when it was not evaluated)."""
        if self.evaluation is None:
            return {}
        found: dict[str, Any] = {"checkpoint_epoch": self.checkpoint_epoch}
        if self.test_score is not None:
            found["test"] = self.test_score
        return found | {"threshold": self.threshold, "evaluation": self.evaluation, "robustness": self.robustness}


def score(job: OutputsJob) -> None:
    """The threshold and clinical metrics from the predictions, and the prediction files."""
    assert job.val is not None
    config = EvaluationConfig.model_validate(job.evaluation_settings)
    test = Predictions(*job.test[1:]) if job.test is not None else None
    report, threshold = evaluate_trial(Predictions(*job.val[1:]), test, config, job.class_names)
    job.threshold, job.evaluation = threshold, EvaluationReport.model_validate(report)
    for split, arrays in (("val", job.val), ("test", job.test)):
        if arrays is not None:
            rundir.write_predictions(rundir.predictions_file(job.run_dir, split), *arrays, job.class_names, threshold)
    job.robustness = score_panel(job.run_dir, job.panel, threshold, job.class_names, config.bootstrap_resamples)


def score_panel(run_dir: Path, panel: tuple[str, list[Shifted]] | None, threshold: float | None,
                class_names: list[str], resamples: int) -> Robustness | None:
    """The run's robustness.csv (a row per shift and severity) and its summary for metrics.json."""
    if panel is None:
        rundir.remove_robustness(run_dir)
        return None
    side, shifted = panel
    rows = robustness_rows(shifted, threshold, class_names, resamples)
    rundir.write_robustness(run_dir, rows)
    decision = "at_threshold" if threshold is not None and len(class_names) == 2 else "at_0.5"
    return Robustness(split=side, decision=decision, **robust_means(rows))


class Finisher:
    """Writes what ends a run (its final checkpoints, then metrics.json) in a thread while the next run trains;
    with background=False, at once in this process. wait() returns when everything is written and raises the first
    error any of it had. Measured on a 2-core CPU (course study, 6 runs): the thread cut the runs phase from 70.6 s
    to 67.1 s; scoring in the thread as well made it slower (72.1 s), so runs are scored before it."""

    def __init__(self, background: bool) -> None:
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="medablate-writer") if background else None
        self.pending: list[Future] = []

    def writer(self, job: Callable[[], None]) -> Future | None:
        """Trainer.finish's final checkpoints."""
        if self.thread is None:
            job()
            return None
        future = self.thread.submit(job)
        self.pending.append(future)
        return future

    def after(self, written: Future | None, job: Callable[[], None], on_written: Callable[[], None] | None) -> None:
        """job once `written` is (the same thread, so in order), then on_written even when either failed."""
        def both() -> None:
            try:
                if written is not None:
                    written.result()
                job()
            finally:
                if on_written is not None:
                    on_written()

        if self.thread is None:
            both()
        else:
            self.pending.append(self.thread.submit(both))

    def wait(self) -> None:
        try:
            for future in list(self.pending):
                future.result()
        finally:
            self.pending.clear()

    def __enter__(self) -> Finisher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread is not None:
            self.thread.shutdown(wait=True)


def disk_full(exc: BaseException, folder: Path) -> bool:
    """ENOSPC / EDQUOT anywhere in the exception's chain; torch.save reports a full disk only as a failed write,
    which counts when the disk is in fact nearly full. Any other error is the run's own and is reported as it is."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(seen, RuntimeError) and "write" in str(seen).lower() and "fail" in str(seen).lower():
            return shutil.disk_usage(folder).free < 512 * 2**20
        seen = seen.__cause__ or seen.__context__
    return False


def _arrays(split: Split, result: Evaluation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities and decisions of an evaluation made with keep_predictions."""
    assert result.probabilities is not None and result.decisions is not None
    return split.labels.cpu().numpy(), result.probabilities, result.decisions
