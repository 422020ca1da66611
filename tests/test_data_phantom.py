import numpy as np
import pytest

from medablate.data.sources import phantom


def test_deterministic_and_seed_dependent() -> None:
    a, b, c = phantom.generate(6, 32, 0), phantom.generate(6, 32, 0), phantom.generate(6, 32, 1)
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_drawn_once_then_read_from_the_cache(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The second study of the same phantom reads the images the first drew: the same pixels and facts."""
    monkeypatch.setenv("MEDABLATE_CACHE", str(tmp_path))
    drawn = phantom.generate(3, 24, 5)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    monkeypatch.setattr(phantom, "_generate", lambda *a: pytest.fail("drawn again"))
    read = phantom.generate(3, 24, 5)
    assert np.array_equal(read.images, drawn.images) and read.labels.tolist() == drawn.labels.tolist()
    assert (read.ids, read.class_names, read.notes, read.synthetic) == (drawn.ids, drawn.class_names, drawn.notes, True)


def test_shape_labels_and_synthetic_flag() -> None:
    data = phantom.generate(5, 48, 0)
    assert data.images.shape == (10, 1, 48, 48) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0] * 5 + [1] * 5
    assert data.synthetic and any("synthetic" in n for n in data.notes)
    assert len(set(data.ids)) == 10


def test_images_look_like_radiographs() -> None:
    """Dark background, brighter body, darker lungs, and the full 8-bit range used."""
    data = phantom.generate(4, 128, 0)
    image = data.images[0, 0].astype(float)
    corner, centre_column = image[:10, :10].mean(), image[40:90, 60:68].mean()
    left_lung = image[40:80, 30:45].mean()
    assert corner < left_lung < centre_column
    assert data.images.std() > 20


def test_positives_are_brighter_in_the_lungs_only_on_average() -> None:
    """The opacities add brightness inside the lungs, but not enough to separate the classes by a threshold."""
    data = phantom.generate(200, 64, 0)
    lungs = data.images[:, 0, 16:44, 8:24].reshape(400, -1).mean(1)
    negatives, positives = lungs[data.labels == 0], lungs[data.labels == 1]
    assert positives.mean() > negatives.mean()
    best_threshold_accuracy = max(((lungs > t) == data.labels).mean() for t in np.unique(lungs))
    assert best_threshold_accuracy < 0.95


@pytest.mark.slow
def test_course_mlp_lands_between_80_and_97_percent_after_10_epochs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from medablate.config.schema import TrialConfig
    from medablate.data.split import TRAIN, make_split
    from medablate.config.schema import SplitConfig
    from medablate.train.engine import Split, Trainer
    from medablate.train.tasks import make_task
    import torch

    data = phantom.generate(1000, 256, 0)
    split = make_split(data, SplitConfig())
    cpu = torch.device("cpu")
    train = Split.from_numpy(data.images[split == TRAIN], data.labels[split == TRAIN], cpu)
    val = Split.from_numpy(data.images[split != TRAIN], data.labels[split != TRAIN], cpu)
    config = TrialConfig.model_validate({"training": {"epochs": 10}})
    trainer = Trainer(config, make_task("BCEWithLogitsLoss", 2), 0, (256, 256), data.class_names, tmp_path, cpu, 50)
    history = trainer.fit(train, val).history
    assert 0.80 <= history[-1]["val_acc"] <= 0.97
