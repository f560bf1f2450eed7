"""The epoch lifecycle of one ``fit`` call: seed, freeze, resume or fine-tune, train, validate, select, checkpoint.

:class:`EpochLoop` runs the epochs of :meth:`WassersteinTRADESTrainer.fit` and ``fit_generator`` alike: each gives
it the batches of an epoch, and every batch goes through the trainer's one per-batch step (``step``). What outlives
a call (the history, the checkpointed shuffling generator, the held-out selection and, during the call, the frozen
blocks) is the trainer's :class:`~art_wdat.training.settings.RunState`. Statistics stay on the device during an
epoch and are read back once at its end (and, with progress bars, every tenth of an epoch for the bar's numbers).

With a validation split, the start and every epoch are measured on it (:mod:`art_wdat.training.selection`) and,
with ``select_best``, the model ends the call with the weights of the best epoch that stays within the
tolerances, or the start's: never a worse model on the held-out split.

Imports run one way: settings, then this loop, then the trainer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from art_wdat.attacks import estimator as est
from art_wdat.training.checkpoint import (
    LAST,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    seed_everything,
    training_state,
)
from art_wdat.training.finetune import apply_finetune, freeze_except_last
from art_wdat.training.selection import HeldOutJudge, Selection, Tolerances, format_record
from art_wdat.training.settings import RunState, TRADESSettings
from art_wdat.training.sync import RankSync, Shard
from art_wdat.validation import check_labels, check_x

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

logger = logging.getLogger(__name__)

#: (x, y, shard): shard = (offset, global size) of this rank's slice of a global batch, None when not sharded.
Batch = tuple[torch.Tensor, torch.Tensor, Shard]
EpochCallback = Callable[[int, dict], None]
#: The per-batch step: (x, y, shard) -> [loss·n, clean correct, robust correct, n] on the device.
Step = Callable[[torch.Tensor, torch.Tensor, Shard], torch.Tensor]
#: ``validation_data`` checked: (x_val, labels as indices).
Validation = tuple[np.ndarray, np.ndarray | None]
#: The file in ``checkpoint_dir`` with the weights held-out selection keeps so far.
KEPT = "kept.pt"


@dataclass
class FitOptions:
    """The per-call settings of :meth:`WassersteinTRADESTrainer.fit` shared by the epoch loop."""

    nb_epochs: int
    batch_size: int
    scheduler: Any | None
    checkpoint_dir: Path | None
    resume: bool
    seed: int | None
    verbose: bool
    callback: EpochCallback | None
    #: Measures the held-out split (None: no validation).
    judge: HeldOutJudge | None = None
    #: Keep the best epoch on the held-out split (needs a judge).
    select_best: bool = False
    tolerances: Tolerances = Tolerances()


def checked_validation(classifier: PyTorchClassifier, data: object) -> Validation | None:
    """``validation_data`` as checked arrays ``(x_val, y_val)``, or None."""
    if data is None:
        return None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("`validation_data` must be a pair (x_val, y_val).")
    x_val = check_x(data[0], classifier.input_shape, classifier.clip_values, name="validation_data[0]")
    y_val = check_labels(data[1], x_val.shape[0], classifier.nb_classes, name="validation_data[1]")
    return x_val, y_val


class EpochLoop:
    """The epochs of one fit call of ``trainer``, with ``opts``; its state in ``state``, its ranks in ``sync``."""

    def __init__(self, trainer: TRADESSettings, step: Step, opts: FitOptions, state: RunState, sync: RankSync) -> None:
        self.trainer, self.step, self.opts, self.state, self.sync = trainer, step, opts, state, sync
        self.classifier = trainer.get_classifier()
        # Fine-tuning, freezing and checkpoints act on the network, not on a DDP wrapper.
        self.module = est.unwrap(self.classifier.model)

    def run(self, epoch_batches: Callable[[int], Iterable[Batch]], nb_batches: int) -> list[dict]:
        """Train the epochs not yet finished, ``nb_batches`` batches each; the history."""
        model = self.classifier.model
        trainable = [p.requires_grad for p in model.parameters()]
        try:
            first = self.begin()
            for epoch in range(first, self.opts.nb_epochs):
                self.finish_epoch(epoch, self.train_epoch(epoch_batches(epoch), nb_batches, epoch))
            self.keep_selected()
        finally:
            # Freezing is for this fit only; hand the model back as it came (and in eval mode, like ART).
            for param, flag in zip(model.parameters(), trainable):
                param.requires_grad_(flag)
            self.state.frozen = []
            self.state.kept_weights = None
            model.eval()
        return self.state.history

    def begin(self) -> int:
        """Seed, freeze, then resume from the checkpoint or apply the fine-tuning protocol; the first epoch."""
        opts = self.opts
        if opts.seed is not None:
            seed_everything(opts.seed)
        base = opts.seed if opts.seed is not None else self.sync.shared_seed(int(torch.randint(2**62, (1,))))
        self.state.generator = torch.Generator().manual_seed(base)
        self.state.frozen = self.freeze()
        path = None if opts.checkpoint_dir is None else opts.checkpoint_dir / LAST
        self.state.selection = None
        if opts.resume and path is not None and path.is_file():
            checkpoint = load_checkpoint(path)
            epoch, self.state.history = restore_training_state(checkpoint, self.module, self.classifier.optimizer,
                                                               opts.scheduler, self.state.generator)
            if checkpoint.get("selection") is not None:
                self.state.selection = Selection.from_dict(checkpoint["selection"])
            logger.info("Resumed from %s after epoch %d.", path, epoch)
            self.resume_selection(epoch)
            return epoch
        if opts.resume:
            logger.warning("No checkpoint at %s; training from the start.", path)
        self.state.history = []
        self.start_selection()  # the model as given, before any fine-tuning protocol touches it
        trainer = self.trainer
        apply_finetune(self.module, trainer.finetune, trainer.weight_noise, trainer.last_layer)
        if trainer.finetune is not None:
            self.sync.broadcast_from_first_rank(self.module)
        return 0

    def freeze(self) -> list[tuple[str, nn.Module]]:
        """Apply ``freeze_except_last`` to the network; the frozen blocks."""
        k = self.trainer.freeze_except_last
        if k is None:
            return []
        before = [p.requires_grad for p in self.module.parameters()]
        frozen = freeze_except_last(self.module, k)
        newly = any(was and not p.requires_grad for was, p in zip(before, self.module.parameters()))
        model = self.classifier.model
        if newly and est.is_ddp(model) and not model.find_unused_parameters:
            # DDP would wait for the gradients of parameters it saw trainable when built ("Expected to have finished
            # reduction in the prior iteration") at the next step.
            raise ValueError("`freeze_except_last` with a DistributedDataParallel model: freeze the blocks before "
                             "wrapping (art_wdat.finetune.freeze_except_last(module, k)), or build the wrapper with "
                             "find_unused_parameters=True.")
        return frozen

    def train_epoch(self, batches: Iterable[Batch], nb_batches: int, epoch: int) -> dict:
        """One pass of the per-batch step over ``batches``; the epoch's record (one host sync without a bar)."""
        start = time.perf_counter()
        totals = torch.zeros(4, dtype=torch.float64, device=est.device_of(self.classifier))
        # One bar per epoch, on a terminal only (a log file gets the epoch's line instead of redraws).
        bar = tqdm(batches, total=nb_batches, desc=f"epoch {epoch + 1}/{self.opts.nb_epochs}",
                   disable=not self.opts.verbose or None, dynamic_ncols=True)
        every = max(1, nb_batches // 10)  # the bar's numbers cost a host sync: ten per epoch, not one per step
        for i, (x_b, y_b, shard) in enumerate(bar):
            totals += self.step(x_b, y_b, shard)
            if not bar.disable and (i + 1) % every == 0:
                bar.set_postfix_str(running_line(totals.tolist()), refresh=False)
        bar.close()
        totals = self.sync.reducer.sum(totals)
        loss, clean, robust, n = totals.tolist()  # the one host sync of the epoch
        n = max(n, 1.0)
        return {"epoch": epoch + 1, "loss": loss / n, "train_clean_acc": clean / n, "train_robust_acc": robust / n,
                "time_s": time.perf_counter() - start}

    def finish_epoch(self, epoch: int, record: dict) -> None:
        """Scheduler, validation and selection, logging, checkpoint and callback after one epoch."""
        opts = self.opts
        step_scheduler(opts.scheduler, record["loss"])
        if opts.judge is not None:
            record.update(self.validate(epoch + 1))
        self.state.history.append(record)
        logger.info("W-TRADES epoch %d/%d: %s", epoch + 1, opts.nb_epochs,
                    ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch" and isinstance(v, float)))
        if opts.checkpoint_dir is not None and self.sync.world()[1] == 0:
            state = training_state(self.module, self.classifier.optimizer, opts.scheduler, epoch + 1,
                                   self.state.history, self.state.generator)
            if self.state.selection is not None:
                state["selection"] = self.state.selection.to_dict()
            save_checkpoint(state, opts.checkpoint_dir / LAST)
        if opts.callback is not None:
            opts.callback(epoch, record)

    # -- held-out validation and selection -------------------------------------------------------------------
    def validate(self, epoch: int) -> dict:
        """Measure the held-out split now; offer the epoch to the selection (keeping its weights if it wins)."""
        judge = self.opts.judge
        if judge is None:
            return {}
        record = judge.measure()
        selection = self.state.selection
        won = selection is not None and selection.offer(epoch, record)
        if won and self.opts.select_best:
            self.keep_weights(epoch)
        start = None if selection is None else selection.start
        self.say(f"epoch {epoch}/{self.opts.nb_epochs} held-out: {format_record(record, start)}"
                 + (" (kept)" if won and self.opts.select_best else ""))
        return record

    def start_selection(self) -> None:
        """Measure the start model on the held-out split; with ``select_best`` its weights are the first kept."""
        if self.opts.judge is None:
            return
        self.state.selection = Selection(start=self.opts.judge.measure(), tolerances=self.opts.tolerances)
        self.say(f"start held-out: {format_record(self.state.selection.start)}")
        if self.opts.select_best:
            self.keep_weights(0)

    def resume_selection(self, epoch: int) -> None:
        """After a resume: the kept weights from ``kept.pt``; without them, selection starts again from here."""
        opts = self.opts
        if opts.judge is None:
            self.state.selection = None
            return
        path = None if opts.checkpoint_dir is None else opts.checkpoint_dir / KEPT
        if self.state.selection is not None and (not opts.select_best or (path is not None and path.is_file())):
            if opts.select_best and path is not None:
                self.state.kept_weights = load_checkpoint(path)["model"]
            return
        logger.warning("No held-out selection to resume after epoch %d; the resumed weights are the new start.", epoch)
        self.start_selection()

    def keep_weights(self, epoch: int) -> None:
        """Hold the current weights as the kept ones (CPU copy; also ``kept.pt`` beside the checkpoint)."""
        self.state.kept_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}
        if self.opts.checkpoint_dir is not None and self.sync.world()[1] == 0:
            save_checkpoint({"epoch": epoch, "model": self.state.kept_weights}, self.opts.checkpoint_dir / KEPT)

    def keep_selected(self) -> None:
        """Load the kept weights into the model at the end of the call, and say which epoch they are."""
        selection = self.state.selection
        if selection is None or not self.opts.select_best or self.state.kept_weights is None:
            return
        self.module.load_state_dict(self.state.kept_weights)  # copies the values into the module's own tensors
        logger.info(selection.summary())

    def say(self, line: str) -> None:
        """A line for the user: above the progress bar when verbose, else to the log."""
        if self.opts.verbose and self.sync.world()[1] == 0:
            tqdm.write(line)
        else:
            logger.info(line)


def running_line(totals: list[float]) -> str:
    """The progress bar's numbers: mean loss and the running clean and robust training accuracies."""
    loss, clean, robust, n = totals
    n = max(n, 1.0)
    return f"loss {loss / n:.4f}, clean {clean / n:.3f}, robust {robust / n:.3f}"


def start_generator_epoch(generator: Any, epoch: int) -> None:
    """``set_epoch(epoch)`` on a DataLoader-backed generator's (batch) sampler, and a fresh pass over the loader.

    ART's ``PyTorchDataGenerator`` makes its next DataLoader iterator only when the current one runs out (the first
    at construction), and a loader with workers draws the sampler's indices when its iterator is made: without a
    fresh iterator the new epoch's order would not take effect at once (resumed runs, workers, or epochs that do not
    end where the loader does).
    """
    from art.data_generators import PyTorchDataGenerator

    loader = getattr(generator, "iterator", None)
    samplers = [getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)]
    with_epoch = [s for s in samplers if s is not None and callable(getattr(s, "set_epoch", None))]
    if not with_epoch or loader is None:
        return
    for sampler in with_epoch:
        sampler.set_epoch(epoch)
    if isinstance(generator, PyTorchDataGenerator):
        generator._current = iter(loader)  # ART's own attribute: the iterator get_batch draws from


def step_scheduler(scheduler: Any | None, loss: float) -> None:
    """Step an LR scheduler once per epoch (``ReduceLROnPlateau`` on the epoch's loss)."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(loss)
    else:
        scheduler.step()
