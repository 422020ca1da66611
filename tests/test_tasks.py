import pytest
import torch

from medablate.models.mlp import MLPConfig
from medablate.errors import UserError
from medablate.models import build_model, count_outputs
from medablate.train.tasks import make_task


def test_head_size_follows_the_loss() -> None:
    assert make_task("BCEWithLogitsLoss", 2).num_outputs == 1
    assert make_task("CrossEntropyLoss", 2).num_outputs == 2
    assert make_task("CrossEntropyLoss", 4).num_outputs == 4
    for loss, width in (("BCEWithLogitsLoss", 1), ("CrossEntropyLoss", 2)):
        model = build_model(MLPConfig(hidden=[8], dropout=[0.0]), (4, 4), make_task(loss, 2).num_outputs)
        assert count_outputs(model) == width


def test_bce_rule_is_sigmoid_above_half() -> None:
    task = make_task("BCEWithLogitsLoss", 2)
    logits = torch.tensor([[-2.0], [0.0], [0.1], [3.0]])
    assert task.decisions(logits).tolist() == [0, 0, 1, 1]
    probabilities = task.probabilities(logits)
    assert torch.allclose(probabilities.sum(1), torch.ones(4))
    assert torch.equal(probabilities[:, 1] > 0.5, task.decisions(logits).bool())


def test_ce_rule_is_argmax() -> None:
    task = make_task("CrossEntropyLoss", 2)
    logits = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    assert task.decisions(logits).tolist() == [0, 1]
    assert torch.allclose(task.probabilities(logits), torch.softmax(logits, 1))


def test_losses_match_torch_modules() -> None:
    labels = torch.tensor([0, 1, 1, 0])
    one = torch.randn(4, 1)
    two = torch.randn(4, 2)
    assert torch.equal(make_task("BCEWithLogitsLoss", 2).loss(one, labels),
                       torch.nn.BCEWithLogitsLoss()(one, labels.float().unsqueeze(1)))
    assert torch.equal(make_task("CrossEntropyLoss", 2).loss(two, labels), torch.nn.CrossEntropyLoss()(two, labels))


def test_scoring_a_head_with_the_other_rule_is_an_error_not_a_number() -> None:
    with pytest.raises(UserError, match="2-logit head"):
        make_task("BCEWithLogitsLoss", 2).check_outputs(2, "checkpoint x")
    with pytest.raises(UserError, match="1-logit head"):
        make_task("CrossEntropyLoss", 2).check_outputs(1, "checkpoint x")


def test_bce_needs_two_classes() -> None:
    with pytest.raises(UserError, match="CrossEntropyLoss"):
        make_task("BCEWithLogitsLoss", 3)


def test_balanced_class_weights_follow_the_training_split() -> None:
    labels = torch.tensor([0] * 30 + [1] * 10)
    task = make_task("BCEWithLogitsLoss", 2).with_balanced_weights(labels)
    assert task.class_weights == pytest.approx((40 / 60, 40 / 20))
    logits = torch.randn(40, 1)
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0))(logits, labels.float().unsqueeze(1))
    assert torch.allclose(task.loss(logits, labels, weighted=True), expected)
    assert torch.equal(task.loss(logits, labels), make_task("BCEWithLogitsLoss", 2).loss(logits, labels))
    ce = make_task("CrossEntropyLoss", 2).with_balanced_weights(labels)
    two = torch.randn(40, 2)
    weight = torch.tensor(ce.class_weights, dtype=torch.float32)
    assert torch.allclose(ce.loss(two, labels, weighted=True), torch.nn.CrossEntropyLoss(weight=weight)(two, labels))


def test_label_smoothing_is_the_textbook_target_for_both_losses_and_the_training_loss_only() -> None:
    from dataclasses import replace

    labels, e = torch.tensor([0, 1, 1, 0, 1]), 0.1
    two = torch.randn(5, 2)
    ce = replace(make_task("CrossEntropyLoss", 2), label_smoothing=e)
    targets = torch.nn.functional.one_hot(labels, 2).float() * (1 - e) + e / 2  # 1 - e + e/k and e/k
    by_hand = -(targets * torch.log_softmax(two, dim=1)).sum(dim=1).mean()
    assert torch.allclose(ce.loss(two, labels, smoothed=True), by_hand)
    assert torch.allclose(ce.loss(two, labels, smoothed=True), torch.nn.CrossEntropyLoss(label_smoothing=e)(two, labels))
    assert torch.equal(ce.loss(two, labels), make_task("CrossEntropyLoss", 2).loss(two, labels))  # validation: true labels
    # one logit z is the two logits (0, z): the smoothed BCE equals the smoothed two-class cross-entropy
    z = torch.randn(5, 1)
    bce = replace(make_task("BCEWithLogitsLoss", 2), label_smoothing=e)
    assert torch.allclose(bce.loss(z, labels, smoothed=True), ce.loss(torch.cat([torch.zeros_like(z), z], 1), labels,
                                                                       smoothed=True))
    assert torch.equal(bce.loss(z, labels), make_task("BCEWithLogitsLoss", 2).loss(z, labels))
    weighted = bce.with_balanced_weights(labels)
    assert weighted.label_smoothing == e  # the class weights keep the smoothing


def test_class_weights_are_made_once_per_device_and_give_torchs_weighted_losses() -> None:
    """The weighted losses take their weights from a tensor made once (made anew at each step, on a GPU it would be
    a copy to the card that waits for every queued kernel): the numbers of torch's own weighted losses."""
    from dataclasses import replace

    from medablate.train.tasks import on_device

    logits, labels = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 1])
    ce = replace(make_task("CrossEntropyLoss", 2), class_weights=(1.5, 0.75))
    expected = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.5, 0.75]))(logits, labels)
    assert torch.equal(ce.loss(logits, labels, weighted=True), expected)
    bce = replace(make_task("BCEWithLogitsLoss", 2), class_weights=(1.5, 0.75))
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(0.5))(logits[:, :1].squeeze(1), labels.float())
    assert torch.equal(bce.loss(logits[:, :1], labels, weighted=True), expected)
    assert on_device((1.5, 0.75), logits) is on_device((1.5, 0.75), logits)
    assert on_device((1.5, 0.75), logits.double()).dtype == torch.float64
