"""Shared fixtures: a small CNN trained on scikit-learn's digits (offline, seconds on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier
from sklearn.datasets import load_digits

#: The developers' real CIFAR-10 subset (``../shared/data`` next to the repository): tests and benchmarks only.
SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_subset.npz"


def shared_cifar10_subset() -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray] | None:
    """The shared CIFAR-10 subset through the library's npz loader: 4,660 training and the first 846 test images.

    :return: ``(x_train, y_train, x_test, y_test)`` scaled to [0, 1], or None when the file is absent.
    """
    from art_wdat.zoo.data import load_npz  # imported here: conftest itself should not need the library

    return load_npz(SHARED_CIFAR) if SHARED_CIFAR.is_file() else None


def digits_cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 16, 10))


def wrap(model: torch.nn.Module, input_shape=(1, 8, 8), nb_classes=10, **kwargs) -> PyTorchClassifier:
    return PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=nb_classes,
                             clip_values=(0.0, 1.0), **kwargs)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The suite's models are tiny: on a 2-core machine intra-op threads only add OpenMP contention (10x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="session")
def digits_clf(digits):
    """A plainly trained CNN: ~95% clean accuracy on the held-out digits."""
    x_train, y_train, _, _ = digits
    model = digits_cnn()
    clf = wrap(model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3))
    torch.manual_seed(0)
    clf.fit(x_train, y_train, nb_epochs=8, batch_size=64, verbose=False)
    return clf


@pytest.fixture(scope="session")
def cifar_subset():
    if not SHARED_CIFAR.exists():
        pytest.skip("../shared/data/cifar10_subset.npz is absent")
    with np.load(SHARED_CIFAR) as f:
        return {k: f[k] for k in f.files}
