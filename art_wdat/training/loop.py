"""The epoch lifecycle of one ``fit`` call: seed, freeze, resume or fine-tune, train, validate, select, checkpoint.

:class:`EpochLoop` runs the epochs of :meth:`WassersteinTRADESTrainer.fit` and ``fit_generator`` alike: each gives
it the batches of an epoch, and every batch goes through the trainer's one per-batch step (``step``). What outlives
a call (the history, the checkpointed shuffling generator, the held-out selection and, during the call, the frozen
blocks) is the trainer's :class:`~art_wdat.training.settings.RunState`. Statistics stay on the device during an
epoch and are read back once at its end (and, with progress bars, every tenth of an epoch for the bar's numbers).

With a validation split, the start and every ``val_every``-th epoch (and the last) are measured on it
(:mod:`art_wdat.training.judge`) and, with ``select_best``, the model ends the call with the weights of the best
epoch that stays within the tolerances, or the start's: never a worse model on the held-out split. The checkpoint
files and the order they are written in are :mod:`art_wdat.training.rundir`'s.

Whatever escapes a call (an exception, ``KeyboardInterrupt``), the model is left with the weights the call would
have ended with had it stopped there: the kept ones with ``select_best``, else those of the last finished epoch (or
the start's), never half an epoch.

Imports run one way: settings, then this loop, then the trainer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from art_wdat.attacks import estimator as est
from art_wdat.training.checkpoint import seed_everything
from art_wdat.training.finetune import apply_finetune, freeze_except_last
from art_wdat.training.keeping import RunKeeper
from art_wdat.training.options import EpochCallback, FitOptions
from art_wdat.training.settings import RunState, TRADESSettings
from art_wdat.training.sync import RankSync, Shard

logger = logging.getLogger(__name__)

__all__ = ["Batch", "EpochCallback", "EpochLoop", "Step", "running_line", "start_generator_epoch", "step_scheduler"]

#: (x, y, shard): shard = (offset, global size) of this rank's slice of a global batch, None when not sharded.
Batch = tuple[torch.Tensor, torch.Tensor, Shard]
#: The per-batch step: (x, y, shard) -> [loss·n, clean correct, robust correct, n] on the device.
Step = Callable[[torch.Tensor, torch.Tensor, Shard], torch.Tensor]


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
        keeper = RunKeeper(self.opts, self.state, self.module, self.classifier.optimizer, self.say,
                           writer=self.sync.world()[1] == 0)
        try:
            first = self.begin(keeper)
            for epoch in range(first, self.opts.nb_epochs):
                record = self.train_epoch(epoch_batches(epoch), nb_batches, epoch)
                step_scheduler(self.opts.scheduler, record["loss"])
                keeper.end_epoch(epoch + 1, record, self.state.generator)
                if self.opts.callback is not None:
                    self.opts.callback(epoch, record)
            keeper.keep_selected()
        except BaseException:
            keeper.restore_after_failure()
            raise
        finally:
            # Freezing is for this fit only; hand the model back as it came (and in eval mode, like ART).
            for param, flag in zip(model.parameters(), trainable):
                param.requires_grad_(flag)
            self.state.frozen = []
            self.state.kept_weights = None
            model.eval()
        return self.state.history

    def begin(self, keeper: RunKeeper) -> int:
        """Seed, freeze, then resume from the checkpoint or start afresh (and apply the fine-tuning protocol); the
        first epoch."""
        opts = self.opts
        if opts.seed is not None:
            seed_everything(opts.seed)
        base = opts.seed if opts.seed is not None else self.sync.shared_seed(int(torch.randint(2**62, (1,))))
        self.state.generator = torch.Generator().manual_seed(base)
        self.state.frozen = self.freeze()
        self.state.selection = None
        checkpoint = keeper.checkpoint()
        if checkpoint is not None:
            return keeper.resume(checkpoint, self.state.generator)
        keeper.fresh()
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
