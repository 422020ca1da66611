from pathlib import Path

import pytest
import torch

from medablate.core import atomic
from medablate.folder.checkpoint import load_checkpoint, save_checkpoint


def test_path_always_names_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "run" / "last.pt"
    for step in range(3):
        save_checkpoint(path, {"step": step, "w": torch.full((1000,), float(step))})
        state = load_checkpoint(path)
        assert state["step"] == step and torch.equal(state["w"], torch.full((1000,), float(step)))
    assert path.is_symlink()
    assert sorted(p.name for p in path.parent.iterdir()) == [".last.a.pt", ".last.b.pt", "last.pt"]


def test_a_write_that_dies_midway_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 0})
    save_checkpoint(path, {"step": 1})

    def dies(obj, handle):  # type: ignore[no-untyped-def]
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_atomic_text_write_replaces_whole_files_with_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "results.csv"
    atomic.write_text(target, "old\n")
    atomic.write_csv(target, [{"a": 1, "b": None}, {"a": 0.5, "b": "x"}], ["a", "b"])
    assert target.read_text() == "a,b\n1,\n0.5,x\n"
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_monitored_metric_picks_the_best_epoch_lowest_loss_or_highest_metric() -> None:
    from medablate.train.checkpointing import is_better

    assert is_better(0.4, 0.5, "val_loss") and not is_better(0.6, 0.5, "val_loss")
    for monitor in ("val_acc", "val_auc", "val_balanced_acc", "val_specificity"):
        assert is_better(0.9, 0.8, monitor) and not is_better(0.7, 0.8, monitor)
    assert is_better(0.5, None, "val_auc") and is_better(0.5, float("nan"), "val_auc")  # an AUC on one class
    assert not is_better(float("nan"), 0.5, "val_auc")
