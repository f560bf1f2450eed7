"""Models and their ART wrappers: a small CNN, RobustBench models, and a local checkpoint format.

* :class:`SmallCNN`: a small conv net for 1x8x8 digits and 3x32x32 CIFAR images.
* :func:`make_classifier`: wrap any ``nn.Module`` (logits out) as an ART :class:`PyTorchClassifier`.
* :func:`load_robustbench`: a RobustBench model-zoo entry as an ART classifier, with readable errors
  and an offline path (a checkpoint file placed where robustbench looks for it).
* :func:`save_checkpoint_model` / :func:`load_local_checkpoint`: a single-file checkpoint holding only
  tensors and plain python values, read back with ``torch.load(..., weights_only=True)`` so that
  loading a checkpoint never executes code.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_wdat.checkpoint import save_checkpoint
from art_wdat.robustbench_compat import import_robustbench

logger = logging.getLogger(__name__)

#: Input shape and number of classes of each RobustBench dataset.
ROBUSTBENCH_DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet": ((3, 224, 224), 1000),
}
#: Threat models RobustBench 1.1.1 knows (``corruptions_3d`` models live in the ``corruptions`` folder).
ROBUSTBENCH_THREAT_MODELS = ("Linf", "L2", "corruptions", "corruptions_3d")

#: Architecture names :func:`load_local_checkpoint` can rebuild (plus ``rb:<robustbench model name>``).
LOCAL_ARCHITECTURES = ("SmallCNN",)
RB_PREFIX = "rb:"
CHECKPOINT_FORMAT = "art_wdat.checkpoint"
CHECKPOINT_VERSION = 1

DEVICES = ("cpu", "cuda", "gpu", "auto")

PathLike = str | os.PathLike


class ModelUnavailableError(OSError, RuntimeError):
    """A model's weights could not be obtained (no internet, unreadable checkpoint).

    Both an :class:`OSError` and a :class:`RuntimeError`, so callers catching either see it. The message
    is one line and says where to put the checkpoint file to run offline.
    """


# --------------------------------------------------------------------------------------------------
# SmallCNN
# --------------------------------------------------------------------------------------------------


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """Return ``value`` as int, or raise TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class SmallCNN(nn.Module):
    """A small conv net: ``[conv-relu-conv-relu-maxpool] x n`` blocks, then a linear head ``fc``.

    Two blocks for images smaller than 16 pixels (8x8 digits -> 2x2 features), three otherwise
    (32x32 CIFAR -> 4x4 features); the channel count doubles in each block. ``fc`` is the last module so
    that fine-tuning can re-initialise the head. Outputs logits.

    :param in_channels: number of input channels (1 for digits, 3 for CIFAR).
    :param nb_classes: number of classes.
    :param image_size: height (= width) of the square input images, at least 4.
    :param width: channels of the first block.
    """

    def __init__(self, in_channels: int, nb_classes: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        in_channels = _check_positive_int(in_channels, "in_channels")
        nb_classes = _check_positive_int(nb_classes, "nb_classes", minimum=2)
        image_size = _check_positive_int(image_size, "image_size", minimum=4)
        width = _check_positive_int(width, "width")
        #: The constructor arguments, plain python values, as stored in checkpoints.
        self.config: dict[str, int] = {
            "in_channels": in_channels,
            "nb_classes": nb_classes,
            "image_size": image_size,
            "width": width,
        }
        n_blocks = 2 if image_size < 16 else 3
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for block in range(n_blocks):
            out = width * 2**block
            layers += [
                nn.Conv2d(channels, out, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(out, out, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels, size = out, size // 2
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        # Registered last on purpose: fine-tuning code finds the head as the last module.
        self.fc = nn.Linear(channels * size * size, nb_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch ``x`` of shape (N, in_channels, image_size, image_size)."""
        return self.fc(self.flatten(self.features(x)))


# --------------------------------------------------------------------------------------------------
# ART wrapper
# --------------------------------------------------------------------------------------------------


def _device_type(device: str) -> str:
    """Map ``device`` in {"cpu", "cuda", "gpu", "auto"} onto ART's ``device_type`` ("cpu" / "gpu")."""
    if not isinstance(device, str) or device.lower() not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    device = device.lower()
    if device == "cpu":
        return "cpu"
    cuda = torch.cuda.is_available()
    if device == "auto":
        return "gpu" if cuda else "cpu"
    if not cuda:
        # ART silently falls back to the CPU in this case; say so.
        logger.warning("device=%r requested but CUDA is not available; running on the CPU", device)
    return "gpu"


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not input_shape:
        raise TypeError(f"input_shape must be a non-empty sequence of ints, got {input_shape!r}")
    return tuple(_check_positive_int(d, f"input_shape[{i}]") for i, d in enumerate(input_shape))


def _check_clip_values(clip_values: Sequence[float] | None) -> tuple[float, float] | None:
    if clip_values is None:
        return None
    if not isinstance(clip_values, Sequence) or len(clip_values) != 2:
        raise TypeError(f"clip_values must be None or a pair (min, max), got {clip_values!r}")
    low, high = float(clip_values[0]), float(clip_values[1])
    if not low < high:
        raise ValueError(f"clip_values must satisfy min < max, got {clip_values!r}")
    return low, high


def _check_preprocessing(preprocessing: Any, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Validate ``(mean, std)``; per-channel vectors are shaped (C, 1, 1) for channels-first input.

    The explicit reshape avoids ART guessing the channel axis, which it gets wrong when the image width
    equals the number of channels.
    """
    if preprocessing is None:
        return None
    if not isinstance(preprocessing, (Sequence, np.ndarray)) or len(preprocessing) != 2:
        raise TypeError(f"preprocessing must be None or a pair (mean, std), got {preprocessing!r}")
    mean = np.asarray(preprocessing[0], dtype=np.float32)
    std = np.asarray(preprocessing[1], dtype=np.float32)
    if mean.shape != std.shape or mean.ndim > 1:
        raise ValueError(f"preprocessing mean and std must be scalars or vectors of one shape, got {preprocessing!r}")
    if mean.ndim == 1 and mean.shape[0] not in (1, channels):
        raise ValueError(f"preprocessing mean/std have {mean.shape[0]} values but the input has {channels} channels")
    if np.any(std <= 0):
        raise ValueError(f"preprocessing std must be > 0, got {std.tolist()}")
    if mean.ndim == 1:
        mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
    return mean, std


def clip_pair(values: Any) -> tuple[float, float] | None:
    """ART stores ``clip_values`` as an array; :func:`make_classifier` takes a pair of floats (or None)."""
    return None if values is None else (float(values[0]), float(values[1]))


def make_classifier(
    model: nn.Module,
    input_shape: Sequence[int],
    nb_classes: int,
    clip_values: Sequence[float] | None = (0.0, 1.0),
    preprocessing: Sequence[Any] | None = None,
    device: str = "cpu",
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
) -> PyTorchClassifier:
    """Wrap a logits-producing ``model`` as an ART :class:`PyTorchClassifier` with cross-entropy loss.

    :param model: the network; its output must be logits of shape (N, nb_classes).
    :param input_shape: shape of one input, channels first, e.g. ``(3, 32, 32)``.
    :param nb_classes: number of classes.
    :param clip_values: the input box ``(min, max)``, or None for none.
    :param preprocessing: None, or ``(mean, std)`` (scalars or per-channel) that ART applies before the
        model, so that attacks work in the unnormalised input space.
    :param device: "cpu", "cuda" (alias "gpu") or "auto" (cuda when available).
    :param optimizer: optimizer for ``fit``; default Adam over ``model.parameters()`` with ``lr``.
    :param lr: learning rate of the default optimizer.
    :return: the ART classifier.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _check_input_shape(input_shape)
    nb_classes = _check_positive_int(nb_classes, "nb_classes", minimum=2)
    clip = _check_clip_values(clip_values)
    prep = _check_preprocessing(preprocessing, shape[0])
    device_type = _device_type(device)
    if optimizer is None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        optimizer = torch.optim.Adam(model.parameters(), lr=float(lr))
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=nb_classes,
        optimizer=optimizer,
        clip_values=clip,
        preprocessing=prep if prep is not None else (0.0, 1.0),
        device_type=device_type,
    )


# --------------------------------------------------------------------------------------------------
# RobustBench
# --------------------------------------------------------------------------------------------------


def _normalise_rb_names(dataset: str, threat_model: str) -> tuple[str, str]:
    """Canonical spellings of ``dataset`` / ``threat_model`` (case-insensitive), or ValueError."""
    if not isinstance(dataset, str) or dataset.lower() not in ROBUSTBENCH_DATASETS:
        raise ValueError(f"unknown RobustBench dataset {dataset!r}; choose from {', '.join(ROBUSTBENCH_DATASETS)}")
    by_lower = {t.lower(): t for t in ROBUSTBENCH_THREAT_MODELS}
    if not isinstance(threat_model, str) or threat_model.lower() not in by_lower:
        raise ValueError(
            f"unknown RobustBench threat model {threat_model!r}; choose from {', '.join(ROBUSTBENCH_THREAT_MODELS)}"
        )
    return dataset.lower(), by_lower[threat_model.lower()]


def _zoo_entries(dataset: str, threat_model: str) -> Mapping[str, Mapping[str, Any]]:
    """RobustBench's model-zoo dict for (dataset, threat model), or ValueError when it has none."""
    import_robustbench()  # first, for its autoattack alias: a bare robustbench import fails
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    # robustbench keeps corruptions_3d models in the corruptions zoo.
    folder = threat_model.replace("_3d", "")
    per_dataset = model_dicts[BenchmarkDataset(dataset)]
    threat = ThreatModel(folder)
    if threat not in per_dataset:
        known = ", ".join(t.value for t in per_dataset)
        raise ValueError(f"RobustBench has no {threat_model} models for {dataset}; it has: {known}")
    return per_dataset[threat]


def _check_zoo_name(name: str, entries: Mapping[str, Any], dataset: str, threat_model: str) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown RobustBench model {name!r} for {dataset}/{threat_model}{hint}")


def robustbench_checkpoint_path(name: str, dataset: str = "cifar10", threat_model: str = "Linf",
                                model_dir: PathLike = "./models") -> Path:
    """Where robustbench reads (and downloads) the weights of model ``name``.

    Copy a checkpoint there to run offline: ``<model_dir>/<dataset>/<threat_model>/<name>.pt``.
    (Ensembles read ``<name>.pt_m0.pt``, ``<name>.pt_m1.pt``, ... next to it.)

    :param name: model-zoo name, e.g. ``"Addepalli2022Efficient_RN18"``.
    :param dataset: "cifar10", "cifar100" or "imagenet".
    :param threat_model: "Linf", "L2", "corruptions" or "corruptions_3d".
    :param model_dir: robustbench's model folder.
    :return: the checkpoint path (it may not exist).
    """
    dataset, threat_model = _normalise_rb_names(dataset, threat_model)
    return Path(model_dir) / dataset / threat_model.replace("_3d", "") / f"{name}.pt"


def _timm_name(name: str, dataset: str, threat_model: str) -> str | None:
    """The timm model name robustbench 1.1.1 tries first for ``name``, if timm knows it."""
    import timm

    candidate = f"{name.lower().replace('-', '_')}_{dataset}_{threat_model.replace('_3d', '').lower()}"
    return candidate if timm.is_model(candidate) else None


def _strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DataParallel) prefix that many published checkpoints carry."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _load_timm_offline(timm_name: str, path: Path, nb_classes: int) -> nn.Module:
    """Build a timm-registered zoo model without downloading and load a local state dict into it.

    robustbench 1.1.1 always asks timm for *pretrained* weights (a Hugging Face download) for these
    entries, even when a checkpoint is on disk, so the offline path is done here.
    """
    import timm

    model = timm.create_model(timm_name, num_classes=nb_classes, pretrained=False)
    checkpoint = _torch_load_plain(path)
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    try:
        model.load_state_dict(_strip_prefixes(checkpoint), strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ModelUnavailableError(
            f"cannot read the checkpoint at {path}: it is not a state dict of {timm_name} ({_first_line(err)})"
        ) from err
    return model


def _torch_load_plain(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``, errors turned into :class:`ModelUnavailableError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure means the same thing to the user
        raise ModelUnavailableError(
            f"cannot read checkpoint {path} ({type(err).__name__}: {_first_line(err)}); "
            "it must be a file written by torch.save holding only tensors and plain python values"
        ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def load_robustbench(
    name: str,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    model_dir: PathLike = "./models",
    device: str = "cpu",
) -> PyTorchClassifier:
    """Load a RobustBench model-zoo entry as an ART classifier (inputs in [0, 1], model in eval mode).

    Weights are read from :func:`robustbench_checkpoint_path` and downloaded there when absent. RobustBench
    models normalise their input themselves, so no ART preprocessing is set.

    :param name: model-zoo name, e.g. ``"Addepalli2022Efficient_RN18"``.
    :param dataset: "cifar10", "cifar100" or "imagenet".
    :param threat_model: "Linf", "L2", "corruptions" or "corruptions_3d".
    :param model_dir: robustbench's model folder.
    :param device: "cpu", "cuda" or "auto".
    :return: the ART classifier.
    :raises ValueError: unknown dataset, threat model or model name.
    :raises ModelUnavailableError: the weights could not be downloaded or read (one-line message saying
        where to put the checkpoint to run offline).
    """
    dataset, threat_model = _normalise_rb_names(dataset, threat_model)
    _device_type(device)  # validate before the (slow) load
    entries = _zoo_entries(dataset, threat_model)
    _check_zoo_name(name, entries, dataset, threat_model)
    input_shape, nb_classes = ROBUSTBENCH_DATASETS[dataset]
    path = robustbench_checkpoint_path(name, dataset, threat_model, model_dir)
    timm_name = _timm_name(name, dataset, threat_model)
    if timm_name is not None and path.is_file():
        model = _load_timm_offline(timm_name, path, nb_classes)
    else:
        gdrive_ids = entries[name].get("gdrive_id")
        n_members = len(gdrive_ids) if isinstance(gdrive_ids, list) else 0
        model = _robustbench_load_model(name, dataset, threat_model, model_dir, path, n_members)
    model.eval()
    logger.info("loaded RobustBench model %s (%s, %s)", name, dataset, threat_model)
    return make_classifier(model, input_shape, nb_classes, clip_values=(0.0, 1.0), device=device)


def _robustbench_load_model(
    name: str, dataset: str, threat_model: str, model_dir: PathLike, path: Path, n_members: int = 0
) -> nn.Module:
    """Call ``robustbench.utils.load_model`` and translate its failures into one-line errors.

    :param n_members: number of checkpoint files of an ensemble entry (robustbench names them
        ``<name>.pt_m0.pt``, ``<name>.pt_m1.pt``, ...), 0 for a single-file entry.
    """
    rb = import_robustbench()
    files = [Path(f"{path}_m{i}.pt") for i in range(n_members)] if n_members else [path]
    existed = all(f.is_file() for f in files)
    where = str(path) if not n_members else f"{files[0]} ... {files[-1].name}"
    stdout = io.StringIO()
    try:
        # robustbench reports downloads with print(); route that to logging instead of our stdout.
        with contextlib.redirect_stdout(stdout):
            model = rb.utils.load_model(model_name=name, model_dir=str(model_dir), dataset=dataset,
                                        threat_model=threat_model)
    except ValueError as err:
        # The name was validated already: this is robustbench refusing the entry (e.g. no gdrive_id).
        raise ValueError(f"RobustBench cannot load {name!r} for {dataset}/{threat_model}: {_first_line(err)}") from err
    except Exception as err:  # network, gdown, pickle, missing-key and state-dict errors alike
        if existed:
            what = "cannot read the checkpoint at"
        else:
            what = "cannot download the weights (offline?); to run offline, place the checkpoint at"
        raise ModelUnavailableError(
            f"RobustBench model {name!r}: {what} {where} ({type(err).__name__}: {_first_line(err)})"
        ) from err
    finally:
        for line in stdout.getvalue().splitlines():
            logger.info("robustbench: %s", line)
    return model


def build_zoo_architecture(name: str, dataset: str, threat_model: str) -> nn.Module:
    """A RobustBench zoo architecture with its initial (random) weights, without downloading a checkpoint."""
    dataset, threat_model = _normalise_rb_names(dataset, threat_model)
    entries = _zoo_entries(dataset, threat_model)
    _check_zoo_name(name, entries, dataset, threat_model)
    try:
        return entries[name]["model"]()
    except Exception as err:  # e.g. torchvision fetching pretrained weights offline
        raise ModelUnavailableError(
            f"cannot build RobustBench architecture {name!r} ({type(err).__name__}: {_first_line(err)})"
        ) from err


# --------------------------------------------------------------------------------------------------
# Local checkpoints
# --------------------------------------------------------------------------------------------------


def _plain(value: Any, key: str) -> Any:
    """``value`` as plain python types (lists, dicts, numbers, str, bool, None), or TypeError naming ``key``.

    ``torch.load(weights_only=True)`` refuses numpy arrays and arbitrary objects, so convert or refuse
    them at save time rather than write a file that cannot be read.
    """
    # numpy scalars first: np.float64 subclasses float but pickles as a numpy object.
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0:
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return [_plain(v, key) for v in value.tolist()]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{key} keys must be str, got {k!r}")
            out[k] = _plain(v, f"{key}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, key) for v in value]
    raise TypeError(f"{key} must hold only plain python values, got {type(value).__name__}")


def _arch_spec(
    model_name_or_arch: Any, meta: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Normalise the architecture argument of :func:`save_checkpoint_model` to ``{"name", "kwargs"}``."""
    if isinstance(model_name_or_arch, SmallCNN):
        arch = {"name": "SmallCNN", "kwargs": dict(model_name_or_arch.config)}
    elif isinstance(model_name_or_arch, str):
        arch = {"name": model_name_or_arch, "kwargs": {}}
    elif isinstance(model_name_or_arch, Mapping) and isinstance(model_name_or_arch.get("name"), str):
        arch = {"name": model_name_or_arch["name"], "kwargs": dict(model_name_or_arch.get("kwargs") or {})}
    else:
        raise TypeError(
            "model_name_or_arch must be a SmallCNN, an architecture name or a dict {'name': ..., 'kwargs': ...}, "
            f"got {type(model_name_or_arch).__name__}"
        )
    name, kwargs = arch["name"], arch["kwargs"]
    shape, nb_classes = list(meta["input_shape"]), meta["nb_classes"]
    if name == "SmallCNN":
        # Fill in what the shapes determine, so callers may pass just the name.
        kwargs.setdefault("in_channels", shape[0])
        kwargs.setdefault("nb_classes", nb_classes)
        kwargs.setdefault("image_size", shape[-1])
        first_conv = state_dict.get("features.0.weight")
        if first_conv is not None:
            kwargs.setdefault("width", int(first_conv.shape[0]))
        _check_fits(SmallCNN(**kwargs), state_dict)
    elif name.startswith(RB_PREFIX):
        kwargs.setdefault("dataset", meta.get("dataset", "cifar10"))
        kwargs.setdefault("threat_model", meta.get("threat_model", "Linf"))
        _normalise_rb_names(kwargs["dataset"], kwargs["threat_model"])
    else:
        raise ValueError(f"unknown architecture {name!r} in model_name_or_arch; known: SmallCNN, rb:<robustbench name>")
    return {"name": name, "kwargs": _plain(kwargs, "arch.kwargs")}


def _check_fits(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Refuse, at save time, a state dict that the recorded architecture could not load back."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        name = type(model).__name__
        raise ValueError(f"state_dict does not fit the architecture {name}: {_first_line(err)}") from err


def save_checkpoint_model(
    path: PathLike,
    model_name_or_arch: str | Mapping[str, Any] | SmallCNN,
    state_dict: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
) -> Path:
    """Write a local checkpoint that :func:`load_local_checkpoint` reads back, atomically.

    The file (``torch.save``) holds a dict ``{"format", "version", "arch": {"name", "kwargs"},
    "state_dict", "input_shape", "nb_classes", "clip_values", "preprocessing", "extra"}`` of tensors and
    plain python values only.

    :param path: destination file; parent folders are created.
    :param model_name_or_arch: "SmallCNN" (kwargs filled from ``meta``), "rb:<robustbench name>",
        a dict ``{"name": ..., "kwargs": {...}}``, or a :class:`SmallCNN` instance.
    :param state_dict: the model's ``state_dict()``; tensors are copied to the CPU.
    :param meta: ``input_shape`` and ``nb_classes`` (required), ``clip_values`` (default ``[0, 1]``),
        ``preprocessing`` (None or ``[mean, std]``), for ``rb:`` names ``dataset`` / ``threat_model``
        (default cifar10 / Linf), and ``extra``: a dict of plain values kept as is (e.g. training info).
    :return: the path written.
    """
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
    for key in ("input_shape", "nb_classes"):
        if key not in meta:
            raise ValueError(f"meta is missing the key {key!r}")
    shape = list(_check_input_shape(meta["input_shape"]))
    nb_classes = _check_positive_int(meta["nb_classes"], "meta['nb_classes']", minimum=2)
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError("state_dict must be a mapping of names to tensors (a module's state_dict())")
    clip = _check_clip_values(meta.get("clip_values", (0.0, 1.0)))
    prep = meta.get("preprocessing")
    _check_preprocessing(prep, shape[0])
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": _arch_spec(model_name_or_arch, meta, state_dict),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "input_shape": shape,
        "nb_classes": nb_classes,
        "clip_values": list(clip) if clip is not None else None,
        "preprocessing": _plain(prep, "meta['preprocessing']"),
        "extra": _plain(meta.get("extra", {}), "meta['extra']"),
    }
    return save_checkpoint(payload, path)


def _build_architecture(arch: Mapping[str, Any], path: Path) -> nn.Module:
    name, kwargs = arch.get("name"), dict(arch.get("kwargs") or {})
    if name == "SmallCNN":
        return SmallCNN(**kwargs)
    if isinstance(name, str) and name.startswith(RB_PREFIX):
        return build_zoo_architecture(
            name[len(RB_PREFIX):], kwargs.get("dataset", "cifar10"), kwargs.get("threat_model", "Linf")
        )
    raise ValueError(f"checkpoint {path} has unknown architecture {name!r}; known: SmallCNN, rb:<robustbench name>")


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """Read and validate a local checkpoint's dict without building the model.

    :param path: a file written by :func:`save_checkpoint_model`.
    :return: the checkpoint dict.
    :raises FileNotFoundError: no such file.
    :raises ValueError: the file is not an art_wdat checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    payload = _torch_load_plain(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an art_wdat checkpoint (written by save_checkpoint_model)")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint version {payload['version']}; this art_wdat reads up to {CHECKPOINT_VERSION}"
        )
    for key in ("arch", "state_dict", "input_shape", "nb_classes"):
        if key not in payload:
            raise ValueError(f"checkpoint {path} is missing the key {key!r}")
    return payload


def load_local_checkpoint(path: PathLike, device: str = "cpu") -> PyTorchClassifier:
    """Rebuild the model of a local checkpoint and wrap it as an ART classifier (eval mode).

    Read with ``torch.load(..., weights_only=True)``: loading never executes code from the file.

    :param path: a file written by :func:`save_checkpoint_model`.
    :param device: "cpu", "cuda" or "auto".
    :return: the ART classifier.
    :raises FileNotFoundError: no such file.
    :raises ValueError: not an art_wdat checkpoint, unknown architecture, or weights that do not fit it.
    """
    path = Path(path)
    payload = read_checkpoint(path)
    model = _build_architecture(payload["arch"], path)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path}: weights do not fit architecture {payload['arch'].get('name')!r}: "
                         f"{_first_line(err)}") from err
    model.eval()
    return make_classifier(
        model,
        payload["input_shape"],
        payload["nb_classes"],
        clip_values=payload.get("clip_values"),
        preprocessing=payload.get("preprocessing"),
        device=device,
    )
