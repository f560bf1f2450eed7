"""The epoch lifecycle of one ``fit`` call: seed, freeze, resume or fine-tune, train, record, checkpoint.

:class:`EpochLoop` runs the epochs of :meth:`WassersteinTRADESTrainer.fit` and ``fit_generator`` alike: each gives
it the batches of an epoch, and every batch goes through the trainer's one per-batch step
(:meth:`~art_wdat.training.trainer.WassersteinTRADESTrainer.train_step`). What outlives a call (the history, the
checkpointed shuffling generator and, during the call, the frozen blocks) is the trainer's :class:`RunState`.
Statistics stay on the device during an epoch and are read back once at its end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
from art_wdat.training.sync import RankSync, Shard
from art_wdat.validation import check_labels, check_x

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

    from art_wdat.training.trainer import WassersteinTRADESTrainer

logger = logging.getLogger(__name__)

#: (x, y, shard): shard = (offset, global size) of this rank's slice of a global batch, None when not sharded.
Batch = tuple[torch.Tensor, torch.Tensor, Shard]
EpochCallback = Callable[[int, dict], None]
#: ``validation_data`` checked: (x_val, labels as indices).
Validation = tuple[np.ndarray, np.ndarray | None]


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
    validation: Validation | None


@dataclass
class RunState:
    """What the epoch loop keeps on the trainer between (and during) calls."""

    #: One dict per finished epoch: loss, train_clean_acc, train_robust_acc, [val_clean_acc, val_wpgd_acc], ...
    history: list[dict] = field(default_factory=list)
    #: Draws fit's shuffles; checkpointed, so that a resumed run shuffles as a straight one.
    generator: torch.Generator = field(default_factory=torch.Generator)
    #: The blocks frozen by ``freeze_except_last`` during a call (kept in eval mode while training).
    frozen: list[tuple[str, nn.Module]] = field(default_factory=list)


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

    def __init__(self, trainer: WassersteinTRADESTrainer, opts: FitOptions, state: RunState, sync: RankSync) -> None:
        self.trainer, self.opts, self.state, self.sync = trainer, opts, state, sync
        self.classifier = trainer.get_classifier()
        # Fine-tuning, freezing and checkpoints act on the network, not on a DDP wrapper.
        self.module = est.unwrap(self.classifier.model)

    def run(self, epoch_batches: Callable[[int], Iterable[Batch]], nb_batches: int) -> list[dict]:
        """Train the epochs not yet finished, ``nb_batches`` batches each; the history."""
        model = self.classifier.model
        trainable = [p.requires_grad for p in model.parameters()]
        try:
            epochs = range(self.begin(), self.opts.nb_epochs)
            for epoch in tqdm(epochs, desc="W-TRADES epochs", disable=not self.opts.verbose):
                self.finish_epoch(epoch, self.train_epoch(epoch_batches(epoch), nb_batches, epoch))
        finally:
            # Freezing is for this fit only; hand the model back as it came (and in eval mode, like ART).
            for param, flag in zip(model.parameters(), trainable):
                param.requires_grad_(flag)
            self.state.frozen = []
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
        if opts.resume and path is not None and path.is_file():
            epoch, self.state.history = restore_training_state(load_checkpoint(path), self.module,
                                                               self.classifier.optimizer, opts.scheduler,
                                                               self.state.generator)
            logger.info("Resumed from %s after epoch %d.", path, epoch)
            return epoch
        if opts.resume:
            logger.warning("No checkpoint at %s; training from the start.", path)
        self.state.history = []
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
        """One pass of the per-batch step over ``batches``; the epoch's record (one host sync)."""
        start = time.perf_counter()
        totals = torch.zeros(4, dtype=torch.float64, device=est.device_of(self.classifier))
        for x_b, y_b, shard in tqdm(batches, total=nb_batches, desc=f"epoch {epoch + 1}", leave=False,
                                    disable=not self.opts.verbose):
            totals += self.trainer.train_step(x_b, y_b, shard)
        totals = self.sync.reducer.sum(totals)
        loss, clean, robust, n = totals.tolist()  # the one host sync of the epoch
        n = max(n, 1.0)
        return {"epoch": epoch + 1, "loss": loss / n, "train_clean_acc": clean / n, "train_robust_acc": robust / n,
                "time_s": time.perf_counter() - start}

    def finish_epoch(self, epoch: int, record: dict) -> None:
        """Scheduler, validation, logging, checkpoint and callback after one epoch."""
        opts = self.opts
        step_scheduler(opts.scheduler, record["loss"])
        if opts.validation is not None:
            record.update(self.trainer.evaluate(*opts.validation, batch_size=opts.batch_size))
        self.state.history.append(record)
        logger.info("W-TRADES epoch %d/%d: %s", epoch + 1, opts.nb_epochs,
                    ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        if opts.checkpoint_dir is not None and self.sync.world()[1] == 0:
            state = training_state(self.module, self.classifier.optimizer, opts.scheduler, epoch + 1,
                                   self.state.history, self.state.generator)
            save_checkpoint(state, opts.checkpoint_dir / LAST)
        if opts.callback is not None:
            opts.callback(epoch, record)


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
