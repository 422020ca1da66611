"""MLflow tracking (`tracking.mlflow`): every run of a study is an MLflow run, nested under its trial's parent run so
that MLflow's UI groups a trial's seeds (and folds). A run logs its resolved config as params, each epoch's metrics
with the epoch as step, its final clinical metrics, and, once the study's figures are drawn, its figures,
config.yaml and metrics.json as artifacts; tags name the study, trial, seed, fold and comparison levels.

The ids live in the folders: DIR/mlflow.json (the tracking URI, the experiment and each trial's parent run) and
DIR/trials/<run>/mlflow.json (the run's MLflow run and the last epoch logged). A resumed run therefore continues
its MLflow run, an epoch replayed after a kill is not logged twice, and worker processes and Ray tasks log to the
runs the driver prepared. The driver writes DIR/mlflow.json before any run starts.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from medablate.config.schema import MlflowConfig, Study, flatten
from medablate.core import atomic
from medablate.errors import UserError
from medablate.execute.plan import Plan, Run, Trial
from medablate.folder import layout, rundir
from medablate.folder.records import RunRecord

INSTALL_HINT = ("tracking.mlflow is set, but the mlflow package is not installed: pip install mlflow-skinny (or "
                "mlflow, which adds its web UI), or remove tracking.mlflow from the study.")
FINAL_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity", "f1", "brier", "ece")
ARTIFACTS = (layout.CONFIG_YAML, layout.METRICS_JSON)


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError(INSTALL_HINT) from None


def tracking_uri(config: MlflowConfig, out: Path) -> str:
    return config.uri or f"file:{(Path(out) / 'mlruns').resolve()}"


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    if uri.startswith("file:"):  # MLflow 3 keeps its file store in maintenance mode and asks for this to use it
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def _read(path: Path) -> dict[str, Any]:
    """A state file, or {} where there is none (or it is damaged: the ids are then made anew)."""
    try:
        found = json.loads(path.read_text())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def _now() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------ the driver, before and after the runs


def prepare_study(out: Path, study: Study, plan: Plan) -> None:
    """The experiment and each trial's parent run (reused when the study runs again), in DIR/mlflow.json."""
    config = study.tracking.mlflow
    if config is None:
        return
    require_mlflow()
    uri = tracking_uri(config, out)
    client = _client(uri)
    name = config.experiment or study.name
    try:
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    except Exception as exc:  # a server that does not answer, a store it cannot write
        raise UserError(f"tracking.mlflow: the MLflow store at {uri} cannot be used ({type(exc).__name__}: "
                        f"{str(exc)[:300]}). Check tracking.mlflow.uri (or remove tracking.mlflow).") from None
    state = _read(out / layout.MLFLOW_JSON)
    parents = state.get("trials", {}) if state.get("uri") == uri and state.get("experiment_id") == experiment_id else {}
    for trial in plan.trials:
        if trial.id not in parents:
            tags = _trial_tags(study, trial) | {"medablate.role": "trial"}
            parents[trial.id] = client.create_run(experiment_id, tags=tags, run_name=trial.id).info.run_id
    atomic.write_json(out / layout.MLFLOW_JSON, {"uri": uri, "experiment_id": experiment_id, "trials": parents})


def log_artifacts(out: Path, study: Study, plan: Plan) -> None:
    """Each finished run's figures, config.yaml and metrics.json (again only when they changed), then the trials'
    parent runs end when all their runs have."""
    if study.tracking.mlflow is None:
        return
    state = _read(out / layout.MLFLOW_JSON)
    if not state:
        return
    client = _client(state["uri"])
    for run in plan.runs:
        run_dir = rundir.trial_dir(out, run.id)
        own = _read(run_dir / layout.MLFLOW_JSON)
        figures = rundir.read_figures(run_dir)
        drawn = figures.metrics_sha1 if figures else None
        if not own or drawn is None or own.get("artifacts_of") == drawn:
            continue
        for path in sorted(run_dir.glob("*.png")) + [run_dir / name for name in ARTIFACTS]:
            if path.exists():
                client.log_artifact(own["run_id"], str(path))
        atomic.write_json(run_dir / layout.MLFLOW_JSON, own | {"artifacts_of": drawn})
    for trial in plan.trials:
        done = all(rundir.run_status(d) in rundir.FINISHED for d in plan.run_dirs(out, trial))
        if done and trial.id in state.get("trials", {}):
            client.set_terminated(state["trials"][trial.id], status="FINISHED")


def _trial_tags(study: Study, trial: Trial) -> dict[str, str]:
    levels = {f"level.{key}": label for key, label in trial.labels.items()}
    return {"medablate.study": study.name, "medablate.trial": trial.id,
            "medablate.comparisons": ";".join(trial.comparisons)} | levels


# ------------------------------------------------------------------ one run, in whichever process trains it


class RunLog:
    """One run's MLflow run: created with its params on first start, continued on every resume. A tracking store
    that stops answering does not stop the training: the first error is kept (`problem`) and logging stops."""

    problem: str | None = None

    def __init__(self, out: Path, run_dir: Path, study: Study, run: Run, config: dict[str, Any]) -> None:
        self._guard(lambda: self._open(out, run_dir, study, run, config))

    def _guard(self, action: Any) -> None:
        if self.problem is not None:
            return
        try:
            action()
        except Exception as exc:  # a server gone, a full disk under the store: the run goes on without MLflow
            self.problem = f"MLflow logging stopped ({type(exc).__name__}: {str(exc)[:200]})"

    def _open(self, out: Path, run_dir: Path, study: Study, run: Run, config: dict[str, Any]) -> None:
        study_state = _read(Path(out) / layout.MLFLOW_JSON)
        self.client = _client(study_state["uri"])
        self.path = Path(run_dir) / layout.MLFLOW_JSON
        self.state = _read(self.path)
        if self.state.get("run_id"):
            self.client.update_run(self.state["run_id"], status="RUNNING")
            return
        tags = _trial_tags(study, run.trial) | {
            "mlflow.parentRunId": study_state["trials"][run.trial.id], "medablate.run": run.id,
            "medablate.seed": str(run.seed), **({"medablate.fold": run.fold.label} if run.fold else {})}
        created = self.client.create_run(study_state["experiment_id"], tags=tags, run_name=run.id)
        self.state = {"run_id": created.info.run_id, "epochs": 0}
        self._params(config)
        atomic.write_json(self.path, self.state)

    def _params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = {k: str(v)[:6000] for k, v in flatten(config).items() if k not in ("study", "comparisons")}
        params = [Param(k[:250], v) for k, v in flat.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.state["run_id"], params=params[start:start + 100])

    def epoch(self, row: dict[str, float]) -> None:
        """An epoch's history row, with the epoch as step (not again when a resumed run replays it)."""
        self._guard(lambda: self._epoch(row))

    def _epoch(self, row: dict[str, float]) -> None:
        from mlflow.entities import Metric

        epoch = int(row["epoch"])
        if epoch <= self.state["epochs"]:
            return
        now = _now()
        metrics = [Metric(k, float(v), now, epoch) for k, v in row.items() if k != "epoch" and v == v]
        self.client.log_batch(self.state["run_id"], metrics=metrics)
        self.state["epochs"] = epoch
        atomic.write_json(self.path, self.state)

    def finish(self, record: RunRecord) -> None:
        """The final clinical metrics at the run's threshold (val_*, test_*) and its status."""
        self._guard(lambda: self._finish(record))

    def _finish(self, record: RunRecord) -> None:
        from mlflow.entities import Metric

        now, final = _now(), []
        evaluation = record.evaluation
        for split, section in (("val", evaluation.val if evaluation else None),
                               ("test", evaluation.test if evaluation else None)):
            scores = (section.at_threshold or section.at_rule) if section else None
            for key in FINAL_METRICS if scores else ():
                value = scores.metric(key)  # type: ignore[union-attr]  # not None: the loop is empty then
                if value is not None:
                    final.append(Metric(f"final_{split}_{key}", float(value), now, 0))
        if record.best_epoch is not None:
            final.append(Metric("best_epoch", float(record.best_epoch), now, 0))
        panel = record.robustness  # evaluation.shifts
        for key, value in (("robust_acc", panel.robust_acc), ("robust_auc", panel.robust_auc)) if panel else ():
            if value is not None:
                final.append(Metric(key, float(value), now, 0))
        if final:
            self.client.log_batch(self.state["run_id"], metrics=final)
        self.client.set_terminated(self.state["run_id"], status="FINISHED" if record.status == rundir.DONE
                                   else "FAILED")


def run_log(out: Path, run_dir: Path, study: Study, run: Run, config: dict[str, Any]) -> RunLog | None:
    """The run's MLflow log where the study tracks to MLflow (and the driver prepared it), else None."""
    if study.tracking.mlflow is None or not (Path(out) / layout.MLFLOW_JSON).exists():
        return None
    return RunLog(out, run_dir, study, run, config)
