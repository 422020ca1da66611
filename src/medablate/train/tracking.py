"""Optional TensorBoard logging, so a study can sit beside a user's other work in TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medablate.errors import UserError

INSTALL_HINT = ("training.tensorboard is true, but the tensorboard package is not installed: "
                "pip install 'medablate[tensorboard]' (or pip install tensorboard), or set training.tensorboard: false.")


def require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError(INSTALL_HINT) from None


class TensorBoardLog:
    """Scalars per epoch in run_dir/tensorboard; the trial's hyperparameters (HParams plugin) at the end."""

    def __init__(self, run_dir: Path, hyperparameters: dict[str, Any]) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        self.hyperparameters = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                for k, v in hyperparameters.items()}

    def epoch(self, row: dict[str, float]) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, int(row["epoch"]))
        self.writer.flush()

    def close(self, final: dict[str, float | None]) -> None:
        metrics = {f"hparam/{k}": float(v) for k, v in final.items() if v is not None}
        self.writer.add_hparams(self.hyperparameters, metrics, run_name=".")
        self.writer.close()
