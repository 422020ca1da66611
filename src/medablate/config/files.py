"""The study file's own checks that need only the file system (light: the command line runs them before it loads
the schema, which imports torch)."""

from __future__ import annotations

from pathlib import Path

from medablate.errors import UserError


def require_study_file(path: Path) -> Path:
    """A study file that exists and is not a folder, or the UserError that says what to pass instead."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a study file: pass the study's YAML file (e.g. "
                        "examples/course-hw2.yaml); to look at a finished study's folder use `medablate status`.")
    if not path.is_file():
        raise UserError(f"study file {path} does not exist: check the path (examples/course-hw2.yaml is a template)")
    return path
