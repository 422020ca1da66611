import numpy as np
import pytest

from medablate.config.schema import SplitConfig
from medablate.data.sources import phantom
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


def named(data, names):  # type: ignore[no-untyped-def]
    from medablate.data.types import ImageSet

    return ImageSet(data.images, data.labels, names, data.class_names, "test")


def test_grouped_split_keeps_every_patient_on_one_side() -> None:
    from medablate.config.schema import GroupBy
    from medablate.data.split import patients

    data = phantom.generate(60, 8, 0)
    names = [f"person{i // 3}_{'virus' if y else 'normal'}_{i}.jpeg" for i, y in enumerate(data.labels)]
    data = named(data, names)
    config = SplitConfig(method="stratified", val_fraction=0.2, seed=0, group_by=GroupBy(regex=r"(person\d+)_"))
    split = make_split(data, config)
    owners = patients(data, r"(person\d+)_")
    sides = {}
    for patient, side in zip(owners, split):
        sides.setdefault(patient, set()).add(side)
    assert all(len(s) == 1 for s in sides.values()) and len(sides) == 40
    assert 0.1 < (split == VAL).mean() < 0.3
    for label in (0, 1):
        assert ((split == VAL) & (data.labels == label)).any()


def test_kermany_names_give_patients() -> None:
    from medablate.data.split import KERMANY_PATIENTS, patients

    data = named(phantom.generate(2, 8, 0), ["NORMAL/IM-0115-0001.jpeg", "NORMAL/NORMAL2-IM-0123-0001.jpeg",
                                             "PNEUMONIA/person1000_bacteria_2931.jpeg", "PNEUMONIA/person1000_virus_1681.jpeg"])
    assert patients(data, KERMANY_PATIENTS) == ["IM-0115", "NORMAL2-IM-0123", "person1000", "person1000"]
    with pytest.raises(UserError, match="finds no patient id"):
        patients(named(data, ["a.jpeg", "b.jpeg", "c.jpeg", "d.jpeg"]), KERMANY_PATIENTS)


def test_group_by_needs_the_stratified_method() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="group_by needs method: stratified"):
        SplitConfig(method="course", group_by={"regex": "(x)"})


def test_duplicates_stay_in_their_earliest_split_only() -> None:
    from medablate.data.duplicates import find_duplicates

    data = phantom.generate(4, 8, 0)
    images = data.images.copy()
    images[5] = images[0]  # a train image again in validation
    images[1] = images[0]  # and once more in train: same split, kept
    data = type(data)(images, data.labels, data.ids, data.class_names, "test")
    split = np.array([TRAIN, TRAIN, TRAIN, VAL, TRAIN, VAL, TRAIN, VAL], dtype=object)
    test = phantom.generate(1, 8, 5)
    test = type(test)(np.stack([images[0], test.images[1]]), test.labels, test.ids, test.class_names, "test")
    found = find_duplicates(data, split, test)
    assert found.keep.tolist() == [True, True, True, True, True, False, True, True]
    assert found.test_keep.tolist() == [False, True]
    assert found.dropped == {"train": 0, "val": 1, "test": 1} and found.groups == 1


def test_kfold_validates_every_image_once_per_repeat_stratified_and_reshuffled() -> None:
    from medablate.data.split import CV, assign_folds

    data = phantom.generate(30, 8, 0)
    config = SplitConfig(method="kfold", folds=5, repeats=2, seed=3)
    assert (make_split(data, config) == CV).all()
    folds = assign_folds(data, None, config)
    assert folds.shape == (2, 60) and set(folds.ravel()) == {1, 2, 3, 4, 5}
    for row in folds:
        for fold in range(1, 6):
            assert np.bincount(data.labels[row == fold]).tolist() == [6, 6]  # 30 per class over 5 folds
    assert not np.array_equal(folds[0], folds[1])  # the second repeat is reshuffled
    assert np.array_equal(folds, assign_folds(data, None, config))  # and seeded


def test_kfold_keeps_every_patient_in_one_fold_and_holds_out_a_grouped_test_part() -> None:
    from medablate.config.schema import GroupBy
    from medablate.data.split import CV, TEST, assign_folds, patients

    data = phantom.generate(60, 8, 0)
    data = named(data, [f"person{i // 3}_{'virus' if y else 'normal'}_{i}.jpeg" for i, y in enumerate(data.labels)])
    config = SplitConfig(method="kfold", folds=4, repeats=2, test_fraction=0.2, group_by=GroupBy(regex=r"(person\d+)_"))
    split = make_split(data, config)
    owners = np.array(patients(data, r"(person\d+)_"))
    assert set(split) == {CV, TEST} and not set(owners[split == TEST]) & set(owners[split == CV])
    pool = data.subset(split == CV)
    folds = assign_folds(pool, list(owners[split == CV]), config)
    for row in folds:
        fold_of = {}
        for patient, fold in zip(owners[split == CV], row):
            fold_of.setdefault(patient, set()).add(int(fold))
        assert all(len(f) == 1 for f in fold_of.values())
        assert all(((row == f) & (pool.labels == c)).any() for f in range(1, 5) for c in (0, 1))


def test_kfold_refuses_fewer_patients_than_folds() -> None:
    from medablate.config.schema import GroupBy
    from medablate.data.split import assign_folds

    data = phantom.generate(6, 8, 0)
    data = named(data, [f"person{i % 3}_{i}.jpeg" for i in range(12)])
    config = SplitConfig(method="kfold", folds=5, group_by=GroupBy(regex=r"(person\d+)_"))
    with pytest.raises(UserError, match="only 3 patients for data.split.folds 5"):
        assign_folds(data, [f"person{i % 3}" for i in range(12)], config)


def test_kfold_removes_a_repeat_within_its_pool() -> None:
    from medablate.data.duplicates import find_duplicates
    from medablate.data.split import CV

    data = phantom.generate(3, 8, 0)
    images = data.images.copy()
    images[4] = images[0]  # in the pool twice: the two copies could validate in different folds
    data = type(data)(images, data.labels, data.ids, data.class_names, "test")
    found = find_duplicates(data, np.array([CV] * 6, dtype=object), None)
    assert found.keep.tolist() == [True, True, True, True, False, True]
    assert found.dropped["cv"] == 1
