import numpy as np
import pytest

from tfrobustprune import data


def _write(path, name, x, y):
    np.savez(path / name, x=x, y=y)


def test_sample_is_real_cifar10(sample):
    assert sample.x_train.shape == (2000, 32, 32, 3) and sample.x_val.shape == (500, 32, 32, 3)
    assert sample.x_train.dtype == np.uint8 and sample.num_classes == 10
    assert len(np.unique(sample.y_train)) == 10
    assert 100 < sample.x_train.mean() < 150  # natural images, not noise or zeros


def test_npz_dir_splits_last_examples_for_validation(tmp_path):
    rng = np.random.default_rng(0)
    xs = [rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8) for _ in range(3)]
    for k, x in enumerate(xs):  # natural order: part_2 before part_10
        _write(tmp_path, f"part_{[2, 10, 1][k]}.npz", x, np.full(10, k, np.uint8))
    split = data.load_npz_dir(str(tmp_path), val_size=5)
    ordered = np.concatenate([xs[2], xs[0], xs[1]])
    np.testing.assert_array_equal(split.x_train, ordered[:25])
    np.testing.assert_array_equal(split.x_val, ordered[25:])
    assert split.y_val.tolist() == [1] * 5


@pytest.mark.parametrize(
    "x,y,match",
    [
        (np.zeros((4, 8, 8), np.uint8), np.zeros(4, np.uint8), "shape"),
        (np.zeros((4, 8, 8, 3), np.int64), np.zeros(4, np.uint8), "dtype"),
        (np.full((4, 8, 8, 3), np.nan, np.float32), np.zeros(4, np.uint8), "NaN"),
        (np.full((4, 8, 8, 3), 2.0, np.float32), np.zeros(4, np.uint8), r"\[0, 1\]"),
        (np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 2, 10]), r"labels must be in \[0, 10\)"),
        (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3, np.uint8), "to match the images"),
    ],
)
def test_bad_arrays_get_a_clear_error(tmp_path, x, y, match):
    _write(tmp_path, "bad.npz", x, y)
    with pytest.raises(data.DataError, match=match):
        data.load_npz_dir(str(tmp_path), val_size=1)


def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(data.DataError, match="not found"):
        data.load_npz_dir(str(tmp_path / "nope"))
    with pytest.raises(data.DataError, match="no .npz files"):
        data.load_npz_dir(str(tmp_path))


def test_unknown_source():
    with pytest.raises(data.DataError, match=r"Received: source='hub'"):
        data.load(source="hub")


def test_tfds_offline_fails_fast(monkeypatch, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data, "_network_reachable", lambda *a, **k: False)
    with pytest.raises(data.DataError, match="network is unreachable"):
        data.load_tfds("cifar10", data_dir=str(tmp_path))


def test_train_dataset_augments_and_scales(sample):
    ds = data.train_dataset(sample.x_train[:64], sample.y_train[:64], 32, seed=0)
    batches = list(ds)
    assert len(batches) == 2
    x, y = batches[0]
    assert x.shape == (32, 32, 32, 3) and x.dtype.name == "float32"
    assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0
