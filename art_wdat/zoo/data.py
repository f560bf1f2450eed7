"""Data loaders: numpy float32 images, channels first, in [0, 1], with int64 labels.

* ``digits``: scikit-learn's 8x8 digits (shipped with scikit-learn, works offline), 1x8x8.
* ``cifar10`` / ``cifar100``: torchvision's datasets read from a local folder (``--data-dir``).
* ``npz:PATH``: a numpy archive with ``x_test``, ``y_test`` (and optionally ``x_train``, ``y_train``).

:func:`load_dataset` dispatches on those names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from art_wdat.validation import check_int

DATASETS = ("digits", "cifar10", "cifar100", "npz:PATH")
SPLITS = ("train", "test")
DEFAULT_DATA_DIR = "./data"

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _check_n_samples(n_samples: int | None) -> int | None:
    """``n_samples`` as an int >= 1, or None (all examples)."""
    if n_samples is None:
        return None
    check_int("n_samples", n_samples, low=1)
    return int(n_samples)


def _head(x: np.ndarray, y: np.ndarray, n_samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_samples`` examples (all of them when None or larger than the set)."""
    n_samples = _check_n_samples(n_samples)
    if n_samples is None:
        return x, y
    return x[:n_samples], y[:n_samples]


# --------------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------------


def load_digits_split(test_size: float = 0.25, seed: int = 0) -> Arrays:
    """scikit-learn's 1,797 8x8 digits, split stratified into train and test.

    :param test_size: fraction of the examples in the test split, in (0, 1).
    :param seed: seed of the split.
    :return: ``(x_train, y_train, x_test, y_test)``; images (N, 1, 8, 8) float32 in [0, 1], labels int64.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    digits = load_digits()
    # Pixel values are integers 0..16.
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------------


def _load_torchvision_cifar(
    kind: str, data_dir: str | os.PathLike, train: bool, n_samples: int | None, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10/100 through torchvision; ``kind`` is "cifar10" or "cifar100"."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if kind == "cifar10" else CIFAR100
    root = Path(data_dir)
    # Accept the extracted batches folder itself as well as its parent, which is what torchvision wants.
    if root.name == cls.base_folder:
        root = root.parent
    n_samples = _check_n_samples(n_samples)
    try:
        dataset = cls(root=str(root), train=train, download=download)
    except RuntimeError as err:
        # torchvision's "Dataset not found or corrupted"; its hint (download=True) is useless offline.
        raise FileNotFoundError(
            f"{kind} not found in {root} (expected {root / cls.base_folder}); "
            f"pass --data-dir pointing to the folder that holds {cls.base_folder}, or download it once with "
            f"python -c \"import torchvision; torchvision.datasets.{cls.__name__}('{root}', download=True)\" "
            f"(in Python: download=True)"
        ) from err
    except OSError as err:
        raise FileNotFoundError(
            f"{kind} could not be downloaded to {root} ({type(err).__name__}: {err}); without internet, "
            f"copy {cls.base_folder} into that folder and pass it as --data-dir"
        ) from err
    x = np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2))  # NHWC uint8 -> NCHW
    y = np.asarray(dataset.targets, dtype=np.int64)
    x, y = _head(x, y, n_samples)
    return x.astype(np.float32) / 255.0, y


def load_cifar10(
    data_dir: str | os.PathLike, train: bool = False, n_samples: int | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from a local folder (torchvision layout: ``<data_dir>/cifar-10-batches-py``).

    :param data_dir: the folder that holds ``cifar-10-batches-py`` (or that folder itself).
    :param train: the training split (50,000 images) instead of the test split (10,000).
    :param n_samples: keep only the first ``n_samples`` images.
    :param download: let torchvision download the data when absent (needs internet).
    :return: ``(x, y)``: images (N, 3, 32, 32) float32 in [0, 1], labels int64.
    :raises FileNotFoundError: the data is not in ``data_dir`` and could not be downloaded.
    """
    return _load_torchvision_cifar("cifar10", data_dir, train, n_samples, download)


def load_cifar100(
    data_dir: str | os.PathLike, train: bool = False, n_samples: int | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100 (fine labels) from a local folder (``<data_dir>/cifar-100-python``).

    :param data_dir: the folder that holds ``cifar-100-python`` (or that folder itself).
    :param train: the training split instead of the test split.
    :param n_samples: keep only the first ``n_samples`` images.
    :param download: let torchvision download the data when absent (needs internet).
    :return: ``(x, y)``: images (N, 3, 32, 32) float32 in [0, 1], labels int64.
    :raises FileNotFoundError: the data is not in ``data_dir`` and could not be downloaded.
    """
    return _load_torchvision_cifar("cifar100", data_dir, train, n_samples, download)


# --------------------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------------------


def _images(array: np.ndarray, key: str) -> np.ndarray:
    """Validate images ``array`` (N, C, H, W), uint8 or float in [0, 1]; return float32 in [0, 1]."""
    if array.ndim != 4:
        raise ValueError(f"{key} must have 4 dimensions (N, C, H, W), got shape {array.shape}")
    if array.shape[3] in (1, 3) and array.shape[1] not in (1, 3):
        raise ValueError(
            f"{key} looks channels-last (shape {array.shape}); store it channels first: x.transpose(0, 3, 1, 2)"
        )
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{key} must be uint8 (0..255) or float in [0, 1], got dtype {array.dtype}")
    if array.size and not np.all(np.isfinite(array)):
        raise ValueError(f"{key} contains NaN or infinite values")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(
            f"{key} values must lie in [0, 1] for float data, got [{array.min():g}, {array.max():g}]; "
            "store uint8 0..255 or divide by 255"
        )
    return array.astype(np.float32, copy=False)


def _labels(array: np.ndarray, key: str, n: int, x_key: str) -> np.ndarray:
    """Validate integer class labels of shape (n,); return them as int64."""
    if array.ndim != 1:
        raise ValueError(f"{key} must be a 1-D array of class indices, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{key} must hold integer class indices, got dtype {array.dtype}")
    if array.shape[0] != n:
        raise ValueError(f"{key} has {array.shape[0]} labels but {x_key} has {n} images")
    if array.size and array.min() < 0:
        raise ValueError(f"{key} contains negative labels (min {array.min()})")
    return array.astype(np.int64)


def _split_from_npz(archive: Any, split: str, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(x, y)`` of ``split`` from an open archive, None when ``x_<split>`` is absent."""
    x_key, y_key = f"x_{split}", f"y_{split}"
    if x_key not in archive.files:
        return None
    if y_key not in archive.files:
        raise ValueError(f"{path} has {x_key} but no {y_key}")
    x = _images(archive[x_key], x_key)
    return x, _labels(archive[y_key], y_key, x.shape[0], x_key)


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray]:
    """Read a numpy archive of images and labels.

    Required arrays ``x_test`` (N, C, H, W) and ``y_test`` (N,); optional ``x_train`` / ``y_train``.
    Images are uint8 (divided by 255) or float in [0, 1]; labels are integers. Loaded with
    ``allow_pickle=False``.

    :param path: the ``.npz`` file.
    :return: ``(x_train, y_train, x_test, y_test)``, the train arrays None when absent; images float32.
    :raises FileNotFoundError: no such file.
    :raises ValueError: a missing key, a wrong shape or dtype, values outside [0, 1], mismatched lengths.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no npz file at {path}")
    with np.load(path, allow_pickle=False) as archive:
        test = _split_from_npz(archive, "test", path)
        if test is None:
            raise ValueError(f"{path} has no array 'x_test' (found: {', '.join(archive.files) or 'none'})")
        train = _split_from_npz(archive, "train", path)
    if train is not None and train[0].shape[1:] != test[0].shape[1:]:
        raise ValueError(f"x_train images have shape {train[0].shape[1:]} but x_test images {test[0].shape[1:]}")
    x_train, y_train = train if train is not None else (None, None)
    return x_train, y_train, test[0], test[1]


def _npz_split(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of ``split`` ("train" or "test") of the archive at ``path``."""
    x_train, y_train, x_test, y_test = load_npz(path)
    if split != "train":
        return x_test, y_test
    if x_train is None or y_train is None:
        raise ValueError(f"{path} has no x_train/y_train arrays for split='train'")
    return x_train, y_train


# --------------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------------


def load_dataset(
    spec: str, data_dir: str | os.PathLike | None = None, n_samples: int | None = None, split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a dataset named by ``spec``.

    :param spec: "digits", "cifar10", "cifar100" or "npz:PATH".
    :param data_dir: folder of the CIFAR data (default ``./data``); unused otherwise.
    :param n_samples: keep only the first ``n_samples`` examples of the split.
    :param split: "test" or "train".
    :return: ``(x, y)``: images float32 channels first in [0, 1], labels int64.
    :raises ValueError: unknown ``spec`` or ``split``, or an npz file without the requested split.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str, got {type(spec).__name__}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    _check_n_samples(n_samples)
    if spec == "digits":
        x_train, y_train, x_test, y_test = load_digits_split()
        x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
        return _head(x, y, n_samples)
    if spec in ("cifar10", "cifar100"):
        folder = data_dir if data_dir is not None else DEFAULT_DATA_DIR
        loader = load_cifar10 if spec == "cifar10" else load_cifar100
        return loader(folder, train=split == "train", n_samples=n_samples)
    if spec.startswith("npz:") and len(spec) > len("npz:"):
        return _head(*_npz_split(spec[len("npz:"):], split), n_samples)
    raise ValueError(f"unknown dataset {spec!r}; choose from {', '.join(DATASETS)}")

