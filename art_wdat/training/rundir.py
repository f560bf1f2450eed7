"""One run, one directory state: the files of ``checkpoint_dir``, the order they are written in, and the checks on
resume.

A run is one training from a fresh start to its last epoch, however many ``fit`` calls (resumes) it takes. It draws
a run id at its fresh start, and every file it writes records it:

* ``last.pt``: the state after the last finished epoch (model, optimizer, scheduler, RNG states, history) and the
  held-out selection, which names the epoch whose weights selection keeps;
* ``kept.pt``: those kept weights, with the epoch they are.

What may be found after a crash at any point, and what a resume makes of it:

* A fresh start first removes what an earlier run left (``last.pt`` before ``kept.pt``, so that a crash in between
  leaves no ``last.pt`` to resume from), then writes ``kept.pt`` of the start weights (with held-out selection).
  A crash before the first ``last.pt`` leaves no ``last.pt``: a resume starts afresh.
* After each epoch ``last.pt`` is written first, then ``kept.pt`` if the epoch became the kept one. A crash between
  the two leaves a ``last.pt`` that names its own epoch as the kept one and an older ``kept.pt``: the kept weights
  are then ``last.pt``'s own, and the resume writes them to ``kept.pt``. A failed write leaves the previous file
  (the writes are atomic), so ``last.pt`` and ``kept.pt`` still agree.
* A resume refuses (ValueError) a ``kept.pt`` of another run, or of another epoch than the one the selection in
  ``last.pt`` names, unless that epoch is ``last.pt``'s own.

Only the first rank of a ``torch.distributed`` run writes; every rank reads.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from pathlib import Path

import torch

from art_wdat.training.checkpoint import LAST, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

#: The file in ``checkpoint_dir`` with the weights held-out selection keeps so far.
KEPT = "kept.pt"
#: Weights as a CPU state dict.
Weights = dict[str, torch.Tensor]


def new_run_id() -> str:
    """A fresh run id (random, 32 hex digits)."""
    return uuid.uuid4().hex


def cpu_weights(module: torch.nn.Module) -> Weights:
    """A CPU copy of ``module``'s state dict (what a later failure or the selection puts back)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class RunDirectory:
    """The checkpoint files of one run in ``folder`` (None: no files, every method a no-op or None).

    :param folder: ``checkpoint_dir``.
    :param writer: Whether this process writes (the first rank).
    """

    def __init__(self, folder: Path | None, writer: bool = True) -> None:
        self.folder, self.writer = folder, writer

    @property
    def last_path(self) -> Path | None:
        return None if self.folder is None else self.folder / LAST

    @property
    def kept_path(self) -> Path | None:
        return None if self.folder is None else self.folder / KEPT

    def read_last(self) -> dict | None:
        """``last.pt``, or None if there is none."""
        path = self.last_path
        return load_checkpoint(path) if path is not None and path.is_file() else None

    def clear(self) -> None:
        """Remove what an earlier run left: ``last.pt`` first (no resume from a half-cleared folder), then
        ``kept.pt`` and the temp files of interrupted writes."""
        if self.folder is None or not self.writer or not self.folder.is_dir():
            return
        last = self.read_last_run_id()
        for path in (self.folder / LAST, self.folder / KEPT):
            if path.is_file():
                path.unlink()
                logger.warning("Removed %s of an earlier run%s: this fit starts a fresh run there.", path,
                               f" ({last})" if last else "")
        for name in (LAST, KEPT):
            for tmp in self.folder.glob(f".{name}.*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def read_last_run_id(self) -> str | None:
        """The run id in ``last.pt`` (None without one), for messages; never raises."""
        try:
            state = self.read_last()
        except Exception:  # a damaged file is removed all the same
            return None
        return None if state is None else state.get("run_id")

    def save_last(self, state: dict) -> None:
        """Write ``last.pt`` (first rank only)."""
        if self.folder is not None and self.writer:
            save_checkpoint(state, self.folder / LAST)

    def save_kept(self, run_id: str, epoch: int, weights: Weights) -> None:
        """Write ``kept.pt``: the weights of ``epoch`` of run ``run_id`` (first rank only)."""
        if self.folder is not None and self.writer:
            save_checkpoint({"run_id": run_id, "epoch": int(epoch), "model": weights}, self.folder / KEPT)

    def kept_weights(self, last: dict, epoch: int) -> Weights:
        """The weights of ``epoch``, the one the selection in ``last`` (``last.pt``) keeps, checked to belong.

        ``last.pt``'s own epoch is its own weights (and ``kept.pt`` is brought up to date if a crash left it behind);
        any other comes from ``kept.pt``, which must be of the same run and that epoch.

        :raises ValueError: if ``kept.pt`` is missing, of another run or of another epoch.
        """
        run_id, last_epoch = last.get("run_id"), int(last["epoch"])
        kept = self._read_kept()
        if epoch == last_epoch:
            if kept is None or kept.get("run_id") != run_id or int(kept.get("epoch", -1)) != epoch:
                if run_id is not None:
                    logger.warning("%s is behind %s (a crash between the two writes): kept epoch %d is %s's own.",
                                   KEPT, LAST, epoch, LAST)
                    self.save_kept(run_id, epoch, last["model"])
            return last["model"]
        if run_id is None:
            raise ValueError(f"{self.last_path} was written by an earlier version of art_wdat, without a run id: its "
                             f"{KEPT} cannot be matched to it. Start afresh (resume=False).")
        if kept is None:
            raise ValueError(f"{self.last_path} (run {run_id}, after epoch {last_epoch}) keeps the weights of epoch "
                             f"{epoch}, but {self.kept_path} is missing: the kept weights are lost. Start afresh "
                             "(resume=False).")
        if kept.get("run_id") != run_id or int(kept.get("epoch", -1)) != epoch:
            raise ValueError(f"{self.kept_path} holds epoch {kept.get('epoch')} of run {kept.get('run_id')}, but "
                             f"{self.last_path} (run {run_id}, after epoch {last_epoch}) keeps epoch {epoch}: they "
                             "do not belong together. Start afresh (resume=False), or put back the pair of files "
                             "written together.")
        return kept["model"]

    def _read_kept(self) -> dict | None:
        path = self.kept_path
        return load_checkpoint(path) if path is not None and path.is_file() else None
