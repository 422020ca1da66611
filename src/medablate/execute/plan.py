"""Expand a study's comparisons into distinct trials (deduplicated) and runs (trial x seed)."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medablate.config.schema import (
    THRESHOLD_TARGETS,
    AugmentConfig,
    Comparison,
    Study,
    TrialConfig,
    format_validation_error,
    get_dotted,
    set_dotted,
    to_plain,
)
from medablate.errors import UserError
from medablate.folder import layout, rundir
from medablate.folder.records import StudyInfo
from medablate.folder.rundir import Fold, run_id


@dataclass
class Trial:
    """One distinct configuration; trained once per seed, shared by every comparison it appears in."""

    id: str
    config: TrialConfig
    comparisons: list[str] = field(default_factory=list)
    varied: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, for the keys any comparison varies
    labels: dict[str, str] = field(default_factory=dict)  # dotted key -> its value's name (short_value, in context)
    trained_as: Trial | None = None  # an earlier trial whose runs train the same models (only the threshold differs)

    @property
    def fingerprint(self) -> str:
        return config_hash(self.config)


Replicate = tuple[int, Fold | None]  # what a trial is trained once per: a seed (kfold: a seed on one fold)


@dataclass(frozen=True)
class Run:
    trial: Trial
    seed: int
    fold: Fold | None = None

    @property
    def id(self) -> str:
        return run_id(self.trial.id, self.seed, self.fold)

    @property
    def replicate(self) -> Replicate:
        return self.seed, self.fold

    @property
    def twin(self) -> Run | None:
        """The run of the same seed (and fold) of the trial that trains the same model (Trial.trained_as)."""
        return Run(self.trial.trained_as, self.seed, self.fold) if self.trial.trained_as else None


@dataclass
class Plan:
    trials: list[Trial]
    seeds: list[int]
    varied_keys: list[str]
    folds: list[Fold] = field(default_factory=list)  # kfold: every repeat's folds; empty otherwise

    @property
    def replicates(self) -> list[Replicate]:
        """Each trial's runs: one per seed, or (kfold) one per fold of each seed, the folds of one repeat in turn."""
        folds: list[Fold | None] = list(self.folds) or [None]
        return [(s, f) for f in folds for s in self.seeds]

    @property
    def runs(self) -> list[Run]:
        return [Run(t, s, f) for s, f in self.replicates for t in self.trials]

    def trials_of(self, comparison: str) -> list[Trial]:
        return [t for t in self.trials if comparison in t.comparisons]

    def run_dirs(self, out: Path, trial: Trial) -> list[Path]:
        """The folders of a trial's runs, in the order of replicates."""
        return [rundir.trial_dir(out, run_id(trial.id, s, f)) for s, f in self.replicates]


def config_hash(config: TrialConfig) -> str:
    canonical = json.dumps(to_plain(config), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


AUGMENT_DEFAULTS = to_plain(AugmentConfig())


def _on(section: dict[str, Any]) -> dict[str, Any]:
    """The keys of a section (a data.augment level) that are on: set, and not at their default."""
    defaults = AUGMENT_DEFAULTS if set(section) <= set(AUGMENT_DEFAULTS) else {}  # crop_ratio alone is not on
    return {k: v for k, v in section.items()
            if v not in (None, False, 0, 0.0, [], {}) and json.dumps(v) != json.dumps(defaults.get(k))}


def _same(value: Any) -> str:
    """A value as text that is the same for 7 and 7.0 (a study file's level and its validated config)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(float(value))
    if isinstance(value, (list, tuple)):
        return json.dumps([_same(v) for v in value])
    return json.dumps(value, sort_keys=True, default=str)


def _text(value: Any) -> str:
    return "x".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def short_value(value: Any, among: Iterable[Any] = ()) -> str:
    """A readable, path-safe rendering of a varied value (a scheduler dict shows as its name; a section, such as a
    data.augment level, as the keys that are on). among: the key's other values in the study; a section's key shows
    its value too where those that have it on disagree on it (crop_scale0.4x1.0+blur2.0 beside crop_scale0.7x1.0+
    blur1.0, rather than one name for two levels); a threshold rule shows its target (sensitivity0.95)."""
    if isinstance(value, dict) and len(value) == 1 and set(value) <= set(THRESHOLD_TARGETS):
        value = "".join(k + _text(v) for k, v in value.items())
    elif isinstance(value, dict) and "name" not in value:
        on = _on(value)
        others = [_on(o) for o in among if isinstance(o, dict) and "name" not in o]
        value = "+".join(k + _text(v) if {_same(o[k]) for o in others if k in o} - {_same(v)} else k
                         for k, v in on.items()) or "none"
    elif isinstance(value, dict):
        value = value["name"]
    elif isinstance(value, (list, tuple)):
        value = _text(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)).strip("_") or "value"


STUDY_TO_TRIAL = {"data.augment": "augment", "data.normalize": "normalize", "data.image_size": "image_size",
                  "evaluation.tta": "tta", "evaluation.threshold": "threshold"}


def trial_key(key: str) -> str:
    """Where a study's dotted key lives in a trial's config: data.augment.* is the trial's augment.*,
    data.normalize its normalize, and so on (STUDY_TO_TRIAL)."""
    for study_key, trial in STUDY_TO_TRIAL.items():
        if key == study_key or key.startswith(study_key + "."):
            return trial + key[len(study_key):]
    return key


def set_trial_value(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a varied value; another model name starts its model section afresh: the keys (and starting weights) of
    one model do not fit another."""
    if key == "model.name" and value != raw["model"].get("name"):
        raw["model"] = {"name": value}
        return
    set_dotted(raw, key, value)


def expand(study: Study) -> Plan:
    base_raw = to_plain(study.base)
    varied_keys = list(dict.fromkeys(k for c in study.comparisons for k in c.vary))
    trials: dict[str, Trial] = {}
    labels: set[str] = set()

    def add(config: TrialConfig, label: str, comparison: str | None) -> None:
        key = config_hash(config)
        if key not in trials:
            trial_id = label
            n = 2
            while trial_id in labels:
                trial_id, n = f"{label}-{n}", n + 1
            labels.add(trial_id)
            trials[key] = Trial(trial_id, config)
        if comparison and comparison not in trials[key].comparisons:
            trials[key].comparisons.append(comparison)

    among = {k: [_get(study.base, k), *(v for c in study.comparisons for v in c.vary.get(k, []))] for k in varied_keys}
    if not study.comparisons:
        add(study.base, "base", None)
    for comparison in study.comparisons:
        keys = list(comparison.vary)
        for values in itertools.product(*(comparison.vary[k] for k in keys)):
            raw = json.loads(json.dumps(base_raw))
            for k, v in sorted(zip(keys, values, strict=False), key=lambda kv: kv[0] not in ("model", "model.name")):
                if k != "model":
                    _check_key_exists(base_raw, trial_key(k), comparison.name)
                set_trial_value(raw, trial_key(k), v)
            config = _validate_trial(raw, comparison.name, dict(zip(keys, values, strict=False)))
            differs = [short_value(v, among[k]) for k, v in zip(keys, values, strict=False)
                       if _get(config, k) != _get(study.base, k)]
            add(config, "_".join(differs) or "base", comparison.name)

    plan_trials = list(trials.values())
    if not plan_trials:
        raise UserError("the study expands to zero trials: add a comparison with at least one value under vary")
    training: dict[str, Trial] = {}  # what a trial trains: its config but the threshold rule -> the first such trial
    for trial in plan_trials:
        trial.varied = {k: _get(trial.config, k) for k in varied_keys}
        trial.labels = {k: short_value(v, among[k]) for k, v in trial.varied.items()}
        first = training.setdefault(config_hash(trial.config.model_copy(update={"threshold": 0.5})), trial)
        trial.trained_as = first if first is not trial else None
    split = study.data.split
    folds = [Fold(r, f) for r in range(1, split.repeats + 1) for f in range(1, split.folds + 1)] \
        if split.method == "kfold" else []
    return Plan(plan_trials, list(study.seeds), varied_keys, folds)


def _get(config: TrialConfig, key: str) -> Any:
    try:
        return get_dotted(to_plain(config), trial_key(key))
    except KeyError:
        return None


def _check_key_exists(base_raw: dict[str, Any], key: str, comparison: str) -> None:
    try:
        get_dotted(base_raw, key)
    except KeyError:
        parent = key.rsplit(".", 1)[0]
        try:
            node = get_dotted(base_raw, parent)
            options = ", ".join(f"{parent}.{k}" for k in node) if isinstance(node, dict) else ""
        except KeyError:
            options = "model.*, training.*"
        if key.split(".")[-1] == "name" or parent.endswith(("optimizer", "scheduler", "activation")) \
                or key.startswith("model."):  # keys of another model (vary: {model.name: [...], model.widths: ...})
            return  # keyword arguments of a named class are free-form and checked against its signature
        raise UserError(f"comparison '{comparison}' varies '{key}', which is not a key of the study; "
                        f"valid keys near it: {options}") from None


def _validate_trial(raw: dict[str, Any], comparison: str, values: dict[str, Any]) -> TrialConfig:
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise UserError(format_validation_error(exc, f"comparison '{comparison}' ({shown})")) from None


def scaling_notes(plan: Plan) -> list[str]:
    """One line per trial whose scheduler's step counts were scaled to its run length (config.follow_run_length)."""
    notes = []
    for trial in plan.trials:
        training = trial.config.training
        scheduler = training.scheduler
        if scheduler is not None and scheduler.scaled_from:
            written = scheduler.scaled_from.get("epochs")
            changes = ", ".join(f"{k} {v} -> {scheduler.kwargs.get(k)}" for k, v in scheduler.scaled_from.items()
                                if k != "epochs")
            notes.append(f"{trial.id}: {scheduler.name} {changes} (written for {written} epochs, this run has "
                         f"{training.epochs}; recorded in {layout.CONFIG_YAML})")
    return notes


def level_label(trial: Trial, keys: list[str]) -> str:
    """How a trial is named within one comparison: by the values of that comparison's varied keys."""
    return ", ".join(trial.labels[k] for k in keys)


def reference_trial(study: Study, plan: Plan, comparison: Comparison) -> Trial:
    """The level every other level of a comparison is measured against.

    `reference:` in the study names it (a value, or a mapping key -> value when several keys vary);
    by default it is the base configuration, or the first level when the base is not among them.
    """
    trials = plan.trials_of(comparison.name)
    keys = list(comparison.vary)
    if comparison.reference is None:
        base = config_hash(study.base)
        return next((t for t in trials if t.fingerprint == base), trials[0])
    wanted = comparison.reference if isinstance(comparison.reference, dict) and len(keys) > 1 \
        else {keys[0]: comparison.reference}
    for trial in trials:
        if all(trial.labels.get(k) == short_value(v, [t.varied.get(k) for t in plan.trials]) for k, v in wanted.items()):
            return trial
    levels = ", ".join(level_label(t, keys) for t in trials)
    raise UserError(f"comparison '{comparison.name}': reference {comparison.reference!r} is not one of its levels "
                    f"({levels}); set reference to one of them or leave it out to use the base configuration.")


def read_study(out: Path) -> tuple[StudyInfo, Study]:
    """study.json and the Study it records, validated; a study this version cannot read is a UserError naming it."""
    info = rundir.read_study_info(out)
    try:
        return info, Study.model_validate(info.study)
    except ValidationError as exc:
        raise rundir.damaged_study(out, Path(out) / rundir.STUDY_JSON, rundir.unreadable(exc)) from None


def load_study_folder(out: Path) -> tuple[Study, Plan, StudyInfo]:
    """A finished (or partly finished) study folder: its study, plan and record."""
    info, study = read_study(out)
    return study, expand(study), info
