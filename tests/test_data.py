"""Data loaders: digits, npz validation, dataset dispatch, CIFAR errors, the shared CIFAR-10 subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from art_wdat.zoo.data import load_cifar10, load_cifar100, load_dataset, load_digits_split, load_npz
from tests.conftest import SHARED_CIFAR, shared_cifar10_subset

needs_shared_subset = pytest.mark.skipif(
    not SHARED_CIFAR.is_file(), reason=f"shared CIFAR-10 subset not found at {SHARED_CIFAR}"
)


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _images(n: int, dtype: type = np.uint8) -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype == np.uint8:
        return rng.integers(0, 256, size=(n, 3, 4, 4), dtype=np.uint8)
    return rng.random((n, 3, 4, 4)).astype(dtype)


# ---------------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_range() -> None:
    x_train, y_train, x_test, y_test = load_digits_split()
    assert x_train.shape[1:] == x_test.shape[1:] == (1, 8, 8)
    assert len(x_train) + len(x_test) == 1797
    assert len(x_test) == pytest.approx(0.25 * 1797, abs=1)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    assert 0.0 <= min(x_train.min(), x_test.min()) and max(x_train.max(), x_test.max()) == 1.0
    assert set(np.unique(y_test)) == set(range(10))


def test_digits_split_is_seeded() -> None:
    first, second, other = load_digits_split(seed=3), load_digits_split(seed=3), load_digits_split(seed=4)
    np.testing.assert_array_equal(first[2], second[2])
    assert not np.array_equal(first[2], other[2])


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.1, True])
def test_digits_rejects_bad_test_size(test_size: float) -> None:
    with pytest.raises(ValueError, match="test_size"):
        load_digits_split(test_size=test_size)


# ---------------------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------------------


def test_npz_uint8_is_scaled_and_labels_are_int64(tmp_path: Path) -> None:
    x = _images(5)
    path = _save_npz(tmp_path / "d.npz", x_test=x, y_test=np.arange(5, dtype=np.uint8))
    x_train, y_train, x_test, y_test = load_npz(path)
    assert x_train is None and y_train is None
    assert x_test.dtype == np.float32 and y_test.dtype == np.int64
    np.testing.assert_allclose(x_test, x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, np.arange(5))


def test_npz_float_and_train_split(tmp_path: Path) -> None:
    path = _save_npz(
        tmp_path / "d.npz",
        x_test=_images(3, np.float64), y_test=np.zeros(3, np.int32),
        x_train=_images(4, np.float32), y_train=np.ones(4, np.int64),
    )
    x_train, y_train, x_test, _ = load_npz(path)
    assert x_train.shape == (4, 3, 4, 4) and y_train.tolist() == [1, 1, 1, 1]
    assert x_test.dtype == np.float32 and 0.0 <= x_test.min() and x_test.max() <= 1.0


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"y_test": np.zeros(2, np.int64)}, "x_test"),
        ({"x_test": _images(2)}, "y_test"),
        ({"x_test": _images(2).reshape(2, 3, 16), "y_test": np.zeros(2, np.int64)}, "x_test must have 4 dimensions"),
        ({"x_test": _images(2).transpose(0, 2, 3, 1).repeat(2, 1).repeat(2, 2), "y_test": np.zeros(2, np.int64)},
         "channels-last"),
        ({"x_test": _images(2, np.float32) * 2.0, "y_test": np.zeros(2, np.int64)},
         r"x_test values must lie in \[0, 1\]"),
        ({"x_test": _images(2, np.float32) - 0.5, "y_test": np.zeros(2, np.int64)}, "x_test values"),
        ({"x_test": np.full((2, 3, 4, 4), np.nan, np.float32), "y_test": np.zeros(2, np.int64)}, "NaN"),
        ({"x_test": _images(2).astype(np.int32), "y_test": np.zeros(2, np.int64)}, "x_test must be uint8"),
        ({"x_test": _images(2), "y_test": np.zeros(3, np.int64)}, "y_test has 3 labels but x_test has 2"),
        ({"x_test": _images(2), "y_test": np.zeros((2, 10), np.int64)}, "y_test must be a 1-D"),
        ({"x_test": _images(2), "y_test": np.zeros(2, np.float32)}, "y_test must hold integer"),
        ({"x_test": _images(2), "y_test": np.array([0, -1])}, "y_test contains negative"),
        ({"x_test": _images(2), "y_test": np.zeros(2, np.int64), "x_train": _images(2)}, "y_train"),
        ({"x_test": _images(2), "y_test": np.zeros(2, np.int64), "x_train": _images(2),
          "y_train": np.zeros(1, np.int64)}, "y_train has 1 labels but x_train has 2"),
    ],
)
def test_npz_validation_names_the_key(tmp_path: Path, arrays: dict, needle: str) -> None:
    path = _save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=needle):
        load_npz(path)


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no npz file"):
        load_npz(tmp_path / "absent.npz")


# ---------------------------------------------------------------------------------------------------
# load_dataset
# ---------------------------------------------------------------------------------------------------


def test_load_dataset_digits_splits_and_n_samples() -> None:
    x_test, y_test = load_dataset("digits")
    x_train, _ = load_dataset("digits", split="train")
    assert x_test.shape == (450, 1, 8, 8) and len(y_test) == 450
    assert x_train.shape == (1347, 1, 8, 8)
    x_head, y_head = load_dataset("digits", n_samples=7)
    np.testing.assert_array_equal(x_head, x_test[:7])
    np.testing.assert_array_equal(y_head, y_test[:7])


def test_load_dataset_npz(tmp_path: Path) -> None:
    path = _save_npz(tmp_path / "d.npz", x_test=_images(5), y_test=np.arange(5), x_train=_images(6),
                     y_train=np.arange(6))
    x, y = load_dataset(f"npz:{path}", n_samples=3)
    assert x.shape == (3, 3, 4, 4) and y.tolist() == [0, 1, 2]
    assert load_dataset(f"npz:{path}", split="train")[0].shape == (6, 3, 4, 4)
    only_test = _save_npz(tmp_path / "t.npz", x_test=_images(2), y_test=np.arange(2))
    with pytest.raises(ValueError, match="x_train"):
        load_dataset(f"npz:{only_test}", split="train")


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"spec": "mnist"}, ValueError, "digits, cifar10, cifar100, npz:PATH"),
        ({"spec": "npz:"}, ValueError, "unknown dataset"),
        ({"spec": "digits", "split": "val"}, ValueError, "split"),
        ({"spec": "digits", "n_samples": 0}, ValueError, "n_samples"),
        ({"spec": "digits", "n_samples": 2.5}, TypeError, "n_samples"),
        ({"spec": 3}, TypeError, "spec"),
    ],
)
def test_load_dataset_rejects_bad_input(kwargs: dict, error: type, needle: str) -> None:
    with pytest.raises(error, match=needle):
        load_dataset(**kwargs)


# ---------------------------------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loader", "folder"), [(load_cifar10, "cifar-10-batches-py"), (load_cifar100, "cifar-100-python")]
)
def test_missing_cifar_names_the_folder_and_data_dir(tmp_path: Path, loader: object, folder: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        loader(tmp_path)
    message = str(info.value)
    assert "--data-dir" in message and str(tmp_path / folder) in message and "\n" not in message


def test_missing_cifar_says_how_to_download_without_the_api(tmp_path: Path) -> None:
    # The CLI has no download option: the message gives a command that works from a shell as well.
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert f"torchvision.datasets.CIFAR10('{tmp_path}', download=True)" in message and "python -c" in message


def test_load_dataset_cifar_uses_data_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_dataset("cifar10", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------
# shared CIFAR-10 subset (developers and CI only)
# ---------------------------------------------------------------------------------------------------


@needs_shared_subset
def test_shared_cifar10_subset() -> None:
    subset = shared_cifar10_subset()
    assert subset is not None
    x_train, y_train, x_test, y_test = subset
    assert x_train.shape == (4660, 3, 32, 32) and x_test.shape == (846, 3, 32, 32)
    assert x_train.dtype == np.float32 and y_test.dtype == np.int64
    assert 0.0 <= x_test.min() and x_test.max() <= 1.0 and x_test.max() > 0.9
    assert set(np.unique(y_train)) == set(range(10))


@needs_shared_subset
def test_shared_subset_through_npz_spec() -> None:
    x, y = load_dataset(f"npz:{SHARED_CIFAR}", n_samples=10)
    assert x.shape == (10, 3, 32, 32) and y.shape == (10,)


def test_shared_subset_absent_gives_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("tests.conftest.SHARED_CIFAR", tmp_path / "absent.npz")
    assert shared_cifar10_subset() is None
