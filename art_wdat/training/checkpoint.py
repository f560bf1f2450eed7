"""Training checkpoints: atomic writes, ``weights_only`` reads, and every RNG state needed to resume bitwise.

A checkpoint is a dict of tensors and plain python values (ints, floats, strings, lists, tuples, dicts)
only, so that ``torch.load(..., weights_only=True)`` reads it without unpickling arbitrary objects. The
numpy RNG state, an array in numpy's own format, is stored as a tensor and rebuilt on load.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: The file in ``checkpoint_dir`` that holds the state after the last finished epoch.
LAST = "last.pt"


def save_checkpoint(state: dict, path: PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, flush + fsync, then os.replace.

    A crash mid-write leaves the previous checkpoint (or none), never a truncated file.

    :param state: Tensors and plain python values only.
    :param path: The destination; its folder is created.
    :return: The path written.
    """
    return _write_atomically(path, lambda handle: torch.save(state, handle))


def save_text(text: str, path: PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, as :func:`save_checkpoint` writes a checkpoint."""
    return _write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def _write_atomically(path: PathLike, write: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); a checkpoint is an ordinary output file, readable as the umask says.
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    logger.debug("Wrote %s", path)
    return path


def current_umask() -> int:
    """The process's umask: read from /proc on Linux, else set and restored at once (no other way to read it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); not possible, and not needed, everywhere."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def seed_everything(seed: int | None) -> None:
    """Seed python's, numpy's and torch's global RNGs (ART's attacks use numpy, ours torch); None does nothing."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_checkpoint(path: PathLike, map_location: str | torch.device | None = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def _to_cpu(obj: Any) -> Any:
    """Copy every tensor in a nested structure to the CPU (checkpoints load anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def capture_rng(generator: torch.Generator | None = None) -> dict:
    """The states of torch's, numpy's, python's and (if present) CUDA's global RNGs, and of ``generator``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": list(py_state), "gauss": py_gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict, generator: torch.Generator | None = None) -> None:
    """Put back the RNG states captured by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].cpu())


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any | None, epoch: int,
                   history: list, generator: torch.Generator | None = None,
                   model_state: dict | None = None) -> dict:
    """Everything needed to continue training after ``epoch`` finished epochs, on the CPU.

    :param model_state: ``model``'s state dict already copied to the CPU (not copied again); default: copied here.
    """
    return {
        "epoch": int(epoch),
        "model": _to_cpu(model.state_dict()) if model_state is None else model_state,
        "optimizer": _to_cpu(optimizer.state_dict()),
        "scheduler": None if scheduler is None else _to_cpu(scheduler.state_dict()),
        "history": [dict(h) for h in history],
        "rng": capture_rng(generator),
    }


def restore_training_state(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Any | None, generator: torch.Generator | None = None) -> tuple[int, list]:
    """Load a :func:`training_state` into the given objects; return ``(finished epochs, history)``."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"], generator)
    return int(state["epoch"]), list(state["history"])
