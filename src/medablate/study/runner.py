"""Run a whole study: load data once, split once, train every run (trial x seed), evaluate, write outputs.

Finished runs are skipped and interrupted ones resume, so running the same command again after a
crash finishes the study with the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from medablate.analysis.compare import Analysis
from medablate.config.schema import Study, to_plain
from medablate.core import atomic, children, provenance
from medablate.data.sources.image_folder import INTENSITY
from medablate.data.sources.phantom import FIGURE_NOTE
from medablate.data.split import (
    CV,
    TRAIN,
    VAL,
    split_rows,
)
from medablate.errors import UserError
from medablate.execute import mlflow_log
from medablate.execute.executors import StudyJob, executor
from medablate.execute.plan import expand, read_study, reference_trial, scaling_notes
from medablate.execute.prepare import (
    RunContext,
    StudyData,
    changed_config_message,
    check_buildable,
    check_models,
    check_weights_used,
    config_differences,
    data_note,
    load_study_data,
    tensors,
)
from medablate.execute.run import run_config, weights_used
from medablate.folder import claims, layout, rundir
from medablate.folder.records import DataFacts, Duplicates, Machine, RunListing, StudyInfo
from medablate.report import run_figures
from medablate.report.outputs import write_outputs
from medablate.report.report import build_report
from medablate.train.engine import configure_threads, resolve_device, usable_cores

HELPERS = 6  # at most this many helper processes draw beside the runs


class StudyRunner:
    def __init__(self, study: Study, out: Path, console: Console, command: str = "", threads: int | None = None,
                 workers: int = 1) -> None:
        self.study, self.out, self.console, self.command = study, Path(out), console, command
        self.threads, self.workers, self.show_progress = threads, workers, True
        # the CLI's choice: a thread writes each run's final checkpoints while the next trains, and the runs' figures
        # are drawn by spawned processes; a library caller's script must then guard its entry point
        # (if __name__ == "__main__"), as for any spawned process
        self.background = False
        self.executor: str = "local"  # or ray (--executor ray [--address])
        self.ray_address: str | None = None
        self.ray_resources: dict[str, float] = {}
        self.elsewhere: list[str] = []  # runs another process was training while this one ran
        self.detach = False  # --detach (--executor slurm): return once the runs are submitted
        self.plan = expand(study)
        check_weights_used(study, self.plan)
        check_buildable(self.plan)
        if study.tracking.mlflow is not None:
            mlflow_log.require_mlflow()  # before anything loads
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
        for folder in (layout.TRIALS, layout.FIGURES, layout.ENSEMBLES):
            claims.real_folder(out / folder, parent=False)

    def _prepare_folder(self, data: StudyData) -> StudyInfo:
        self.out.mkdir(parents=True, exist_ok=True)
        previous = None
        if (self.out / rundir.STUDY_JSON).exists():
            try:
                previous = read_study(self.out)[0]  # the record and the study it names must both read
            except UserError as exc:  # every run's config is checked on its own, so study.json can be rewritten
                self.console.print(f"[yellow]Note:[/] {escape(str(exc).split(': run the study again')[0])}; "
                                   "writing it anew.", highlight=False)
        fingerprint = data.fingerprint()
        if previous and previous.data_fingerprint != fingerprint:
            raise UserError(f"{self.out} holds a study run on different data or a different split "
                            f"(fingerprint {str(previous.data_fingerprint)[:12]}, now {fingerprint[:12]}): "
                            "use another --out folder, or delete this one to start over.")
        if previous and previous.name != self.study.name:
            raise UserError(f"{self.out} holds study '{previous.name}', not '{self.study.name}': "
                            "use another --out folder.")
        rows, columns = split_rows(data.images, data.split, data.patients, data.hashes, data.folds)
        atomic.write_csv(self.out / rundir.SPLIT_CSV, rows, columns)
        facts = DataFacts(source=data.images.source, class_names=data.images.class_names,
                          image_shape=list(data.images.image_shape), counts=data.counts(), intensity=INTENSITY,
                          test_from=data.test_from, split_used=data.split_used(self.study.data.split),
                          patients=data.patient_counts(),
                          duplicates=Duplicates.model_validate(data.duplicates) if data.duplicates else None,
                          channels=data.images.channels, normalize=self.study.data.normalize)
        return StudyInfo(
            format=rundir.FORMAT, name=self.study.name, command=self.command, status="running",
            started=(previous.started if previous else None) or _now(), resumed=_now() if previous else None,
            finished=None, synthetic_data=data.synthetic, notes=data.notes, data_fingerprint=fingerprint,
            data=facts, weights=weights_used(self.plan),
            trials=len(self.plan.trials), seeds=self.plan.seeds, folds=len(self.plan.folds) or None,
            runs=len(self.plan.runs),
            run_list=[RunListing(run=r.id, trial=r.trial.id, seed=r.seed, epochs=r.trial.config.training.epochs,
                                 fold=list(r.fold) if r.fold else None)
                      for r in self.plan.runs],
            versions=provenance.versions(), study=to_plain(self.study))

    def run(self) -> int:
        started = time.perf_counter()
        self.check_output_folder()
        data = load_study_data(self.study, self.console)
        for note in scaling_notes(self.plan) + data.notes:
            self.console.print(f"[yellow]Note:[/] {escape(note)}", highlight=False)
        self.data_note = data_note(data)
        check_models(self.plan, data.images.input_shape, len(data.images.class_names))
        info = self._prepare_folder(data)
        removed = rundir.remove_stale_temp_files(self.out, recursive=True)
        if removed:
            self.console.print(f"removed {removed} half-written temp file(s) left by a killed process", highlight=False)
        threads, threads_from = configure_threads(self.threads)
        device = resolve_device(self.study.training.device)
        info.machine = Machine.model_validate(provenance.machine(device) | {"torch_threads": threads,
                                                                            "threads_from": threads_from})
        context = RunContext(self.study, self.out, data, tensors(data, device), device)
        self._check_configs(context)
        mlflow_log.prepare_study(self.out, self.study, self.plan)
        rundir.write_study_info(self.out, info)
        shared = sum(1 for r in self.plan.runs if r.twin)
        taken = f" ({shared} scoring another trial's training: only their threshold rule differs)" if shared else ""
        self.console.print(f"Study [bold]{self.study.name}[/]: {self.shape()} = {len(self.plan.runs)} runs{taken} on "
                           f"{device}; "
                           + (f"{int((data.split == CV).sum())} images in {self.study.data.split.folds} folds"
                              if self.plan.folds else
                              f"{int((data.split == TRAIN).sum())} train / {int((data.split == VAL).sum())} val images")
                           + (f", {len(data.test)} test" if data.test is not None else "") + f" -> {self.out}")
        timing = {"setup": time.perf_counter() - started}
        job = StudyJob(self.study, self.out, self.plan, self.console, threads, self.data_note, self.workers,
                       self.background, self.show_progress, self.ray_address, self.ray_resources, self.elsewhere,
                       self.detach, run_figures.draw_in_task)
        name = self.executor if self.executor != "local" else "workers" if self.workers > 1 else "local"
        with self.helpers(job, context) as helpers:
            with helpers.watch(self.run_figure_list(), self._figure_note()) if helpers else nullcontext():
                statuses = executor(name)(job, context)
            timing["runs"] = time.perf_counter() - started - timing["setup"]
            if self.detach:
                info.status, info.executor = "submitted", self.executor
                rundir.write_study_info(self.out, info)
                return 0
            self.draw_run_figures(context, helpers)
            mlflow_log.log_artifacts(self.out, self.study, self.plan)
            timing["figures"] = time.perf_counter() - started - sum(timing.values())
            mapper = children.mapper_of(helpers.pool if helpers else None)
            self.write_outputs(mapper)
            timing["analysis"] = time.perf_counter() - started - sum(timing.values())
            now = [rundir.run_status(rundir.trial_dir(self.out, r.id)) for r in self.plan.runs]  # other processes' too
            info.status = "finished" if all(s in rundir.FINISHED for s in now) else "incomplete"
            info.finished, info.seconds_this_invocation = _now(), round(time.perf_counter() - started, 1)
            info.workers, info.executor = job.workers, self.executor  # fewer where fewer groups were left
            rundir.write_study_info(self.out, info)
            build_report(self.out, self.analysis, mapper)
        timing["report"] = time.perf_counter() - started - sum(timing.values())
        info.timing_seconds = {k: round(v, 3) for k, v in timing.items()}  # setup, runs, analysis, report
        rundir.write_study_info(self.out, info)
        return self._summarise(statuses)

    def shape(self) -> str:
        """trials x seeds (x folds), in words."""
        split = self.study.data.split
        folds = (f" x {split.folds} folds" + (f" x {split.repeats} repeats" if split.repeats > 1 else "")
                 if self.plan.folds else "")
        return f"{len(self.plan.trials)} trials x {len(self.plan.seeds)} seed(s){folds}"

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
                    changed[f"{layout.TRIALS}/{run.id}"] = differences
        if changed:
            raise UserError(changed_config_message(self.out, changed))

    @contextmanager
    def helpers(self, job: StudyJob, context: RunContext) -> Iterator[run_figures.Helpers | None]:
        """Processes that draw each run's figures while the next runs train, then the analysis's ensembles and
        figures at once: as many as the cores the training leaves free (a run on a GPU keeps one core busy, a run on
        the CPU its torch threads), at most 6, where at least 2 are free (a start costs seconds of a core), or as
        many as $MEDABLATE_FIGURE_PROCESSES says; none from a library caller (no spawning) or where the runs train
        elsewhere (Ray, Slurm). Each starts with the study's test images, for the runs' examples."""
        busy = job.workers if context.device.type == "cuda" else job.workers * max(1, job.threads // job.workers)
        free, forced = usable_cores() - busy, run_figures.forced_processes()
        count = forced if forced is not None else min(HELPERS, free) if free >= 2 else 0
        count = count if self.background and self.executor == "local" else 0
        if count < 1:
            yield None
            return
        with run_figures.Helpers.started(count, context.data.test, self.study.data.image_size) as helpers:
            yield helpers

    def run_figure_list(self) -> list[tuple[Path, str, int]]:
        """Each run's (folder, figure title, image size)."""
        return [(rundir.trial_dir(self.out, r.id), f"{self.study.name}: {r.id}", r.trial.config.image_size)
                for r in self.plan.runs]

    def draw_run_figures(self, context: RunContext, helpers: run_figures.Helpers | None = None) -> None:
        """Each run's own figures and examples not drawn yet (by the helpers, else in parallel processes from the
        CLI where that is quicker)."""
        runs = self.run_figure_list()
        cores = usable_cores()
        with self.console.status("Drawing each run's figures and examples..."):
            tests = {size: context.at_size(size).data.test for size in sorted({s for _, _, s in runs})}
            run_figures.draw_all(runs, self._figure_note(), tests, cores if self.background else 1, helpers)

    def _figure_note(self) -> str:
        return FIGURE_NOTE if self.data_note == "synthetic phantom" else ""

    # -------------------------------------------------------------- outputs

    def write_outputs(self, mapper: children.Mapper = children.in_turn) -> None:
        """Everything after training, from the run folder alone (the same as `medablate compare`)."""
        analysis = self.analysis = write_outputs(self.out, mapper)
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
        out = self.out
        self.console.print(f"Results: {out / layout.RESULTS_CSV} (per run), {out / layout.SUMMARY_CSV} (per trial), "
                           f"{out / layout.COMPARISONS_CSV}\nReport:  {out / layout.REPORT_HTML} and {layout.REPORT_MD}\n"
                           f"Tables:  {out / layout.TABLES_MD}\n"
                           f"Figures: {out / layout.FIGURES}/ and {out / layout.TRIALS}/*/{layout.CURVES_PNG}")
        return 0 if rundir.FAILED not in statuses else 1


def report_study(out: Path, console: Console) -> tuple[Path, Path]:
    """`medablate report`: the analysis and the report from the folder alone. A detached study (`--executor slurm
    --detach`) whose runs are all done is then marked finished, and its runs' figures go to MLflow."""
    info = rundir.read_study_info(out)
    statuses = [rundir.run_status(rundir.trial_dir(out, r.run)) for r in info.run_list]
    unfinished = sum(s not in rundir.FINISHED for s in statuses)
    if unfinished:
        console.print(f"[yellow]Note:[/] {unfinished} of {len(statuses)} runs are not finished (`medablate status "
                      f"{escape(str(out))}` shows them): the analysis and report cover the finished ones.",
                      highlight=False)
    analysis = write_outputs(out)
    if info.status == "submitted" and not unfinished:
        study = read_study(out)[1]
        mlflow_log.log_artifacts(out, study, expand(study))
        info.status, info.finished = "finished", _now()
        rundir.write_study_info(out, info)
    return build_report(out, analysis)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

