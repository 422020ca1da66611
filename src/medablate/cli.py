"""The `medablate` command: thin typer commands that parse, call one function, and print."""

from __future__ import annotations

import os
import signal
import sys


def _stop_before_start(signum: int, frame: object) -> None:
    """SIGTERM / SIGINT before a command has begun (while Python loads): nothing is written yet, so stop at once, with
    a word and the usual exit code (143 / 130), not the bare -15 of an unhandled signal."""
    sys.stderr.write("Stopped before anything was written; run the same command again.\n")
    os._exit(143 if signum == signal.SIGTERM else 130)


# as a command (not imported by a test or a notebook): from the first moment, a stop is a clean stop
COMMAND = os.path.basename(sys.argv[0]) in ("medablate", "cli.py")
if COMMAND:
    signal.signal(signal.SIGTERM, _stop_before_start)
    signal.signal(signal.SIGINT, _stop_before_start)

import errno
import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medablate import __version__
from medablate.config.files import require_study_file
from medablate.errors import Terminated, UserError, on_signal
from medablate.folder import layout
from medablate.folder.layout import require_finished_run, require_run_folder, require_study_folder

# Every command checks its arguments with the light modules above (the file system only), then imports what does
# the work inside its action: torch, matplotlib and scipy take seconds to load, and `--help` or a wrong path should
# answer at once. Each import below is placed for that reason.

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Honest, fast ablation studies of deep-learning classifiers on medical images.\n\n"
                       "Train every combination of a study's factors on the same split with several seeds, "
                       "keep the best checkpoints, evaluate on test data, and write tables and figures.")
console = Console(stderr=True)
def evaluate_sources() -> list[str]:
    """`evaluate --source` choices: auto and every registered source of real images (imported only when used)."""
    from medablate.data.sources import all_sources  # imports every data source (and numpy, PIL)

    return ["auto", *(name for name, source in all_sources().items() if source.real)]


out_console = Console()


def _guarded(action: Callable[[], Any]) -> Any:
    """Run a command; a UserError becomes one paragraph on stderr and exit code 2, never a traceback."""
    try:
        return action()
    except UserError as exc:
        console.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except Terminated:
        console.print("[yellow]Terminated (SIGTERM).[/] The run in progress stopped cleanly; run the same command "
                      "again to resume where it stopped.")
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted.[/] Run the same command again to resume where it stopped.")
        raise typer.Exit(130) from None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            console.print(f"[bold red]Error:[/] cannot write {escape(str(exc.filename or ''))} "
                          f"({escape(exc.strerror or str(exc))}). Make the output folder writable or choose another "
                          "--out, then run the same command again: nothing already written is lost.",
                          highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        console.print(f"[bold red]Error:[/] the disk is full ({escape(str(exc))}). Free some space (finished runs keep "
                      f"{layout.BEST_PT} only by default, about 130 MiB for the 256 px course MLP; `medablate status` shows "
                      "each run's disk) or choose another --out folder, then run the same command again: it resumes "
                      "where it stopped.",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _version(value: bool) -> None:
    if value:
        out_console.print(f"medablate {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """medablate command line."""
    if COMMAND:  # from here a stop raises, so each command's files stay whole and it says how it stopped
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)


@app.command()
def run(
    study_file: Path = typer.Argument(..., help="The study YAML (e.g. examples/course-hw2.yaml).", show_default=False),
    set_: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                   help="Override any key of the study, e.g. --set training.epochs=5 "
                                        "--set data.path=data/. The value is read as YAML; repeatable."),
    out: str | None = typer.Option(None, "--out", "-o", help="Output folder. Default: runs/<study name>."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and list the trials, train nothing."),
    workers: str = typer.Option("1", "--workers",
                                help="Worker processes training runs in parallel on this machine (they share the "
                                     "torch threads), or auto: one per GPU, or as many as one GPU's free memory "
                                     "and the cores allow (1 on a CPU). Several `medablate run` on one --out "
                                     "cooperate the same way."),
    executor: str = typer.Option("local", "--executor",
                                 help="local (this machine: --workers); ray: each run a Ray task, on a local Ray "
                                      "or the cluster at --address (needs pip install 'medablate\\[ray]'); slurm: "
                                      "each run a task of one Slurm job array (needs pip install 'medablate\\[slurm]'"
                                      "; --slurm-* options, --detach); any other executor in "
                                      "medablate/execute/executors/ by its name."),
    address: str | None = typer.Option(None, "--address",
                                          help="Ray: the cluster's address (e.g. 10.0.0.1:6379, or auto for the "
                                               "one `ray start` made on this machine). Default: a local Ray."),
    ray_resources: str | None = typer.Option(None, "--ray-resources", metavar="KEY=N,...",
                                                help="Ray: resources of each run's task, e.g. num_cpus=2,num_gpus=0.5. "
                                                     "Default: 1 CPU; a quarter GPU and 2 CPUs on GPU clusters."),
    threads: int | None = typer.Option(None, "--threads", min=1,
                                          help="Torch threads. Default: OMP_NUM_THREADS when set, else one per usable "
                                               "core; give fewer on a machine shared with other work."),
    detach: bool = typer.Option(False, "--detach", help="Slurm: return once the runs are queued; `medablate status "
                                                        "DIR` follows them, `medablate report DIR` writes the outputs."),
    slurm_partition: str | None = typer.Option(None, "--slurm-partition", help="Slurm: the partition "
                                                                                 "(runtime.slurm.partition)."),
    slurm_time: str | None = typer.Option(None, "--slurm-time", metavar="MINUTES|H:MM:SS",
                                          help="Slurm: each task's time limit; a task that reaches it is requeued and "
                                               "resumes (runtime.slurm.time, default 60)."),
    slurm_gpus: int | None = typer.Option(None, "--slurm-gpus", min=0, help="Slurm: GPUs per task (runtime.slurm.gpus; "
                                                                           "default 1 with training.device cuda)."),
    slurm_cpus: int | None = typer.Option(None, "--slurm-cpus", min=1, help="Slurm: CPUs per task, its torch threads "
                                                                           "(runtime.slurm.cpus, default 1)."),
    slurm_parallelism: int | None = typer.Option(None, "--slurm-parallelism", min=1,
                                                 help="Slurm: at most this many tasks at once (runtime.slurm."
                                                      "parallelism)."),
) -> None:
    """Train every trial of a study (resumes a study that was interrupted) and write its outputs."""

    signal.signal(signal.SIGTERM, on_signal)  # during training: after the batch, with a checkpoint of it
    signal.signal(signal.SIGINT, on_signal)

    def action() -> int:
        require_study_file(Path(study_file))
        from medablate.config.schema import load_study  # the schema imports torch (models, optimizers)
        from medablate.study.runner import StudyRunner  # the whole pipeline: torch, matplotlib, scipy

        check_threads(threads)
        if out is not None and not out.strip():
            raise UserError("--out is empty: give the folder the study is written to (it is created if needed), or "
                            "leave --out out for runs/<study name>.")
        slurm = {"partition": slurm_partition, "time": slurm_time, "gpus": slurm_gpus, "cpus": slurm_cpus,
                 "parallelism": slurm_parallelism}
        given = [f"runtime.slurm.{k}={json.dumps(v)}" for k, v in slurm.items() if v is not None]
        if (given or detach) and executor != "slurm":
            raise UserError("--detach and the --slurm-* options apply to --executor slurm: add --executor slurm, or "
                            "leave them out.")
        study, _ = load_study(study_file, [*set_, *given])
        folder = Path(out) if out is not None else Path("runs") / study.name
        command = "medablate " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        from medablate.core.registry import EXECUTORS  # the executors register themselves (execute/executors/)
        from medablate.execute.executors.workers import parse_workers  # torch (GPUs, cores)

        known = [name for name in EXECUTORS.names() if name != "workers"]  # workers: chosen by --workers
        if executor not in known:
            raise UserError(f"--executor {executor!r} is not known: use {' or '.join(known)} (local is the default).")
        if executor != "ray" and (address or ray_resources):
            raise UserError("--address and --ray-resources apply to --executor ray: add --executor ray, or leave them out.")
        runner = StudyRunner(study, folder, console, command, threads, parse_workers(workers, study.training.device))
        runner.background, runner.executor, runner.detach = True, executor, detach
        if executor == "slurm":
            from medablate.execute.executors.slurm import require_slurm, require_submitit  # only for --executor slurm

            if runner.workers > 1:
                raise UserError("--workers is for the local executor; with --executor slurm every run is a task of "
                                "one job array (--slurm-parallelism caps how many run at once).")
            require_submitit()
            require_slurm()
        if executor == "ray":
            from medablate.execute.executors.ray import parse_resources, require_ray  # only for --executor ray

            if runner.workers > 1:
                raise UserError("--workers is for the local executor; with --executor ray, Ray runs as many runs at "
                                "once as the cluster's resources allow (--ray-resources sets each run's share).")
            require_ray()
            runner.executor, runner.ray_address, runner.ray_resources = "ray", address, parse_resources(ray_resources)
        if dry_run:
            from medablate.data import data_index  # only for --dry-run

            index = data_index(study.data)  # a wrong data.path or a single class fails here, before the table
            _print_plan(runner)
            _print_data(study, *index)
            return 0
        return runner.run()

    code = _guarded(action)
    raise typer.Exit(code)


def check_threads(threads: int | None) -> None:
    """--threads within what the machine can run: torch starts that many threads per process."""
    from medablate.train.engine import usable_cores  # torch

    cores = usable_cores()
    if threads is not None and threads > 4 * cores:
        raise UserError(f"--threads {threads} is far more than the {cores} core(s) this process may use: torch would "
                        f"start {threads} threads that only wait for each other. Give at most {4 * cores} (usually "
                        f"{cores}), or leave --threads out.")


def _print_data(study: Any, name: str, counts: dict[str, dict[str, int]] | None) -> None:
    """--dry-run: what the data holds (source, layout, images per class), counted without decoding an image."""
    where = f" at {study.data.path}" if study.data.path else ""
    if counts is None:
        out_console.print(f"data: {name}{escape(where)} (counted when `run` loads it)", highlight=False)
        return
    parts = "; ".join(f"{split if split != 'all' else 'images'}: " + ", ".join(f"{c} {n}" for c, n in per.items())
                      for split, per in counts.items())
    layout = "one sub-folder per class" if set(counts) == {"all"} else " ".join(f"{s}/" for s in counts) + \
        (" folder, the study's split makes validation from it" if list(counts) == ["train"] else " folders")
    out_console.print(f"data: {name}{escape(where)} ({layout}); {escape(parts)}", highlight=False)


def _print_plan(runner: Any) -> None:
    table = Table(title=f"{runner.study.name}: {runner.shape()}")
    table.add_column("trial")
    table.add_column("comparisons")
    for key in runner.plan.varied_keys:
        table.add_column(key)
    for trial in runner.plan.trials:
        table.add_row(trial.id, ", ".join(trial.comparisons), *trial.labels.values())
    out_console.print(table)
    from medablate.execute.plan import scaling_notes  # the schema, torch

    for note in scaling_notes(runner.plan):
        out_console.print(f"schedule scaled: {escape(note)}", highlight=False)


@app.command()
def evaluate(
    trial_dir: Path = typer.Argument(..., help="A run folder: DIR/trials/<trial>-seed<k>.", show_default=False),
    data: Path | None = typer.Option(None, "--data", "-d",
                                        help="Data to evaluate on, in any form `run` reads (class folders of images "
                                             "or DICOM, .npy files, a manifest CSV, a MedMNIST .npz). Omit for the "
                                             "study's own test set."),
    source: str = typer.Option("auto", "--source", help="auto, or a data source as in the study file's data.source "
                                                          "(image-folder, dicom, npy-pair, manifest, medmnist, ...)."),
    files: str | None = typer.Option(None, "--files",
                                        help="npy-pair: comma-separated file per class, e.g. "
                                             "test_normal.npy,test_pneumonia.npy."),
    loss: str | None = typer.Option(None, "--loss", help="Expect this loss's rule (default: the trial's own). "
                                                             "A checkpoint trained with another loss is refused."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
    name: str | None = typer.Option(None, "--name", help="Name of the written evaluations/<name>.json."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    against: Path | None = typer.Option(None, "--against",
                                        help="Another run folder: evaluate its checkpoint on the same images and "
                                             "compare the two image by image (McNemar; DeLong for the ROC AUCs)."),
) -> None:
    """Rebuild a trial's model from its saved config, evaluate its checkpoint and write accuracy, loss and confusion."""

    def action() -> None:
        if checkpoint not in ("best", "last"):
            raise UserError(f"--checkpoint is '{checkpoint}': use best or last.")
        require_run_folder(trial_dir, f"{checkpoint}.pt")
        if against is not None:
            require_run_folder(against, f"{checkpoint}.pt")
        from medablate.inspect.evaluate import evaluate_trial  # torch, the models, scikit-learn

        if device not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device is '{device}': use auto, cpu or cuda.")
        if source not in evaluate_sources():
            raise UserError(f"--source is '{source}': use one of {', '.join(evaluate_sources())}.")
        file_list = [f.strip() for f in files.split(",")] if files else None
        result = evaluate_trial(trial_dir, data, source, file_list, loss, checkpoint, name, device)
        _print_evaluation(result)
        if against is not None:
            from medablate.inspect.evaluate import compare_evaluations  # beside evaluate_trial (torch, the models)

            other = evaluate_trial(against, data, source, file_list, loss, checkpoint, name, device)
            _print_comparison(compare_evaluations(result, other))

    _guarded(action)


SHOWN_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity", "ppv", "npv", "f1")


def _print_evaluation(result: Any) -> None:
    """What evaluate found (an EvaluationFile record)."""
    note = " [yellow](synthetic phantom data)[/]" if result.synthetic_data else ""
    out_console.print(f"{escape(result.trial_dir)} {result.checkpoint} (epoch {result.checkpoint_epoch}) on "
                      f"{escape(result.data)}{note}: {result.count} images", highlight=False)
    out_console.print(f"accuracy {result.accuracy:.4f}   loss ({result.loss}) {result.loss_value:.4f}")
    rules = {"at_0.5": "at the loss's rule (0.5)"}
    if result.threshold is not None:
        rules["at_threshold"] = f"at the validated threshold {result.threshold:.4g}"
    table = Table(title="metrics with 95% bootstrap CIs")
    table.add_column("metric")
    for title in rules.values():
        table.add_column(title, justify="right")
    for metric in SHOWN_METRICS:
        cells = [_with_ci(result.metrics.at(at), metric) for at in rules]
        if any(cells):
            table.add_row(metric, *cells)
    out_console.print(table)
    if result.warning:
        console.print(f"[bold yellow]Warning:[/] {escape(result.warning)}", highlight=False, soft_wrap=True)
    matrices = {"at the loss's rule (0.5)": result.confusion_matrix}
    if result.confusion_matrix_at_threshold:
        matrices[f"at the validated threshold {result.threshold:.4g}"] = result.confusion_matrix_at_threshold
    for rule, matrix in matrices.items():
        table = Table(title=f"confusion matrix {rule} (rows: true, columns: predicted)")
        table.add_column("")
        for name in result.class_names:
            table.add_column(name, justify="right")
        for name, row in zip(result.class_names, matrix, strict=False):
            table.add_row(name, *(str(v) for v in row))
        out_console.print(table)
    if result.undefined:
        out_console.print(f"only {', '.join(result.classes_present)} in these images: "
                          f"{', '.join(result.undefined)} cannot be computed without the other class.",
                          highlight=False)
    out_console.print(f"per-image predictions: {escape(result.predictions_file)}", highlight=False)


def _print_comparison(result: Any) -> None:
    """evaluate --against: the two checkpoints on the same images (an EvaluationFile record with its comparison)."""
    found = result.comparison
    out_console.print(f"against {escape(found.against)} on the same {found.count} images: accuracy "
                      f"{found.accuracy:.4f} vs {found.accuracy_against:.4f}; right only here {found.right_only_here}, "
                      f"only there {found.right_only_there} (McNemar exact p = {found.mcnemar_p:.3g})", highlight=False)
    if found.delong_p is not None:
        low, high = found.auc_ci95
        out_console.print(f"ROC AUC {found.roc_auc:.4f} vs {found.roc_auc_against:.4f}: difference "
                          f"{found.auc_difference:+.4f} (95% CI {low:+.4f} to {high:+.4f}), DeLong z = "
                          f"{found.delong_z:.3f}, p = {found.delong_p:.3g}", highlight=False)
    out_console.print("These compare the two trained models on these images, not their configurations (for that, "
                      "compare trials over seeds: `medablate compare`).", highlight=False)


def _with_ci(section: Any, metric: str) -> str:
    """A metric of a Scores record with its interval ("" when it has none)."""
    value = section.metric(metric) if section is not None else None
    if value is None:
        return ""
    ci = section.interval(metric)
    interval = f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci and ci[0] is not None else ""
    return f"{value:.4f}{interval}"


@app.command()
def compare(out: Path = typer.Argument(..., help="A study's output folder (runs/<study name>).", show_default=False)) -> None:
    """Recompute summaries, paired comparisons, conclusions, tables and figures from saved files, without training."""

    def action() -> None:
        require_study_folder(out)
        from medablate.report.outputs import write_outputs as write_analysis  # matplotlib, scipy, torch

        analysis = write_analysis(out)
        if analysis.missing:
            console.print(f"[yellow]Not finished, left out ({len(analysis.missing)}):[/] {', '.join(analysis.missing)}")
        for comparison, texts in analysis.sentences.items():
            out_console.print(f"[bold]{escape(comparison)}[/]")
            for text in texts:
                out_console.print(f"  {escape(text)}", highlight=False)
        out_console.print(f"Wrote {out / layout.SUMMARY_CSV}, {out / layout.COMPARISONS_CSV}, "
                          f"{out / layout.TABLES_MD} and {out / layout.FIGURES}/")

    _guarded(action)


@app.command()
def report(out: Path = typer.Argument(..., help="A study's output folder (runs/<study name>).", show_default=False)) -> None:
    """Write DIR/report.html (self-contained, opens offline) and DIR/report.md from the study's saved files."""

    def action() -> None:
        require_study_folder(out)
        from medablate.study.runner import report_study  # matplotlib, scipy, torch

        html_path, md_path = report_study(out, console)
        out_console.print(f"Wrote {html_path} and {md_path}")

    _guarded(action)


@app.command()
def predict(
    trial_dir: Path = typer.Argument(..., help="A finished run folder: DIR/trials/<trial>-seed<k>.", show_default=False),
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...) or folders of them.", show_default=False),
    saliency: Path | None = typer.Option(None, "--saliency", help="Write a saliency heatmap overlay per image here."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of text."),
) -> None:
    """Predict new images with a trial's best checkpoint, its preprocessing and its validated threshold."""

    def action() -> int:
        require_finished_run(trial_dir)
        import json  # the standard library's; here beside its only use

        from medablate.inspect.predict import as_json as to_json  # torch, the models
        from medablate.inspect.predict import predict_images  # torch, the models

        if saliency is not None:
            check_saliency_folder(saliency)

        results, errors = predict_images(trial_dir, images, saliency)
        if as_json:
            print(json.dumps(to_json(results, errors), indent=2))
        else:
            for r in results:
                probs = "  ".join(f"P({name}) {p:.4f}" for name, p in r.probabilities.items())
                extra = "".join(f"  ({n})" for n in r.notes) + (f"  saliency: {r.saliency}" if r.saliency else "")
                out_console.print(f"{escape(r.path)}: {probs}  -> [bold]{escape(r.decision)}[/]{escape(extra)}",
                                  highlight=False)
            if results:
                out_console.print(f"decision rule: {results[0].rule}", highlight=False)
        for message in errors:
            console.print(f"[red]Skipped:[/] {escape(message)}", highlight=False)
        return 1 if errors else 0

    raise typer.Exit(_guarded(action))


@app.command()
def export(
    trial_dir: Path = typer.Argument(..., help="A finished run folder: DIR/trials/<trial>-seed<k>.", show_default=False),
    kind: str = typer.Option("onnx", "--format", help="onnx (onnxruntime, any framework) or torchscript "
                                                         "(torch.jit.load, no medablate)."),
    out: Path | None = typer.Option(None, "--out", help="The model file to write (default: RUN_DIR/exported/"
                                                         "model.onnx or model.pt); its sidecar is the same name "
                                                         "with .json."),
    channels: int | None = typer.Option(None, "--input-channels", help="1 or 3: the channels the exported model "
                                                                        "takes (default: as trained)."),
) -> None:
    """Export a run's best model with its preprocessing inside (uint8 images of any size in, class probabilities
    out), beside a JSON sidecar with its classes, input, validated threshold and test metrics."""

    def action() -> None:
        require_finished_run(trial_dir)
        if kind not in ("onnx", "torchscript"):
            raise UserError(f"--format {kind!r} is not known: use onnx or torchscript.")
        if channels not in (None, 1, 3):
            raise UserError(f"--input-channels {channels} is not 1 or 3: give the channels of the images the "
                            "exported model will be given (1 grey, 3 RGB), or leave it out.")
        from medablate.inspect.export import export_run, sidecar_of  # torch, the models, the exporter

        written = export_run(trial_dir, kind, out, channels)  # type: ignore[arg-type]  # checked above
        out_console.print(f"wrote {escape(str(written))} and {escape(str(sidecar_of(written)))}", highlight=False)

    _guarded(action)


def check_saliency_folder(folder: Path) -> None:
    """--saliency must be a folder this process can make and write, before any image is scored."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--saliency {folder} is a file: give a folder for the heatmaps (it is created if needed).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--saliency {folder} cannot be made ({exc.strerror or exc}): give a folder you can write, "
                        "e.g. --saliency saliency/.") from None


@app.command()
def status(out: Path = typer.Argument(..., help="A study's output folder (runs/<study name>).", show_default=False)) -> None:
    """List a study's runs as done, running, interrupted, pending, diverged or failed."""

    def action() -> None:
        require_study_folder(out)
        from medablate.execute.status import study_status  # the schema, torch

        rows = study_status(out)
        table = Table(title=str(out))
        keys = ["run", "status", "epochs", "val_acc", "test_acc", "disk"] + (["slurm"] if any(r["slurm"] for r in rows)
                                                                             else [])
        for column in ("run", "status", "epochs", f"val acc ({layout.BEST_PT}; latest epoch if unfinished)", "test acc",
                       "disk", "Slurm task")[:len(keys)]:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(row[k]) for k in keys))
        out_console.print(table)
        for row in rows:
            if row["problem"]:
                out_console.print(f"[yellow]{row['run']} is damaged:[/] {escape(row['problem'])}; `medablate run` "
                                  "with the study redoes it.", highlight=False)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        out_console.print(", ".join(f"{n} {s}" for s, n in counts.items()))

    _guarded(action)


if __name__ == "__main__":
    app()
