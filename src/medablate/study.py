"""Run a whole study: load data once, split once, train every run (trial x seed), evaluate, write outputs.

Finished runs are skipped and interrupted ones resume, so running the same command again after a
crash finishes the study with the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import errno
import functools
import os
import hashlib
import json
import time
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

from medablate import atomic, claims, provenance, results, rundir
from medablate.clinical import Predictions, evaluate_trial
from medablate.compare import Analysis, write_analysis
from medablate.config import EvaluationConfig, Study, to_plain
from medablate.data import load_data, load_test
from medablate.data.duplicates import find_duplicates, pixel_hashes
from medablate.data.image_folder import INTENSITY
from medablate.data.phantom import FIGURE_NOTE
from medablate.data.split import (KERMANY_PATIENTS, SPLIT_COLUMNS, TEST, TRAIN, VAL, group_ids, looks_patient_named,
                                  make_split, split_rows, uses_source_split)
from medablate.data.types import ImageSet
from medablate.engine import Split, configure_threads, resolve_device, usable_cores
from medablate.errors import UserError
from medablate.execute import Event, Finisher, RunContext, execute_run, run_config
from medablate import run_figures
from medablate.optim import build_optimizer, build_scheduler
from medablate.plan import Plan, Run, expand, reference_trial, scaling_notes
from medablate.report import build_report
from medablate.config import flatten
from medablate.tracking import require_tensorboard

DROPPED = "dropped-duplicate"


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


def check_models(plan: Plan, shape: tuple[int, int, int], num_classes: int) -> None:
    """Build each distinct model of the study for the data's (C, H, W) images on the CPU and run two images through
    it, so a network that does not fit the data (a segmentation net's dense output, an input too small for its
    downsampling) or an unreadable weights file fails before anything trains."""
    from medablate.engine import build_trial_model
    from medablate.models import network
    from medablate.models.weights import load_weights
    from medablate.tasks import make_task

    seen: set[str] = set()
    for trial in plan.trials:
        config, key = trial.config, json.dumps(to_plain(trial.config.model), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        outputs = make_task(config.training.loss, num_classes).num_outputs
        try:
            model = build_trial_model(config, shape, outputs).eval()
            if config.model.weights is not None:
                load_weights(network(model), config.model.weights)
            with torch.no_grad():
                logits = model(torch.rand(2, *shape))
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"trial '{trial.id}': model {config.model.name} cannot take {shape[0]}x{shape[1]}x{shape[2]} "
                            f"images ({type(exc).__name__}: {exc}). Choose another network or data.image_size.") from None
        if tuple(logits.shape) != (2, outputs):
            raise UserError(f"trial '{trial.id}': model {config.model.name} returns {tuple(logits.shape[1:])} per "
                            f"image, not {outputs} logit(s): it is not a classifier (a segmentation network?). "
                            "Choose a classification network.")


def check_weights_used(study: Study, plan: Plan) -> None:
    """model.weights that no trial starts from (each level of `vary: {model.name: [...]}` starts its model section
    afresh) would be accepted and ignored: refuse them, saying where the weights go instead."""
    if study.model.weights is not None and not any(t.config.model.weights is not None for t in plan.trials):
        raise UserError(f"model.weights is {study.model.weights}, but no trial starts from it: the comparisons vary "
                        "the model, and each level of model.name starts with that model's own defaults. Give the "
                        "weights with the level that uses them, e.g. vary: {model: [{name: cnn, weights: FILE}, "
                        "{name: mlp}]}, or remove model.weights.")


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
    check_split_sizes(split, test, duplicates)
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


def check_split_sizes(split: np.ndarray, test: ImageSet | None, duplicates: dict[str, Any] | None) -> None:
    """Every split has images left to train, validate and test on (after duplicate removal, which can take them
    all: a folder of identical images, or a test set copied from the training images)."""
    removed = sum((duplicates or {}).get("removed", {}).values())
    why = (f" after removing {removed} duplicate image(s) (identical pixels; data.duplicates: drop)" if removed else "")
    fix = ("Check the data (are the images really different? data.duplicates: keep keeps repeats, but a model "
           "cannot learn from identical images), or change data.split.")
    if int((split == TRAIN).sum()) < 2:
        raise UserError(f"the training split has {int((split == TRAIN).sum())} image(s){why}: at least 2 are needed. "
                        + fix)
    if not (split == VAL).any():
        raise UserError(f"the validation split is empty{why}: no epoch could be scored or checkpoint chosen. " + fix)
    if test is not None and len(test) == 0:
        raise UserError(f"the test set is empty{why}: every test image repeats a training or validation image. " + fix)


RUNTIME_KEYS = ("training.device", "training.eval_batch_size", "training.tensorboard", "training.checkpoint_every",
                "training.keep_checkpoints",
                "training.compile", "training.channels_last", "resolved.device")
# how a value came to be, not what it is (the scheduler's step counts are compared as scaled)
BOOKKEEPING = ("training.scheduler.written_for_epochs", "training.scheduler.scaled_from")
IDENTITY_SECTIONS = ("model", "training", "augment", "normalize", "tta", "seed", "resolved")
# keys added after runs were first written: a run folder without them had their default
NEW_KEY_DEFAULTS = {"model.weights": None, "training.precision": "fp32", "normalize": "none", "tta": "none",
                    "augment.crop_scale": None, "augment.crop_ratio": [0.75, 1.3333], "augment.gamma": 0.0,
                    "augment.noise": 0.0, "augment.blur": 0.0}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every identity key of a run that differs (runtime settings such as the device and the
    evaluation batch size are not part of a run's identity)."""
    before = flatten({k: old[k] for k in IDENTITY_SECTIONS if k in old})
    after = flatten({k: new[k] for k in IDENTITY_SECTIONS if k in new})
    keys = [k for k in dict.fromkeys([*before, *after]) if k not in RUNTIME_KEYS and not k.startswith(BOOKKEEPING)]
    default = lambda k, side: side.get(k, NEW_KEY_DEFAULTS.get(k, "(unset)"))  # noqa: E731
    return [f"{k}: {default(k, before)} -> {default(k, after)}" for k in keys if default(k, before) != default(k, after)]


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
        # the CLI's choice: a thread writes each run's final checkpoints while the next trains, and the runs' figures
        # are drawn by spawned processes; a library caller's script must then guard its entry point
        # (if __name__ == "__main__"), as for any spawned process
        self.background = False
        self.executor, self.ray_address, self.ray_resources = "local", None, {}  # --executor ray [--address]
        self.elsewhere: list[str] = []  # runs another process was training while this one ran
        self.plan = expand(study)
        check_weights_used(study, self.plan)
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
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
            probe.unlink()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise UserError(f"cannot write to --out {out} ({exc.strerror or exc}): make it writable (or mount it "
                            "read-write), or choose another folder.") from None
        for folder in ("trials", "figures", "ensembles"):
            claims.real_folder(out / folder, parent=False)

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
                     "patients": self._patients(data), "duplicates": data.duplicates,
                     "channels": data.images.channels, "normalize": self.study.data.normalize},
            "weights": self._weights(),
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

    def _weights(self) -> dict[str, str]:
        """Starting weights files of the study's models: path -> SHA-256."""
        from medablate.execute import weights_record

        records = [weights_record(t.config) for t in self.plan.trials]
        return {r["weights"]: r["weights_sha256"] for r in records if r}

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
        for note in scaling_notes(self.plan) + data.notes:
            self.console.print(f"[yellow]Note:[/] {escape(note)}", highlight=False)
        self.data_note = "synthetic phantom" if data.synthetic else data.images.source
        check_models(self.plan, data.images.input_shape, len(data.images.class_names))
        info = self._prepare_folder(data)
        removed = rundir.remove_stale_temp_files(self.out, recursive=True)
        if removed:
            self.console.print(f"removed {removed} half-written temp file(s) left by a killed process", highlight=False)
        threads, threads_from = configure_threads(self.threads)
        device = resolve_device(self.study.training.device)
        info["machine"] = provenance.machine(device) | {"torch_threads": threads, "threads_from": threads_from}
        splits = self._tensors(data, device)
        self._check_configs(RunContext(self.study, self.out, data, splits, device))
        atomic.write_json(self.out / rundir.STUDY_JSON, info)
        self.console.print(f"Study [bold]{self.study.name}[/]: {len(self.plan.trials)} trials x "
                           f"{len(self.plan.seeds)} seed(s) = {len(self.plan.runs)} runs on {device}; "
                           f"{int((data.split == TRAIN).sum())} train / {int((data.split == VAL).sum())} val images"
                           + (f", {len(data.test)} test" if data.test is not None else "") + f" -> {self.out}")
        timing = {"setup": time.perf_counter() - started}
        if self.executor == "ray":
            from medablate.ray_executor import train_on_ray

            statuses = train_on_ray(self, self.ray_address, self.ray_resources)
        elif self.workers > 1:
            from medablate.workers import train_in_workers

            statuses = train_in_workers(self, max(1, threads // self.workers))
        else:
            statuses = self._train_all(data, splits, device, self.background)
        timing["runs"] = time.perf_counter() - started - timing["setup"]
        self.draw_run_figures(data)
        timing["figures"] = time.perf_counter() - started - sum(timing.values())
        self.write_outputs()
        timing["analysis"] = time.perf_counter() - started - sum(timing.values())
        now = [rundir.run_status(rundir.trial_dir(self.out, r.id)) for r in self.plan.runs]  # other processes' too
        info.update(status="finished" if all(s in rundir.FINISHED for s in now) else "incomplete",
                    finished=_now(), seconds_this_invocation=round(time.perf_counter() - started, 1),
                    workers=self.workers, executor=self.executor)
        atomic.write_json(self.out / rundir.STUDY_JSON, info)
        build_report(self.out, self.analysis)
        timing["report"] = time.perf_counter() - started - sum(timing.values())
        info["timing_seconds"] = {k: round(v, 3) for k, v in timing.items()}  # setup, runs, analysis, report
        atomic.write_json(self.out / rundir.STUDY_JSON, info)
        return self._summarise(statuses)

    def prepare_context(self) -> RunContext:
        """A worker's or Ray task's view of a study the driver has prepared: the data (the decode cache makes it
        quick) on this process's device, printing nothing."""
        data = load_study_data(self.study, Console(quiet=True))
        self.data_note = "synthetic phantom" if data.synthetic else data.images.source
        configure_threads(self.threads)
        device = resolve_device(self.study.training.device)
        return RunContext(self.study, self.out, data, self._tensors(data, device), device)

    def train_only(self) -> list[str]:
        """A worker's part: train every run nobody else holds."""
        context = self.prepare_context()
        return self._train_all(context.data, context.splits, context.device)

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

    def _train_all(self, data: StudyData, splits: dict[str, Split], device: torch.device,
                   background: bool = False) -> list[str]:
        """Train every run nobody else holds, one after another; with background, a run's final checkpoints and
        metrics.json are written while the next one trains (the claim is kept until they are)."""
        runs = self.plan.runs
        context = RunContext(self.study, self.out, data, splits, device)
        statuses: list[str] = []
        with self._progress() as progress, Finisher(background) as finisher:
            render = ProgressEvents(self, progress, sum(r.trial.config.training.epochs for r in runs))
            for index, run in enumerate(runs, 1):
                statuses.append(self._one(run, index, context, render, finisher))
            finisher.wait()
            results.write_results(self.out, self.plan, self.data_note)
        return statuses

    def _one(self, run: Run, index: int, context: RunContext, render: "ProgressEvents", finisher: Finisher) -> str:
        run_dir = rundir.trial_dir(self.out, run.id)
        epochs = run.trial.config.training.epochs
        status = rundir.run_status(run_dir)
        if status in rundir.FINISHED:
            render.skip(epochs)
            if reevaluate(run_dir, self.study.evaluation):
                self.console.print(f"re-evaluated {run.id} with evaluation {to_plain(self.study.evaluation)} "
                                   "from its saved predictions (no retraining)", highlight=False)
            return status
        if status == rundir.DAMAGED:
            self.console.print(f"[yellow]{run.id}:[/] {escape(rundir.damage_of(run_dir))}; redoing the run from its "
                               "last good checkpoint (the same numbers).", highlight=False)
        claim = claims.try_claim(run_dir)
        if claim is None:  # another live process trains it: leave it to that one
            render.skip(epochs)
            self.elsewhere.append(run.id)
            return rundir.RUNNING
        handed_over = False
        try:  # re-read under the claim: another process may have finished it since the check above
            status = rundir.run_status(run_dir)
            if status in rundir.FINISHED:
                render.skip(epochs)
                return status
            render.label(run.id, f"run {index}/{len(self.plan.runs)} {run.id}", epochs)
            def written() -> None:  # every file of the run is on disk: others may take it, results.csv shows it
                claims.release(claim)
                results.write_results(self.out, self.plan, self.data_note)

            status = execute_run(run, context, render, finisher, on_written=written)
            handed_over = True
            return status
        finally:
            if not handed_over:
                claims.release(claim)

    def _check_configs(self, context: RunContext) -> None:
        """Every run already in the folder, finished or not, must be the run the study now asks for."""
        changed = {}
        for run in self.plan.runs:
            run_dir = rundir.trial_dir(self.out, run.id)
            try:
                saved = rundir.read_config(run_dir)
            except rundir.DamagedFile:
                continue  # none yet, or damaged: the run is (re)done and its config.yaml written anew
            if saved:
                differences = config_differences(saved, run_config(run, context)[2])
                if differences:
                    changed[f"trials/{run.id}"] = differences
        if changed:
            raise UserError(changed_config_message(self.out, changed))

    def report_run(self, metrics: dict[str, Any]) -> None:
        if metrics["status"] == rundir.DONE:
            test = metrics.get("test")
            tail = f", test acc {test['accuracy']:.3f}" if test else ""
            self.console.print(f"[green]done[/] {metrics['run']}: val acc {metrics['val_acc']:.3f} of best.pt (epoch "
                               f"{metrics['best_epoch']}, by {metrics['monitor']}); highest val acc at any epoch "
                               f"{metrics['highest_val_acc']:.3f} (epoch {metrics['highest_val_acc_epoch']}){tail}, "
                               f"{metrics['seconds']:.0f} s")
        elif metrics["status"] == rundir.FAILED:
            self.console.print(f"[red]run {metrics['run']} failed:[/] {escape(metrics['error'])} (details in "
                               f"{rundir.trial_dir(self.out, metrics['run'])}/metrics.json)", highlight=False)
        elif metrics["status"] == rundir.DIVERGED:
            self.console.print(f"[yellow]diverged[/] {metrics['run']}: non-finite loss at epoch {metrics['diverged_epoch']}")

    def draw_run_figures(self, data: StudyData) -> None:
        """Each run's own figures and examples, drawn after training (in parallel processes from the CLI)."""
        runs = [(rundir.trial_dir(self.out, r.id), f"{self.study.name}: {r.id}") for r in self.plan.runs]
        cores = usable_cores()
        with self.console.status("Drawing each run's figures and examples..."):
            run_figures.draw_all(runs, self._figure_note(), data.test, cores if self.background else 1)

    def _figure_note(self) -> str:
        return FIGURE_NOTE if self.data_note == "synthetic phantom" else ""

    # -------------------------------------------------------------- outputs

    def write_outputs(self) -> None:
        """Everything after training, from the run folder alone (the same as `medablate compare`)."""
        analysis = self.analysis = write_analysis(self.out)
        for comparison, texts in analysis.sentences.items():
            self.console.print(f"[bold]{escape(comparison)}[/]")
            for text in texts:
                self.console.print(f"  {escape(text)}", highlight=False)

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


class ProgressEvents:
    """Renders the runs' Events: a bar for the study (epochs) and one for the run in training (steps), and a
    line per finished run."""

    def __init__(self, runner: StudyRunner, progress: Progress, total_epochs: int) -> None:
        self.runner, self.progress = runner, progress
        self.study_task = progress.add_task(f"study {runner.study.name}", total=total_epochs)
        self.completed = 0  # epochs of the runs finished or skipped
        self.labels: dict[str, tuple[str, int]] = {}
        self.tasks: dict[str, Any] = {}

    def skip(self, epochs: int) -> None:
        self.completed += epochs
        self.progress.update(self.study_task, completed=self.completed)

    def label(self, run: str, text: str, epochs: int) -> None:
        self.labels[run] = (text, epochs)

    def __call__(self, event: Event) -> None:
        text, epochs = self.labels.get(event.run, (event.run, 0))
        if event.kind == "start":
            self.tasks[event.run] = self.progress.add_task(text, total=event.data["total"])
        elif event.kind == "batch" and event.run in self.tasks:
            self.progress.update(self.tasks[event.run], completed=event.data["done"])
        elif event.kind == "epoch":
            row = event.data["row"]
            self.progress.update(self.study_task, completed=self.completed + row["epoch"])
            if event.run in self.tasks:
                self.progress.update(self.tasks[event.run], description=f"{text} val_acc {row['val_acc']:.3f}")
        elif event.kind == "note":
            self.runner.console.print(f"[yellow]{event.run}:[/] {escape(event.data['text'])}", highlight=False)
        elif event.kind == "done":
            if event.run in self.tasks:
                self.progress.remove_task(self.tasks.pop(event.run))
            self.skip(epochs)
            self.runner.report_run(event.data["metrics"])


def saved_predictions(path: Path, class_names: list[str]) -> tuple[list[str], Predictions] | None:
    """Image ids and predictions from a predictions_*.csv (None when the file is absent)."""
    found = rundir.read_prediction_arrays(path, class_names)
    return (found[0], Predictions(*found[1:])) if found else None


def reevaluate(run_dir: Path, config: EvaluationConfig) -> bool:
    """Apply the study's evaluation settings to a finished run from its saved predictions (no retraining): the
    threshold, every metric and the prediction files (the figure step then redraws its figures and examples).
    False when nothing changed."""
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
    atomic.write_json(run_dir / rundir.METRICS_JSON, metrics)  # its figures are now stale: the figure step redraws them
    return True


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

