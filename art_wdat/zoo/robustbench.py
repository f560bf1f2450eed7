"""RobustBench model-zoo entries as ART classifiers, with readable errors and an offline path.

The offline path is a checkpoint file placed where robustbench looks for it
(:func:`robustbench_checkpoint_path`). Nothing here imports robustbench or timm at module import time.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from art_wdat.training.checkpoint import PathLike
from art_wdat.zoo.classifier import device_type, make_classifier
from art_wdat.zoo.files import ModelUnavailableError, first_line, load_plain_file, typed_first_line
from art_wdat.zoo.robustbench_compat import import_robustbench

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

logger = logging.getLogger(__name__)

#: Input shape and number of classes of each RobustBench dataset.
ROBUSTBENCH_DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet": ((3, 224, 224), 1000),
}
#: Threat models RobustBench 1.1.1 knows (``corruptions_3d`` models live in the ``corruptions`` folder).
ROBUSTBENCH_THREAT_MODELS = ("Linf", "L2", "corruptions", "corruptions_3d")


def normalise_rb_names(dataset: str, threat_model: str) -> tuple[str, str]:
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


def _checked_entries(name: str, dataset: str, threat_model: str) -> Mapping[str, Mapping[str, Any]]:
    """The zoo of (dataset, threat model), once ``name`` is known to be in it; names already canonical."""
    entries = _zoo_entries(dataset, threat_model)
    _check_zoo_name(name, entries, dataset, threat_model)
    return entries


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
    dataset, threat_model = normalise_rb_names(dataset, threat_model)
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
    checkpoint = load_plain_file(path)
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    try:
        model.load_state_dict(_strip_prefixes(checkpoint), strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ModelUnavailableError(
            f"cannot read the checkpoint at {path}: it is not a state dict of {timm_name} ({first_line(err)})"
        ) from err
    return model


def load_robustbench(
    name: str,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    *,
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
    dataset, threat_model = normalise_rb_names(dataset, threat_model)
    device_type(device)  # validate before the (slow) load
    entries = _checked_entries(name, dataset, threat_model)
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
    created = _missing_folders(Path(model_dir), path.parent)
    stdout = io.StringIO()
    try:
        return _call_load_model(rb, name, dataset, threat_model, model_dir, stdout, where=where, existed=existed)
    except BaseException:
        # robustbench creates <model_dir>/<dataset>/<threat_model> before it downloads: a failed load should not
        # leave an empty models/ folder behind. Only folders that did not exist, and only while empty.
        _remove_empty(created)
        raise
    finally:
        for line in stdout.getvalue().splitlines():
            logger.info("robustbench: %s", line)


def _missing_folders(top: Path, folder: Path) -> list[Path]:
    """The folders from ``top`` down to ``folder`` that do not exist yet, deepest first."""
    missing = [f for f in (folder, *folder.parents) if f == top or top in f.parents]
    return [f for f in missing if not f.exists()]


def _remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; leave anything with a file in it."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _call_load_model(rb: Any, name: str, dataset: str, threat_model: str, model_dir: PathLike,
                     stdout: io.StringIO, *, where: str, existed: bool) -> nn.Module:
    """``robustbench.utils.load_model``, its output to ``stdout``, its failures as one-line errors."""
    try:
        # robustbench reports downloads with print(); route that to logging instead of our stdout.
        with contextlib.redirect_stdout(stdout):
            return rb.utils.load_model(model_name=name, model_dir=str(model_dir), dataset=dataset,
                                       threat_model=threat_model)
    except ValueError as err:
        # The name was validated already: this is robustbench refusing the entry (e.g. no gdrive_id).
        raise ValueError(f"RobustBench cannot load {name!r} for {dataset}/{threat_model}: {first_line(err)}") from err
    except Exception as err:  # network, gdown, pickle, missing-key and state-dict errors alike
        if existed:
            what = "cannot read the checkpoint at"
        else:
            what = "cannot download the weights (offline?); to run offline, place the checkpoint at"
        raise ModelUnavailableError(
            f"RobustBench model {name!r}: {what} {where} ({typed_first_line(err)})"
        ) from err


def build_zoo_architecture(name: str, dataset: str, threat_model: str) -> nn.Module:
    """A RobustBench zoo architecture with its initial (random) weights, without downloading a checkpoint."""
    dataset, threat_model = normalise_rb_names(dataset, threat_model)
    entries = _checked_entries(name, dataset, threat_model)
    try:
        return entries[name]["model"]()
    except Exception as err:  # e.g. torchvision fetching pretrained weights offline
        raise ModelUnavailableError(
            f"cannot build RobustBench architecture {name!r} ({typed_first_line(err)})"
        ) from err
