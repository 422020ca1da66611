import numpy as np
import pytest

from medablate.config import SplitConfig
from medablate.data import phantom
from medablate.data.split import TRAIN, VAL, make_split
from medablate.errors import UserError


def test_course_split_takes_the_first_images_of_each_class() -> None:
    data = phantom.generate(10, 16, 0)
    split = make_split(data, SplitConfig(method="course", train_per_class=8))
    assert split.tolist() == [TRAIN] * 8 + [VAL] * 2 + [TRAIN] * 8 + [VAL] * 2


def test_course_split_needs_images_left_for_validation() -> None:
    with pytest.raises(UserError, match="train_per_class"):
        make_split(phantom.generate(10, 16, 0), SplitConfig(method="course", train_per_class=10))


def test_stratified_split_keeps_the_fraction_per_class_and_is_seeded() -> None:
    data = phantom.generate(50, 16, 0)
    a = make_split(data, SplitConfig(method="stratified", val_fraction=0.2, seed=1))
    b = make_split(data, SplitConfig(method="stratified", val_fraction=0.2, seed=1))
    c = make_split(data, SplitConfig(method="stratified", val_fraction=0.2, seed=2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for label in (0, 1):
        assert ((a == VAL) & (data.labels == label)).sum() == 10


def test_stratified_split_refuses_a_class_too_small() -> None:
    data = phantom.generate(1, 16, 0)
    with pytest.raises(UserError, match="too few"):
        make_split(data, SplitConfig(method="stratified", val_fraction=0.2))
