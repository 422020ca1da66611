"""The loss owns the head size, the label format and the prediction rule, in one place.

Training, validation, test evaluation and prediction all ask the same Task object, so they can
never disagree (the course's "102% accuracy" came from scoring a 2-logit model with the 1-logit rule).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from medablate.errors import UserError
from medablate.folder import layout


@dataclass(frozen=True)
class Task:
    """A loss together with everything that must agree with it."""

    loss_name: str
    num_classes: int
    class_weights: tuple[float, ...] | None = None  # per class; used by the training loss only
    label_smoothing: float = 0.0  # training.label_smoothing; the training loss only (validation scores the true labels)

    def with_balanced_weights(self, train_labels: torch.Tensor) -> Task:
        """Weights by inverse class frequency of the training split (scikit-learn's 'balanced': n / (k n_c))."""
        counts = torch.bincount(train_labels.cpu(), minlength=self.num_classes).double()
        weights = counts.sum() / (self.num_classes * counts.clamp(min=1))
        return replace(self, class_weights=tuple(float(w) for w in weights))

    @property
    def num_outputs(self) -> int:
        """BCEWithLogitsLoss: one logit (binary only); CrossEntropyLoss: one logit per class."""
        return 1 if self.loss_name == "BCEWithLogitsLoss" else self.num_classes

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean",
             weighted: bool = False, smoothed: bool = False) -> torch.Tensor:
        """The loss; weighted=True applies the class weights (pos_weight for BCE: n_neg / n_pos; weight for CE),
        smoothed=True the label smoothing e (CE: PyTorch's, 1 - e + e/k on the true class and e/k on the others;
        BCE: the same for its two classes, targets e/2 and 1 - e/2)."""
        weights = self.class_weights if weighted else None
        smoothing = self.label_smoothing if smoothed else 0.0
        if self.loss_name == "BCEWithLogitsLoss":
            pos_weight = None if weights is None else on_device((weights[1] / weights[0],), logits)[0]
            targets = labels.to(logits.dtype) * (1 - smoothing) + smoothing / 2
            return F.binary_cross_entropy_with_logits(logits.squeeze(1), targets, reduction=reduction,
                                                      pos_weight=pos_weight)
        weight = None if weights is None else on_device(weights, logits)
        return F.cross_entropy(logits, labels, reduction=reduction, weight=weight, label_smoothing=smoothing)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, num_classes) class probabilities: sigmoid for one logit, softmax otherwise."""
        if self.loss_name == "BCEWithLogitsLoss":
            positive = torch.sigmoid(logits.squeeze(1))
            return torch.stack([1 - positive, positive], dim=1)
        return torch.softmax(logits, dim=1)

    def decisions(self, logits: torch.Tensor) -> torch.Tensor:
        """Predicted class per row: sigmoid > 0.5 (i.e. logit > 0) for one logit, argmax otherwise."""
        if self.loss_name == "BCEWithLogitsLoss":
            return (logits.squeeze(1) > 0).long()
        return logits.argmax(dim=1)

    def check_outputs(self, num_outputs: int, where: str) -> None:
        """Refuse to score a model whose head does not match this loss's rule."""
        if num_outputs != self.num_outputs:
            raise UserError(
                f"{where} has a {num_outputs}-logit head, but {self.loss_name} with {self.num_classes} classes "
                f"needs {self.num_outputs}: it was trained with another loss. Evaluate it with the loss in its "
                f"own {layout.CONFIG_YAML}; scoring it with another loss's rule would give meaningless numbers.")


def on_device(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """The numbers as a tensor on like's device and of its dtype, made once: a tensor made from Python numbers on a
    GPU is a copy to the card that waits for every kernel queued before it, and the loss asks at every step."""
    return _kept(values, like.device, like.dtype)


@functools.lru_cache(maxsize=16)
def _kept(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, device=device, dtype=dtype)


def make_task(loss_name: str, num_classes: int) -> Task:
    if loss_name == "BCEWithLogitsLoss" and num_classes != 2:
        raise UserError(f"BCEWithLogitsLoss is for two classes, but the data has {num_classes}: "
                        "use training.loss: CrossEntropyLoss.")
    if num_classes < 2:
        raise UserError(f"the data has {num_classes} class(es): a classifier needs at least two.")
    return Task(loss_name, num_classes)
