"""Run a whole study: load data once, split once, train every run (trial x seed), evaluate, write outputs.

Finished runs are skipped and interrupted ones resume, so running the same command again after a
crash finishes the study with the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import errno
import functools
import shutil
import hashlib
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from medablate import atomic, claims, faults, plots, provenance, results, rundir
from medablate.config import Study, to_plain
from medablate.data import load_data, load_test, resolve_source
from medablate.data.npy_pair import DEFAULT_FILES
from medablate.data.duplicates import find_duplicates, pixel_hashes
from medablate.data.image_folder import INTENSITY
from medablate.data.phantom import FIGURE_NOTE
from medablate.data.split import (KERMANY_PATIENTS, SPLIT_COLUMNS, TEST, TRAIN, VAL, group_ids, looks_patient_named,
                                  make_split, split_rows, uses_source_split)

DROPPED = "dropped-duplicate"
from medablate.data.types import ImageSet
from medablate.engine import Split, Trainer, configure_threads, evaluate, resolve_device, steps_per_epoch
from medablate.errors import UserError
from medablate.optim import HORIZON_ARGUMENT, build_optimizer, build_scheduler, scheduler_horizon
from medablate.augment import make_augment
from medablate.clinical import Predictions, evaluate_trial
from medablate.config import EvaluationConfig
from medablate.results import flatten
from medablate.compare import Analysis, write_analysis
from medablate.plan import Plan, Run, expand, reference_trial
from medablate.predict import write_examples
from medablate.report import build_report
from medablate.tasks import Task, make_task
from medablate.tracking import require_tensorboard


@dataclass
class StudyData:
    images: ImageSet
    split: np.ndarray  # train / val / dropped-duplicate, one per image
    test: ImageSet | None
    patients: list[str] | None = None
    duplicates: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    hashes: list[str] | None = None  # sha1 of each image's pixels, for split.csv
    test_from: str | None = None  # where the test set came from, in words
    test_patients: int | None = None  # patients in a test part held out from data.path

    @property
    def notes(self) -> list[str]:
        notes = list(self.images.notes) + list(self.warnings)
        if self.test is not None and self.test.synthetic and not self.images.synthetic:
            notes += self.test.notes
        return list(dict.fromkeys(notes))

    @property
    def synthetic(self) -> bool:
        return self.images.synthetic or (self.test is not None and self.test.synthetic)

    @functools.cached_property
    def _fingerprint(self) -> str:
        parts = [self.images.fingerprint(), "|".join(self.split.tolist())]
        parts.append(self.test.fingerprint() if self.test is not None else "no-test")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def fingerprint(self) -> str:
        """sha256 over the pixels, labels, split and test set (computed once: it hashes hundreds of MiB)."""
        return self._fingerprint


def check_buildable(plan: Plan) -> None:
    """Build every trial's optimizer and scheduler on a dummy parameter and take two steps, so bad arguments
    (wrong types too, which torch only notices when stepping: `T_max: abc`, `amsgrad: "x"`) fail before training."""
    for trial in plan.trials:
        training = trial.config.training
        if training.tensorboard:
            require_tensorboard()
        parameter = torch.nn.Parameter(torch.zeros(1))
        try:
            optimizer = build_optimizer(training.optimizer, [parameter])
            for _ in range(2):
                parameter.grad = torch.ones(1)
                optimizer.step()
        except Exception as exc:
            raise UserError(f"trial '{trial.id}': training.optimizer {to_plain(training.optimizer)} cannot be "
                            f"built: {exc}. Fix its arguments in the study file.") from None
        try:
            scheduler = build_scheduler(training.scheduler, optimizer, training.epochs, 1)
            for _ in range(2 if scheduler is not None else 0):
                optimizer.step()
                scheduler.step()
        except Exception as exc:
            raise UserError(f"trial '{trial.id}': training.scheduler {to_plain(training.scheduler)} cannot be "
                            f"built: {exc}. Fix its arguments in the study file.") from None


def load_study_data(study: Study, console: Console) -> StudyData:
    carved = study.data.split.test_fraction > 0
    if carved and study.test is not None:
        raise UserError(f"data.split.test_fraction is {study.data.split.test_fraction}, which holds out a test set from "
                        "data.path, and the study also has a test: section: keep one of them (--set test=null uses the "
                        "held-out part).")
    with console.status("Loading data..."):
        images = load_data(study.data)
        split = make_split(images, study.data.split)
        test, test_from = None, None
        if (split == TEST).any():  # held out by test_fraction, or the source's own test part (folders, manifest, MedMNIST)
            test = images.subset(split == TEST) if study.test is not None or carved else None
            test_from = (f"held out from data.path (data.split.test_fraction {study.data.split.test_fraction})"
                         if carved else "the source's own test part")
            images, split = images.subset(split != TEST), split[split != TEST]
        elif study.test is not None:
            test, test_from = load_test(study.data, study.test, images.class_names), "the study's test: section"
    group_by = study.data.split.group_by
    patient_ids = group_ids(images, study.data.split) if group_by is not None else images.patients
    test_patients = None
    if test is not None and carved and patient_ids is not None:
        test_patients = len(set(group_ids(test, study.data.split) if group_by is not None else test.patients or []))
    found_warnings = []
    if group_by is None and looks_patient_named(images):
        found_warnings.append(
            "file names look like they carry patient ids, but the split is not grouped by patient, so one patient's "
            "images can land in train and validation; group it with data.split: {method: stratified, group_by: "
            f"{{regex: '{KERMANY_PATIENTS}'}}}} (that regex fits the Kermany chest X-ray names).")
    if test is None:
        found_warnings.append(
            "this study has no test set: every figure is measured on the validation split, which also chose the "
            "checkpoint (and threshold), so it overstates how the models do on new images; hold out a test set with "
            "data.split: {method: stratified, test_fraction: 0.15} (patient-grouped with group_by) or add a test: "
            "section.")
    hashes = pixel_hashes(images)
    duplicates = None
    if study.data.duplicates == "drop":
        found = find_duplicates(images, split, test, hashes)
        split = np.where(found.keep, split, DROPPED)
        if test is not None and found.test_keep is not None:
            test = test.subset(found.test_keep)
        duplicates = found.as_dict()
    rule = study.evaluation.rule
    if not isinstance(rule, float):
        if len(images.class_names) != 2:
            raise UserError(f"evaluation.threshold is {rule!r}, but a chosen threshold applies to two-class tasks and "
                            f"the data has {len(images.class_names)} classes: use evaluation.threshold: 0.5.")
        if len(np.unique(images.labels[split == VAL])) < 2:
            raise UserError(f"evaluation.threshold is {rule!r}, which is chosen on validation, but the validation split "
                            "has only one class: change data.split or use evaluation.threshold: 0.5.")
    if test is not None and test.image_shape != images.image_shape:
        raise UserError(f"test images are {test.image_shape} but training images are {images.image_shape}: "
                        "set data.image_size so both are resized alike.")
    return StudyData(images, split, test, patient_ids, duplicates, found_warnings, hashes,
                     test_from if test is not None else None, test_patients)


def resolved_run_config(study: Study, run: Run, data: StudyData, task: Task, device: torch.device,
                        steps_per_epoch: int) -> dict[str, Any]:
    """The fully resolved config of one run, as written to its config.yaml."""
    training = to_plain(run.trial.config.training)
    scheduler = run.trial.config.training.scheduler
    if scheduler is not None and scheduler.name in HORIZON_ARGUMENT:
        training["scheduler"].setdefault(HORIZON_ARGUMENT[scheduler.name],
                                         scheduler_horizon(scheduler, training["epochs"], steps_per_epoch))
    files = study.data.files or DEFAULT_FILES
    data_section = to_plain(study.data) | {"source": resolve_source(study.data.source, study.data.path, files)}
    return {
        "study": study.name, "trial": run.trial.id, "run": run.id, "seed": run.seed,
        "comparisons": list(run.trial.comparisons), "model": to_plain(run.trial.config.model),
        "training": training, "augment": to_plain(run.trial.config.augment), "data": data_section,
        "test": to_plain(study.test) if study.test is not None else None,
        "resolved": {"loss": task.loss_name, "num_outputs": task.num_outputs, "num_classes": task.num_classes,
                     "class_names": data.images.class_names, "image_shape": list(data.images.image_shape),
                     "steps_per_epoch": steps_per_epoch, "device": str(device),
                     "synthetic_data": data.synthetic, "data_fingerprint": data.fingerprint()},
    }


RUNTIME_KEYS = ("training.device", "training.eval_batch_size", "training.tensorboard", "training.checkpoint_every",
                "resolved.device")
IDENTITY_SECTIONS = ("model", "training", "augment", "seed", "resolved")


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every identity key of a run that differs (runtime settings such as the device and the
    evaluation batch size are not part of a run's identity)."""
    before = flatten({k: old.get(k) for k in IDENTITY_SECTIONS})
    after = flatten({k: new.get(k) for k in IDENTITY_SECTIONS})
    keys = [k for k in dict.fromkeys([*before, *after]) if k not in RUNTIME_KEYS]
    return [f"{k}: {before.get(k, '(unset)')} -> {after.get(k, '(unset)')}" for k in keys
            if before.get(k, "(unset)") != after.get(k, "(unset)")]


def changed_config_message(out: Path, changed: dict[str, list[str]]) -> str:
    runs = "; ".join(f"{run}: {', '.join(diffs)}" for run, diffs in list(changed.items())[:4])
    more = f" (and {len(changed) - 4} more runs)" if len(changed) > 4 else ""
    epochs = any(d.startswith("training.epochs:") for diffs in changed.values() for d in diffs)
    hint = (" A longer or shorter schedule is a different trial (the scheduler's horizon, the best epoch and every "
            "outcome change), so finished runs cannot be extended: to compare the two, add a comparison "
            "`vary: {training.epochs: [old, new]}`; to train only the new one, use a new --out.") if epochs else ""
    return (f"{out} holds runs trained with a different configuration than the study now asks for, and a study never "
            f"mixes configurations: {runs}{more}.{hint} Put the study back as it was, use another --out folder, or "
            "delete those run folders to retrain them.")


class StudyRunner:
    def __init__(self, study: Study, out: Path, console: Console, command: str = "", threads: int | None = None,
                 workers: int = 1) -> None:
        self.study, self.out, self.console, self.command = study, Path(out), console, command
        self.threads, self.workers, self.show_progress = threads, workers, True
        self.elsewhere: list[str] = []  # runs another process was training while this one ran
        self.plan = expand(study)
        check_buildable(self.plan)
        for comparison in study.comparisons:
            reference_trial(study, self.plan, comparison)  # a reference that names no level fails now, not after training
        self.data_note = ""
        self.analysis: Analysis | None = None

    # -------------------------------------------------------------- setup

    def check_output_folder(self) -> None:
        """--out must be a folder this process can write, and not the data itself; checked before anything loads."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is an existing file, not a folder: choose a folder (it is created if needed).")
        data = self.study.data.path
        if data is not None and data.is_dir() and (out.resolve() == data.resolve() or data.resolve() in out.resolve().parents):
            raise UserError(f"--out {out} is inside the data folder {data}: the study's outputs would mix with the "
                            "images (and be read as data next time). Choose a folder outside it.")
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f"{atomic.temp_prefix('write-check')}probe.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise UserError(f"cannot write to --out {out} ({exc.strerror or exc}): make it writable (or mount it "
                            "read-write), or choose another folder.") from None

    def _prepare_folder(self, data: StudyData) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        previous = None
        if (self.out / rundir.STUDY_JSON).exists():
            try:
                previous = rundir.read_study_info(self.out)[0]
            except UserError as exc:  # every run's config is checked on its own, so study.json can be rewritten
                self.console.print(f"[yellow]Note:[/] {escape(str(exc).split(': run the study again')[0])}; "
                                   "writing it anew.", highlight=False)
        fingerprint = data.fingerprint()
        if previous and previous.get("data_fingerprint") != fingerprint:
            raise UserError(f"{self.out} holds a study run on different data or a different split "
                            f"(fingerprint {str(previous.get('data_fingerprint'))[:12]}, now {fingerprint[:12]}): "
                            "use another --out folder, or delete this one to start over.")
        if previous and previous.get("name") != self.study.name:
            raise UserError(f"{self.out} holds study '{previous.get('name')}', not '{self.study.name}': "
                            "use another --out folder.")
        atomic.write_csv(self.out / rundir.SPLIT_CSV, split_rows(data.images, data.split, data.patients, data.hashes),
                         SPLIT_COLUMNS)
        info = {
            "format": rundir.FORMAT, "name": self.study.name, "command": self.command, "status": "running",
            "started": (previous or {}).get("started") or _now(), "resumed": _now() if previous else None,
            "finished": None, "synthetic_data": data.synthetic, "notes": data.notes,
            "data_fingerprint": fingerprint,
            "data": {"source": data.images.source, "class_names": data.images.class_names,
                     "image_shape": list(data.images.image_shape), "counts": self._counts(data),
                     "intensity": INTENSITY, "test_from": data.test_from, "split_used": self._split_used(data),
                     "patients": self._patients(data), "duplicates": data.duplicates},
            "trials": len(self.plan.trials), "seeds": self.plan.seeds, "runs": len(self.plan.runs),
            "run_list": [{"run": r.id, "trial": r.trial.id, "seed": r.seed, "epochs": r.trial.config.training.epochs}
                         for r in self.plan.runs],
            "versions": provenance.versions(), "study": to_plain(self.study),
        }
        return info

    def _split_used(self, data: StudyData) -> dict[str, Any]:
        """The split actually made: the source's own, or the method with its settings."""
        config = self.study.data.split
        if data.images.preset is not None and uses_source_split(data.images, config):
            return {"method": "source", "from": data.images.source}
        return to_plain(config)

    @staticmethod
    def _patients(data: StudyData) -> dict[str, int] | None:
        if data.patients is None:
            return None
        ids = np.asarray(data.patients, dtype=object)
        counts = {s: len(set(ids[data.split == s])) for s in (TRAIN, VAL)}
        return counts | ({TEST: data.test_patients} if data.test_patients is not None else {})

    @staticmethod
    def _counts(data: StudyData) -> dict[str, dict[str, int]]:
        counts = {s: {name: int(((data.split == s) & (data.images.labels == i)).sum())
                      for i, name in enumerate(data.images.class_names)} for s in (TRAIN, VAL)}
        if data.test is not None:
            counts["test"] = data.test.counts()
        return counts

    # -------------------------------------------------------------- the study

    def run(self) -> int:
        started = time.perf_counter()
        self.check_output_folder()
        data = load_study_data(self.study, self.console)
        for note in data.notes:
            self.console.print(f"[yellow]Note:[/] {escape(note)}", highlight=False)
        self.data_note = "synthetic phantom" if data.synthetic else data.images.source
        info = self._prepare_folder(data)
        removed = rundir.remove_stale_temp_files(self.out, recursive=True)
        if removed:
            self.console.print(f"removed {removed} half-written temp file(s) left by a killed process", highlight=False)
        threads, threads_from = configure_threads(self.threads)
        device = resolve_device(self.study.training.device)
        info["machine"] = provenance.machine(device) | {"torch_threads": threads, "threads_from": threads_from}
        splits = self._tensors(data, device)
        self._check_configs(data, splits, device)
        atomic.write_json(self.out / rundir.STUDY_JSON, info)
        self.console.print(f"Study [bold]{self.study.name}[/]: {len(self.plan.trials)} trials x "
                           f"{len(self.plan.seeds)} seed(s) = {len(self.plan.runs)} runs on {device}; "
                           f"{int((data.split == TRAIN).sum())} train / {int((data.split == VAL).sum())} val images"
                           + (f", {len(data.test)} test" if data.test is not None else "") + f" -> {self.out}")
        timing = {"setup": time.perf_counter() - started}
        if self.workers > 1:
            from medablate.workers import train_in_workers

            statuses = train_in_workers(self, max(1, threads // self.workers))
        else:
            statuses = self._train_all(data, splits, device)
        timing["runs"] = time.perf_counter() - started - timing["setup"]
        self.write_outputs()
        timing["analysis"] = time.perf_counter() - started - timing["setup"] - timing["runs"]
        now = [rundir.run_status(rundir.trial_dir(self.out, r.id)) for r in self.plan.runs]  # other processes' too
        info.update(status="finished" if all(s in rundir.FINISHED for s in now) else "incomplete",
                    finished=_now(), seconds_this_invocation=round(time.perf_counter() - started, 1),
                    workers=self.workers)
        atomic.write_json(self.out / rundir.STUDY_JSON, info)
        build_report(self.out, self.analysis)
        timing["report"] = time.perf_counter() - started - sum(timing.values())
        info["timing_seconds"] = {k: round(v, 3) for k, v in timing.items()}  # setup, runs, analysis, report
        atomic.write_json(self.out / rundir.STUDY_JSON, info)
        return self._summarise(statuses)

    def train_only(self) -> list[str]:
        """A worker's part: load the data (the decode cache makes it quick), train every run nobody else holds."""
        data = load_study_data(self.study, Console(quiet=True))
        self.data_note = "synthetic phantom" if data.synthetic else data.images.source
        configure_threads(self.threads)
        device = resolve_device(self.study.training.device)
        return self._train_all(data, self._tensors(data, device), device)

    def _tensors(self, data: StudyData, device: torch.device) -> dict[str, Split]:
        train, val = data.split == TRAIN, data.split == VAL
        splits = {"train": Split.from_numpy(data.images.images[train], data.images.labels[train], device),
                  "val": Split.from_numpy(data.images.images[val], data.images.labels[val], device)}
        if data.test is not None:
            splits["test"] = Split.from_numpy(data.test.images, data.test.labels, device)
        return splits

    def _progress(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                        console=self.console, transient=False, disable=not self.show_progress)

    def _train_all(self, data: StudyData, splits: dict[str, Split], device: torch.device) -> list[str]:
        runs = self.plan.runs
        total_epochs = sum(r.trial.config.training.epochs for r in runs)
        statuses: list[str] = []
        with self._progress() as progress:
            study_task = progress.add_task(f"study {self.study.name}", total=total_epochs)
            for index, run in enumerate(runs, 1):
                status = rundir.run_status(rundir.trial_dir(self.out, run.id))
                epochs = run.trial.config.training.epochs
                if status in rundir.FINISHED:
                    progress.advance(study_task, epochs)
                    statuses.append(status)
                    if reevaluate(rundir.trial_dir(self.out, run.id), self.study.evaluation, data.test,
                                  f"{self.study.name}: {run.id}", self._figure_note()):
                        self.console.print(f"re-evaluated {run.id} with evaluation {to_plain(self.study.evaluation)} "
                                           "from its saved predictions (no retraining)", highlight=False)
                    continue
                if status == rundir.DAMAGED:
                    self.console.print(f"[yellow]{run.id}:[/] its metrics.json is damaged; redoing the run from its "
                                       "last good checkpoint.", highlight=False)
                claim = claims.try_claim(rundir.trial_dir(self.out, run.id))
                if claim is None:  # another live process trains it: leave it to that one
                    progress.advance(study_task, epochs)
                    statuses.append(rundir.RUNNING)
                    self.elsewhere.append(run.id)
                    continue
                try:  # re-read under the claim: another process may have finished it since the check above
                    status = rundir.run_status(rundir.trial_dir(self.out, run.id))
                    if status in rundir.FINISHED:
                        progress.advance(study_task, epochs)
                        statuses.append(status)
                        continue
                    statuses.append(self._train_one(run, index, data, splits, device, progress, study_task))
                finally:
                    claims.release(claim)
                results.write_results(self.out, self.plan, self.data_note)
        return statuses

    def _train_one(self, run: Run, index: int, data: StudyData, splits: dict[str, Split], device: torch.device,
                   progress: Progress, study_task: Any) -> str:
        run_dir = rundir.trial_dir(self.out, run.id)
        training = run.trial.config.training
        task, steps, config = self._run_config(run, data, splits, device)
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.remove_stale_temp_files(run_dir)
        rundir.write_config(run_dir, config)
        label = f"run {index}/{len(self.plan.runs)} {run.id}"
        trial_task = progress.add_task(label, total=training.epochs * steps)
        base = progress.tasks[study_task].completed
        try:
            trainer = Trainer(run.trial.config, task, run.seed, data.images.image_shape, data.images.class_names,
                              run_dir, device, steps)
            trainer.augment = make_augment(run.trial.config.augment)

            def on_batch(batch: int, batches: int) -> None:
                epoch = len(trainer.history)
                progress.update(trial_task, completed=epoch * batches + batch)

            def on_epoch(row: dict[str, float]) -> None:
                progress.update(study_task, completed=base + row["epoch"])
                progress.update(trial_task, description=f"{label} val_acc {row['val_acc']:.3f}")

            fit = trainer.fit(splits["train"], splits["val"], on_batch, on_epoch)
            for note in trainer.notes:
                self.console.print(f"[yellow]{run.id}:[/] {escape(note)}", highlight=False)
            metrics = self._metrics(run, trainer, fit, task, splits, data)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug or out-of-memory in one run must not lose the others
            if disk_full(exc, run_dir):  # not the run's fault: stop, resumable
                raise OSError(errno.ENOSPC, f"no space left on the device while writing {run_dir}") from exc
            metrics = {"format": rundir.FORMAT, "run": run.id, "trial": run.trial.id, "seed": run.seed,
                       "status": rundir.FAILED,
                       "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            self.console.print(f"[red]run {run.id} failed:[/] {escape(metrics['error'])} (details in "
                               f"{run_dir}/metrics.json)", highlight=False)
        faults.point("before-run-figures")
        history = rundir.read_history(run_dir)
        if history:
            plots.run_curves(run_dir / "curves.png", history, f"{self.study.name}: {run.id}", self._figure_note())
        write_run_outputs(run_dir, metrics, data.test, f"{self.study.name}: {run.id}", self._figure_note())
        progress.update(study_task, completed=base + training.epochs)
        progress.remove_task(trial_task)
        self._report_run(run, metrics)
        return str(metrics["status"])

    def _run_config(self, run: Run, data: StudyData, splits: dict[str, Split],
                    device: torch.device) -> tuple[Task, int, dict[str, Any]]:
        training = run.trial.config.training
        task = make_task(training.loss, len(data.images.class_names))
        steps = steps_per_epoch(len(splits["train"]), training.batch_size)
        return task, steps, resolved_run_config(self.study, run, data, task, device, steps)

    def _check_configs(self, data: StudyData, splits: dict[str, Split], device: torch.device) -> None:
        """Every run already in the folder, finished or not, must be the run the study now asks for."""
        changed = {}
        for run in self.plan.runs:
            run_dir = rundir.trial_dir(self.out, run.id)
            if (run_dir / rundir.CONFIG_YAML).exists():
                differences = config_differences(rundir.read_config(run_dir), self._run_config(run, data, splits, device)[2])
                if differences:
                    changed[f"trials/{run.id}"] = differences
        if changed:
            raise UserError(changed_config_message(self.out, changed))

    def _metrics(self, run: Run, trainer: Trainer, fit: Any, task: Task, splits: dict[str, Split],
                 data: StudyData) -> dict[str, Any]:
        history = fit.history
        metrics: dict[str, Any] = {
            "format": rundir.FORMAT, "run": run.id, "trial": run.trial.id, "seed": run.seed, "status": fit.status,
            "epochs_done": len(history), "diverged_epoch": fit.diverged_epoch,
            "best_epoch": fit.best.get("epoch"), "best_val_loss": fit.best.get("val_loss"),
            "val_acc": fit.best.get("val_acc"), "highest_val_acc": fit.best.get("best_val_acc"),
            "highest_val_acc_epoch": fit.best.get("best_val_acc_epoch"),
            "monitor": trainer.config.training.monitor,
            "final_val_acc": history[-1]["val_acc"] if history else None,
            "seconds": round(sum(r["seconds"] for r in history), 3),
            "synthetic_data": data.synthetic, "data_fingerprint": data.fingerprint(),
            "loss": task.loss_name, "num_outputs": task.num_outputs, "threads": torch.get_num_threads(),
            "evaluation_config": to_plain(self.study.evaluation),
        }
        if fit.status != rundir.DONE or not (trainer.run_dir / "best.pt").exists():
            return metrics
        epoch = trainer.load_best()
        batch = trainer.config.training.eval_batch_size
        names = data.images.class_names
        val_ids = [i for i, s in zip(data.images.ids, data.split) if s == VAL]
        val_eval = evaluate(trainer.model, task, splits["val"], batch, keep_predictions=True)
        test_eval = evaluate(trainer.model, task, splits["test"], batch, keep_predictions=True) \
            if "test" in splits else None
        report, threshold = evaluate_trial(_predictions(splits["val"], val_eval),
                                           _predictions(splits["test"], test_eval) if test_eval else None,
                                           self.study.evaluation, names)
        metrics.update(checkpoint_epoch=epoch, threshold=threshold, evaluation=report)
        rundir.write_predictions(rundir.predictions_file(trainer.run_dir, "val"), val_ids, _labels(splits["val"]),
                                 val_eval.probabilities, val_eval.decisions, names, threshold)
        if test_eval is not None and data.test is not None:
            rundir.write_predictions(rundir.predictions_file(trainer.run_dir, "test"), data.test.ids, _labels(splits["test"]),
                                     test_eval.probabilities, test_eval.decisions, names, threshold)
            metrics["test"] = {"checkpoint": "best.pt", "checkpoint_epoch": epoch, "accuracy": test_eval.accuracy,
                               "loss": test_eval.loss, "confusion_matrix": test_eval.confusion,
                               "count": test_eval.count, "class_names": names}
        return metrics

    def _report_run(self, run: Run, metrics: dict[str, Any]) -> None:
        if metrics["status"] == rundir.DONE:
            test = metrics.get("test")
            tail = f", test acc {test['accuracy']:.3f}" if test else ""
            self.console.print(f"[green]done[/] {run.id}: val acc {metrics['val_acc']:.3f} of best.pt (epoch "
                               f"{metrics['best_epoch']}, by {metrics['monitor']}); highest val acc at any epoch "
                               f"{metrics['highest_val_acc']:.3f} (epoch {metrics['highest_val_acc_epoch']}){tail}, "
                               f"{metrics['seconds']:.0f} s")
        elif metrics["status"] == rundir.DIVERGED:
            self.console.print(f"[yellow]diverged[/] {run.id}: non-finite loss at epoch {metrics['diverged_epoch']}")

    def _figure_note(self) -> str:
        return FIGURE_NOTE if self.data_note == "synthetic phantom" else ""

    # -------------------------------------------------------------- outputs

    def write_outputs(self) -> None:
        """Everything after training, from the run folder alone (the same as `medablate compare`)."""
        analysis = self.analysis = write_analysis(self.out)
        for comparison, texts in analysis.sentences.items():
            self.console.print(f"[bold]{comparison}[/]")
            for text in texts:
                self.console.print(f"  {text}", highlight=False)

    def _summarise(self, statuses: list[str]) -> int:
        counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
        self.console.print("Runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
        if self.elsewhere:
            self.console.print(f"{len(self.elsewhere)} run(s) were being trained by another medablate process on this "
                               f"folder ({', '.join(self.elsewhere)}): that process writes the analysis with them when "
                               "it finishes (or run `medablate compare` / `report` on the folder later).",
                               highlight=False)
        self.console.print(f"Results: {self.out / 'results.csv'} (per run), {self.out / 'summary.csv'} (per trial), "
                           f"{self.out / 'comparisons.csv'}\nReport:  {self.out / 'report.html'} and report.md\n"
                           f"Tables:  {self.out / 'tables.md'}\n"
                           f"Figures: {self.out / 'figures'}/ and {self.out / 'trials'}/*/curves.png")
        return 0 if rundir.FAILED not in statuses else 1


def trial_figures(run_dir: Path, metrics: dict[str, Any], title: str, note: str) -> None:
    """ROC, PR, confusion matrix and reliability diagram of one trial, from its prediction files."""
    curves = rundir.positive_curves(run_dir, metrics["evaluation"].get("positive_class"))
    threshold = metrics.get("threshold")
    if curves:
        plots.roc_pr(run_dir / "roc.png", run_dir / "pr.png", curves, threshold, title, note)
        plots.reliability(run_dir / "reliability.png", curves, f"{title}: calibration")
    shown = "test" if "test" in metrics["evaluation"] else "val"
    section = metrics["evaluation"][shown]
    at = "at_threshold" if "at_threshold" in section else "at_0.5"
    rule = f"threshold {threshold:.3g}" if at == "at_threshold" else "the loss's rule"
    names = (metrics.get("test") or {}).get("class_names") or [str(i) for i in range(len(section[at]["confusion_matrix"]))]
    plots.confusion(run_dir / "confusion.png", section[at]["confusion_matrix"], names, f"{shown}, {rule}")


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


def saved_predictions(path: Path, class_names: list[str]) -> tuple[list[str], Predictions] | None:
    """Image ids and predictions from a predictions_*.csv (None when the file is absent)."""
    found = rundir.read_prediction_arrays(path, class_names)
    return (found[0], Predictions(*found[1:])) if found else None


def reevaluate(run_dir: Path, config: EvaluationConfig, test: ImageSet | None, title: str, note: str) -> bool:
    """Apply the study's evaluation settings to a finished run from its saved predictions (no retraining): the
    threshold, every metric, the prediction files, the figures and the examples. False when nothing changed."""
    metrics = rundir.metrics_or_empty(run_dir)
    wanted = to_plain(config)
    if metrics.get("status") != rundir.DONE or "evaluation" not in metrics or metrics.get("evaluation_config") == wanted:
        return False
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
    metrics.update(threshold=threshold, evaluation=report, evaluation_config=wanted)
    write_run_outputs(run_dir, metrics, test if (run_dir / rundir.EXAMPLES_JSON).exists() else None, title, note)
    return True


def write_run_outputs(run_dir: Path, metrics: dict[str, Any], test: ImageSet | None, title: str, note: str) -> None:
    """A run's figures and example images (when it was evaluated), then metrics.json last: a run is finished, or
    current, only when all of it is written."""
    if metrics.get("evaluation"):
        trial_figures(run_dir, metrics, title, note)
        if test is not None:
            write_examples(run_dir, test.images, test.labels, test.ids, metrics.get("threshold"))
    faults.point("before-metrics")
    atomic.write_json(run_dir / rundir.METRICS_JSON, metrics)


def _labels(split: Split) -> np.ndarray:
    return split.labels.cpu().numpy()


def _predictions(split: Split, result: Any) -> Predictions:
    return Predictions(_labels(split), result.probabilities, result.decisions)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

