"""SmallCNN, the ART wrapper and the local checkpoint format (CPU, seconds)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_wdat.zoo import (
    ModelUnavailableError,
    SmallCNN,
    load_local_checkpoint,
    make_classifier,
    read_checkpoint,
    save_checkpoint_model,
)
from art_wdat.zoo.data import load_digits_split

# ---------------------------------------------------------------------------------------------------
# SmallCNN
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (3, 32), (3, 28)])
def test_small_cnn_outputs_logits_and_ends_with_fc(channels: int, size: int) -> None:
    model = SmallCNN(channels, 10, size, width=8)
    out = model(torch.rand(4, channels, size, size))
    assert out.shape == (4, 10)
    assert isinstance(model.fc, nn.Linear)
    assert list(model.modules())[-1] is model.fc
    assert model.config == {"in_channels": channels, "nb_classes": 10, "image_size": size, "width": 8}


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"in_channels": 0}, ValueError, "in_channels"),
        ({"nb_classes": 1}, ValueError, "nb_classes"),
        ({"image_size": 3}, ValueError, "image_size"),
        ({"width": 2.5}, TypeError, "width"),
    ],
)
def test_small_cnn_rejects_bad_arguments(kwargs: dict, error: type, name: str) -> None:
    args = {"in_channels": 1, "nb_classes": 10, "image_size": 8} | kwargs
    with pytest.raises(error, match=name):
        SmallCNN(**args)


def test_small_cnn_learns_digits_in_seconds() -> None:
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = load_digits_split()
    classifier = make_classifier(SmallCNN(1, 10, 8, width=16), (1, 8, 8), 10, lr=1e-2)
    classifier.fit(x_train, y_train, nb_epochs=4, batch_size=64, verbose=False)
    accuracy = float((classifier.predict(x_test).argmax(1) == y_test).mean())
    assert accuracy > 0.85


# ---------------------------------------------------------------------------------------------------
# make_classifier
# ---------------------------------------------------------------------------------------------------


def test_make_classifier_defaults() -> None:
    classifier = make_classifier(SmallCNN(1, 10, 8), (1, 8, 8), 10)
    assert isinstance(classifier, PyTorchClassifier)
    assert classifier.input_shape == (1, 8, 8)
    assert classifier.nb_classes == 10
    assert tuple(classifier.clip_values) == (0.0, 1.0)
    assert isinstance(classifier.optimizer, torch.optim.Adam)
    assert classifier.device.type == "cpu"


def test_make_classifier_applies_preprocessing() -> None:
    torch.manual_seed(0)
    model = SmallCNN(3, 10, 32, width=8).eval()
    mean, std = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]
    classifier = make_classifier(model, (3, 32, 32), 10, preprocessing=(mean, std))
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    normalised = (x - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    with torch.no_grad():
        expected = model(torch.from_numpy(normalised)).numpy()
    np.testing.assert_allclose(classifier.predict(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"device": "tpu"}, ValueError, "device"),
        ({"model": "not a model"}, TypeError, "model"),
        ({"input_shape": "1x8x8"}, TypeError, "input_shape"),
        ({"nb_classes": 1}, ValueError, "nb_classes"),
        ({"clip_values": (1.0, 0.0)}, ValueError, "clip_values"),
        ({"preprocessing": ([0.5, 0.5], [0.5, 0.5])}, ValueError, "preprocessing"),
        ({"preprocessing": (0.5, 0.0)}, ValueError, "std"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"optimizer": "adam"}, TypeError, "optimizer"),
    ],
)
def test_make_classifier_rejects_bad_arguments(kwargs: dict, error: type, name: str) -> None:
    args = {"model": SmallCNN(1, 10, 8), "input_shape": (1, 8, 8), "nb_classes": 10} | kwargs
    with pytest.raises(error, match=name):
        make_classifier(**args)


def test_make_classifier_auto_device_follows_cuda() -> None:
    classifier = make_classifier(SmallCNN(1, 10, 8), (1, 8, 8), 10, device="auto")
    assert classifier.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------------
# local checkpoints
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def trained_digits_model() -> SmallCNN:
    torch.manual_seed(1)
    model = SmallCNN(1, 10, 8, width=8)
    with torch.no_grad():  # make the weights differ from a fresh init
        for parameter in model.parameters():
            parameter.add_(0.01)
    return model.eval()


@pytest.mark.parametrize("arch", ["SmallCNN", "instance", "dict"])
def test_local_checkpoint_round_trip_gives_identical_logits(
    tmp_path: Path, trained_digits_model: SmallCNN, arch: str
) -> None:
    model = trained_digits_model
    spec = {"SmallCNN": "SmallCNN", "instance": model, "dict": {"name": "SmallCNN", "kwargs": model.config}}[arch]
    meta = {
        "input_shape": (1, 8, 8),
        "nb_classes": 10,
        "preprocessing": (np.float32(0.5), np.float64(0.25)),
        "extra": {"epochs": np.int64(3), "eps": 0.1, "history": np.array([1.0, 2.0])},
    }
    path = save_checkpoint_model(tmp_path / "sub" / "model.pt", spec, model.state_dict(), meta)

    classifier = load_local_checkpoint(path)

    x = np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = model((torch.from_numpy(x) - 0.5) / 0.25).numpy()
    np.testing.assert_array_equal(classifier.predict(x), expected)
    assert not classifier.model.training
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind


def test_checkpoint_holds_only_plain_values(tmp_path: Path, trained_digits_model: SmallCNN) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint_model(path, trained_digits_model, trained_digits_model.state_dict(),
                          {"input_shape": [1, 8, 8], "nb_classes": 10, "extra": {"n": np.int32(4)}})
    payload = torch.load(path, weights_only=True)
    assert payload["arch"] == {"name": "SmallCNN", "kwargs": trained_digits_model.config}
    assert payload["input_shape"] == [1, 8, 8]
    assert payload["nb_classes"] == 10
    assert payload["clip_values"] == [0.0, 1.0]
    assert payload["preprocessing"] is None
    assert payload["extra"] == {"n": 4} and type(payload["extra"]["n"]) is int
    assert read_checkpoint(path)["format"] == "art_wdat.checkpoint"


def test_saving_over_an_existing_checkpoint_replaces_it(tmp_path: Path, trained_digits_model: SmallCNN) -> None:
    path = tmp_path / "model.pt"
    meta = {"input_shape": (1, 8, 8), "nb_classes": 10}
    save_checkpoint_model(path, "SmallCNN", SmallCNN(1, 10, 8, width=8).state_dict(), meta)
    save_checkpoint_model(path, "SmallCNN", trained_digits_model.state_dict(), meta | {"extra": {"v": 2}})
    assert read_checkpoint(path)["extra"] == {"v": 2}
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    ("arch", "meta", "error", "needle"),
    [
        ("ResNet50", {}, ValueError, "unknown architecture"),
        (42, {}, TypeError, "model_name_or_arch"),
        ("SmallCNN", {"nb_classes": None}, TypeError, "nb_classes"),
        ("SmallCNN", {"extra": {"obj": object()}}, TypeError, "extra"),
        ("rb:Anything", {"dataset": "mnist"}, ValueError, "dataset"),
    ],
)
def test_save_checkpoint_rejects_bad_input(tmp_path: Path, arch: object, meta: dict, error: type, needle: str) -> None:
    full_meta = {"input_shape": (1, 8, 8), "nb_classes": 10} | meta
    with pytest.raises(error, match=needle):
        save_checkpoint_model(tmp_path / "m.pt", arch, SmallCNN(1, 10, 8).state_dict(), full_meta)
    assert not list(tmp_path.iterdir())


def test_save_checkpoint_requires_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="input_shape"):
        save_checkpoint_model(tmp_path / "m.pt", "SmallCNN", SmallCNN(1, 10, 8).state_dict(), {"nb_classes": 10})


def test_load_rejects_unknown_architecture(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"format": "art_wdat.checkpoint", "version": 1, "arch": {"name": "Evil", "kwargs": {}},
                "state_dict": {}, "input_shape": [1, 8, 8], "nb_classes": 10}, path)
    with pytest.raises(ValueError, match="unknown architecture 'Evil'"):
        load_local_checkpoint(path)


def test_load_rejects_foreign_files(tmp_path: Path) -> None:
    plain = tmp_path / "state_dict.pt"
    torch.save(SmallCNN(1, 10, 8).state_dict(), plain)
    with pytest.raises(ValueError, match="not an art_wdat checkpoint"):
        load_local_checkpoint(plain)
    with pytest.raises(FileNotFoundError):
        load_local_checkpoint(tmp_path / "missing.pt")


class _Payload:
    """Any pickled object: ``weights_only=True`` must refuse to rebuild it (no code runs on load)."""

    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_never_unpickles_arbitrary_objects(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        pickle.dump({"format": "art_wdat.checkpoint", "payload": _Payload()}, handle)
    with pytest.raises(ModelUnavailableError, match="cannot read checkpoint"):
        load_local_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    state_dict = SmallCNN(1, 10, 8, width=8).state_dict()
    meta = {"input_shape": (1, 8, 8), "nb_classes": 10}
    with pytest.raises(ValueError, match="does not fit"):
        save_checkpoint_model(tmp_path / "m.pt", {"name": "SmallCNN", "kwargs": {"width": 4}}, state_dict, meta)
    # A file that got past the save-time check (e.g. edited by hand) is refused at load time too.
    path = tmp_path / "hand_made.pt"
    kwargs = {"in_channels": 1, "nb_classes": 10, "image_size": 8, "width": 4}
    torch.save({"format": "art_wdat.checkpoint", "version": 1, "state_dict": state_dict,
                "arch": {"name": "SmallCNN", "kwargs": kwargs}, "input_shape": [1, 8, 8], "nb_classes": 10}, path)
    with pytest.raises(ValueError, match="do not fit"):
        load_local_checkpoint(path)
