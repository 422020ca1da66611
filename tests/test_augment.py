import pytest
import torch

from medablate.train.augment import make_augment
from medablate.config.schema import AugmentConfig, validate_study
from medablate.execute.plan import expand

from conftest import tiny_study


def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(8, 32, 32)


def test_off_by_default() -> None:
    assert make_augment(AugmentConfig()) is None


def test_each_image_gets_its_own_transform_and_a_seed_repeats_them() -> None:
    augment = make_augment(AugmentConfig(rotate=15, translate=0.1, scale=0.1, contrast=0.2, brightness=0.1, flip=True))
    x = images()
    same = x[:1].expand(8, 32, 32).clone()
    torch.manual_seed(1)
    a = augment(same)
    torch.manual_seed(1)
    b = augment(same)
    assert torch.equal(a, b) and a.shape == same.shape
    assert not torch.allclose(a[0], a[1])  # one image, eight different results
    assert a.min() >= 0 and a.max() <= 1


def test_identity_parameters_change_nothing() -> None:
    augment = make_augment(AugmentConfig(rotate=0, contrast=1e-9))
    x = images()
    assert torch.allclose(augment(x), x, atol=1e-5)


def test_flip_only_mirrors() -> None:
    augment = make_augment(AugmentConfig(flip=True))
    x = images()
    out = augment(x)
    for original, result in zip(x, out):
        assert torch.allclose(result, original, atol=1e-5) or torch.allclose(result, original.flip(-1), atol=1e-5)


def test_augmentation_is_a_factor_a_study_can_vary() -> None:
    raw = tiny_study(comparisons=[{"name": "aug", "vary": {"data.augment.rotate": [0, 10]}}])
    plan = expand(validate_study(raw, "t"))
    assert [t.config.augment.rotate for t in plan.trials] == [0, 10]
    assert plan.trials[1].varied == {"data.augment.rotate": 10}


def test_bad_augment_value_is_named() -> None:
    from medablate.errors import UserError

    with pytest.raises(UserError, match="data.augment.rotate"):
        validate_study(tiny_study(data={"augment": {"rotate": -5}}), "t")


def test_a_study_trains_with_augmentation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console

    from medablate.config.schema import load_study
    from medablate.study.runner import StudyRunner

    from conftest import write_study

    path = write_study(tmp_path, data={"augment": {"rotate": 10, "contrast": 0.2}}, training={"epochs": 2, "batch_size": 16},
                       comparisons=[{"name": "aug", "vary": {"data.augment.flip": [False, True]}}])
    study, _ = load_study(path)
    assert StudyRunner(study, tmp_path / "out", Console(quiet=True)).run() == 0
    assert "data.augment.flip" in (tmp_path / "out" / "results.csv").read_text()


@pytest.mark.parametrize("autocast", [False, True])
def test_the_warp_is_monais_affine_transform_to_the_bit(autocast: bool) -> None:
    """augment.warp does what MONAI's AffineTransform did for the geometric augmentation, without making tensors
    from Python numbers (a wait for the card on a GPU): the same images to the bit, in fp32 and under bf16 autocast."""
    from monai.networks.layers import AffineTransform

    from medablate.train.augment import warp

    monai = AffineTransform(normalized=True, mode="bilinear", padding_mode="border", align_corners=False)
    torch.manual_seed(0)
    for channels, size in ((1, 17), (3, 24)):
        x = torch.rand(5, channels, size, size + 3)
        theta = torch.eye(2, 3).repeat(5, 1, 1) + 0.3 * torch.randn(5, 2, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            theirs, ours = monai(x, theta @ torch.eye(3)), warp(x, theta @ torch.eye(3))
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
        assert not torch.equal(ours, x[..., :size + 3])  # the matrices do move the images
