"""The local checkpoint format: one file of tensors and plain python values, never executed on load.

:func:`save_checkpoint_model` writes it (atomically); :func:`load_local_checkpoint` reads it back with
``torch.load(..., weights_only=True)``, rebuilds the recorded architecture (:class:`SmallCNN` or
``rb:<robustbench model name>``) and wraps it as an ART classifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from art_wdat.training.checkpoint import PathLike, save_checkpoint
from art_wdat.validation import check_int
from art_wdat.zoo.architectures import SmallCNN
from art_wdat.zoo.classifier import check_clip_values, check_input_shape, check_preprocessing, make_classifier
from art_wdat.zoo.files import first_line, load_plain_file
from art_wdat.zoo.robustbench import build_zoo_architecture, normalise_rb_names

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

RB_PREFIX = "rb:"
CHECKPOINT_FORMAT = "art_wdat.checkpoint"
CHECKPOINT_VERSION = 1


def plain_value(value: Any, key: str) -> Any:
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
        return [plain_value(v, key) for v in value.tolist()]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{key} keys must be str, got {k!r}")
            out[k] = plain_value(v, f"{key}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [plain_value(v, key) for v in value]
    raise TypeError(f"{key} must hold only plain python values, got {type(value).__name__}")


def _named_arch(model_name_or_arch: Any) -> tuple[str, dict[str, Any]]:
    """The architecture argument of :func:`save_checkpoint_model` as ``(name, kwargs)``, kwargs a fresh dict."""
    if isinstance(model_name_or_arch, SmallCNN):
        return "SmallCNN", dict(model_name_or_arch.config)
    if isinstance(model_name_or_arch, str):
        return model_name_or_arch, {}
    if isinstance(model_name_or_arch, Mapping) and isinstance(model_name_or_arch.get("name"), str):
        return model_name_or_arch["name"], dict(model_name_or_arch.get("kwargs") or {})
    raise TypeError(
        "model_name_or_arch must be a SmallCNN, an architecture name or a dict {'name': ..., 'kwargs': ...}, "
        f"got {type(model_name_or_arch).__name__}"
    )


def _arch_spec(
    model_name_or_arch: Any, meta: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Normalise the architecture argument of :func:`save_checkpoint_model` to ``{"name", "kwargs"}``."""
    name, kwargs = _named_arch(model_name_or_arch)
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
        normalise_rb_names(kwargs["dataset"], kwargs["threat_model"])
    else:
        raise ValueError(f"unknown architecture {name!r} in model_name_or_arch; known: SmallCNN, rb:<robustbench name>")
    return {"name": name, "kwargs": plain_value(kwargs, "arch.kwargs")}


def _check_fits(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Refuse, at save time, a state dict that the recorded architecture could not load back."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        name = type(model).__name__
        raise ValueError(f"state_dict does not fit the architecture {name}: {first_line(err)}") from err


def _checked_meta(meta: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Validate ``meta`` and ``state_dict``; return the checkpoint's shape fields and clip values.

    ``preprocessing`` is only checked here: it and ``extra`` are made plain values by the caller after the
    architecture, so that an architecture error is the one reported first.
    """
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
    for key in ("input_shape", "nb_classes"):
        if key not in meta:
            raise ValueError(f"meta is missing the key {key!r}")
    shape = list(check_input_shape(meta["input_shape"]))
    check_int("meta['nb_classes']", meta["nb_classes"], low=2)
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError("state_dict must be a mapping of names to tensors (a module's state_dict())")
    clip = check_clip_values(meta.get("clip_values", (0.0, 1.0)))
    check_preprocessing(meta.get("preprocessing"), shape[0])
    return {"input_shape": shape, "nb_classes": int(meta["nb_classes"]),
            "clip_values": list(clip) if clip is not None else None}


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
    fields = _checked_meta(meta, state_dict)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": _arch_spec(model_name_or_arch, meta, state_dict),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        **fields,
        "preprocessing": plain_value(meta.get("preprocessing"), "meta['preprocessing']"),
        "extra": plain_value(meta.get("extra", {}), "meta['extra']"),
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
    payload = load_plain_file(path)
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
                         f"{first_line(err)}") from err
    model.eval()
    return make_classifier(
        model,
        payload["input_shape"],
        payload["nb_classes"],
        clip_values=payload.get("clip_values"),
        preprocessing=payload.get("preprocessing"),
        device=device,
    )
