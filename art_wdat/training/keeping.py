"""What one ``fit`` call keeps of its run: the checkpoint files, the held-out selection, and the weights to fall back
to.

:class:`RunKeeper` starts a run afresh (clearing the folder, measuring the start) or resumes one (checking that the
files and the measurement belong together before loading anything), measures and offers each due epoch to the
selection, writes ``last.pt`` then ``kept.pt`` (:mod:`art_wdat.training.rundir`), and at the end, or after any
exception, puts the right weights in the model: the kept ones with ``select_best``, else those of the last finished
epoch (the start's before any; before a resume is accepted, the model's as given).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from art_wdat.training.checkpoint import restore_training_state, training_state
from art_wdat.training.options import FitOptions
from art_wdat.training.rundir import RunDirectory, Weights, cpu_weights, new_run_id
from art_wdat.training.selection import Selection, Tolerances, format_record
from art_wdat.training.settings import RunState

logger = logging.getLogger(__name__)


class RunKeeper:
    """The run state of one fit call.

    :param opts: The call's options.
    :param state: The trainer's state (history, selection, kept weights), updated here.
    :param module: The network (unwrapped from DDP): what is saved and loaded.
    :param optimizer: The optimizer stepping it (checkpointed).
    :param say: Shows a line to the user.
    :param writer: Whether this process writes the files (the first rank).
    """

    def __init__(self, opts: FitOptions, state: RunState, module: torch.nn.Module, optimizer: Any,
                 say: Callable[[str], None], writer: bool = True) -> None:
        self.opts, self.state, self.module, self.optimizer, self.say = opts, state, module, optimizer, say
        self.files = RunDirectory(opts.checkpoint_dir, writer=writer)
        self.run_id = ""
        #: The weights the model holds if the call stops now without ``select_best``.
        self.fallback: Weights = cpu_weights(module)
        state.kept_weights = None

    # -- the start ------------------------------------------------------------------------------------------
    def checkpoint(self) -> dict | None:
        """``last.pt`` to resume from (None without ``resume`` or without the file)."""
        checkpoint = self.files.read_last() if self.opts.resume else None
        if self.opts.resume and checkpoint is None:
            logger.warning("No checkpoint at %s; training from the start.", self.files.last_path)
        return checkpoint

    def fresh(self) -> None:
        """A new run: clear the checkpoint folder, draw the run id, measure the start (before any fine-tuning
        protocol touches the model)."""
        self.files.clear()
        self.run_id = new_run_id()
        self.state.history = []
        self.start_selection(0)

    def resume(self, checkpoint: dict, generator: torch.Generator) -> int:
        """Continue the run of ``checkpoint`` (``last.pt``); its selection and kept weights are checked before
        anything is loaded. The epochs finished."""
        saved = self.saved_selection(checkpoint)
        kept = None if saved is None else self.files.kept_weights(checkpoint, int(saved.selected_epoch or 0))
        epoch, self.state.history = restore_training_state(checkpoint, self.module, self.optimizer,
                                                           self.opts.scheduler, generator)
        self.run_id = checkpoint.get("run_id") or new_run_id()
        logger.info("Resumed run %s from %s after epoch %d.", self.run_id, self.files.last_path, epoch)
        if saved is not None:
            self.state.selection, self.state.kept_weights = saved, kept
        elif self.opts.judge is not None:
            logger.warning("No held-out selection to resume after epoch %d; the resumed weights are the new start.",
                           epoch)
            self.start_selection(epoch)
        self.fallback = checkpoint["model"]
        return epoch

    def saved_selection(self, checkpoint: dict) -> Selection | None:
        """The checkpoint's selection, if this call has a judge, after checking that it was measured alike.

        :raises ValueError: if the tolerances passed, or the held-out measurement (its budget, order p, norm,
            pointwise ε and attack, iterations or split), differ from those the checkpoint's records were made with.
        """
        data, opts = checkpoint.get("selection"), self.opts
        if opts.judge is None:
            if data is not None:
                logger.warning("Resumed without `validation_data`: the checkpoint's held-out selection is dropped, "
                               "and the model ends with the last epoch's weights.")
            return None
        if data is None:
            return None
        selection = Selection.from_dict(data)
        if opts.tolerances is not None and opts.tolerances != selection.tolerances:
            raise ValueError(f"`tolerances`={opts.tolerances} differ from the checkpoint's {selection.tolerances}, "
                             "which its held-out selection was judged with: pass tolerances=None (or the same "
                             "ones) to resume, or start afresh (resume=False).")
        now = opts.judge.describe()
        changed = sorted(k for k, v in selection.judge.items() if k in now and now[k] != v)
        if changed:
            said = ", ".join(f"`{k}` {selection.judge[k]!r} then, {now[k]!r} now" for k in changed)
            raise ValueError(f"The checkpoint's held-out records were measured otherwise ({said}): resume with the "
                             "same settings and validation split, or start afresh (resume=False).")
        selection.select_best = opts.select_best
        return selection

    def start_selection(self, epoch: int) -> None:
        """Measure the model now, the weights of ``epoch`` (0: the start), as the start of the held-out selection;
        its weights are the first kept (in memory and ``kept.pt``)."""
        judge = self.opts.judge
        if judge is None:
            self.state.selection = None
            return
        start = judge.measure()
        self.state.selection = Selection(start=start, tolerances=self.opts.tolerances or Tolerances(),
                                         select_best=self.opts.select_best, start_epoch=epoch,
                                         judge=judge.describe(), notes=list(judge.notes))
        self.say(f"start held-out: {format_record(start)}")
        for note in judge.notes:
            logger.warning(note)
        self.state.kept_weights = cpu_weights(self.module)
        self.files.save_kept(self.run_id, epoch, self.state.kept_weights)

    # -- each epoch -----------------------------------------------------------------------------------------
    def end_epoch(self, done: int, record: dict, generator: torch.Generator) -> None:
        """After epoch ``done`` trained (and its scheduler step): measure it if due, offer it to the selection, add
        ``record`` to the history and write ``last.pt``, then ``kept.pt`` if it became the kept one.

        The epoch's weights are copied once: the fallback, the kept weights if it wins, and ``last.pt``'s.
        """
        weights = cpu_weights(self.module)
        won = self.validate(done, record)
        if won:
            self.state.kept_weights = weights
        if self.state.selection is not None:
            self.state.selection.finish(done)
        self.fallback = weights
        self.state.history.append(record)
        logger.info("W-TRADES epoch %d/%d: %s", done, self.opts.nb_epochs,
                    ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch" and isinstance(v, float)))
        if self.opts.checkpoint_dir is None:
            return
        state = training_state(self.module, self.optimizer, self.opts.scheduler, done, self.state.history,
                               generator, model_state=weights)
        state["run_id"] = self.run_id
        if self.state.selection is not None:
            state["selection"] = self.state.selection.to_dict()
        self.files.save_last(state)
        if won:
            self.files.save_kept(self.run_id, done, weights)

    def measures(self, epoch: int) -> bool:
        """Whether the held-out split is measured after ``epoch``: every ``val_every``-th, and the last."""
        return self.opts.judge is not None and (epoch % self.opts.val_every == 0 or epoch == self.opts.nb_epochs)

    def validate(self, epoch: int, record: dict) -> bool:
        """Measure the held-out split after ``epoch`` (if due) into ``record``; offer it to the selection. True if
        the selection rule picks it (its weights are then the kept ones)."""
        judge, selection = self.opts.judge, self.state.selection
        if judge is None or selection is None or not self.measures(epoch):
            return False
        measured = judge.measure()
        record.update(measured)
        won = selection.offer(epoch, measured)
        mark = (" (kept)" if self.opts.select_best else " (best so far)") if won else ""
        self.say(f"epoch {epoch}/{self.opts.nb_epochs} held-out: {format_record(measured, selection.start)}{mark}")
        return won

    # -- the end --------------------------------------------------------------------------------------------
    def keep_selected(self) -> None:
        """Load the kept weights into the model at the end of the call, and say which epoch they are."""
        selection = self.state.selection
        if selection is None:
            return
        if self.opts.select_best and self.state.kept_weights is not None:
            self.module.load_state_dict(self.state.kept_weights)  # copies the values into the module's own tensors
        logger.info(selection.summary())

    def restore_after_failure(self) -> None:
        """After an exception: the kept weights with ``select_best``, else the last finished epoch's (or the
        start's), so that the model matches what :attr:`selection` names, never a half-trained epoch."""
        selection = self.state.selection
        kept = self.state.kept_weights if selection is not None and self.opts.select_best else None
        try:
            self.module.load_state_dict(kept if kept is not None else self.fallback)
        except Exception:  # the original exception matters more; say why the weights could not be put back
            logger.exception("Could not put back the kept weights after the failure.")
