"""``WassersteinTRADESTrainer``: W-TRADES distributional adversarial training and fine-tuning as an ART trainer.

Per mini-batch B (:doc:`/maths`)::

    loss = (1/|B|) Σ CE(f(x_i), y_i)  +  β · (1/|B|) Σ KL(f(x_i) ‖ f(x'_i)),
    x' ≈ argmax_{C(x', x) ≤ eps} (1/|B|) Σ KL(f(x_i) ‖ f(x'_i))

The mini-batch is the distribution: its inputs share one W_p budget. The inner maximisation is the
package's W-PGD, W-PGD-Budget or knapsack-informed PGD on the KL loss (or ReKL, ReDLR), in eval mode, from
x + 0.001·N(0, I); the outer step is in train mode, and, as in TRADES, the gradient flows through both the clean
and the adversarial prediction of the KL term. With ``p = inf`` this is TRADES (Zhang et al., 2019) step for step.

Under ``torch.distributed`` the mini-batch is the global batch, the micro-batches of all ranks at one step
together: the inner maximisation shares one budget across ranks (:mod:`art_wdat.core.reduce`), and the parameters
get the gradient of the global batch's mean loss, from the trainer's own all-reduce for a plain module or from
``DistributedDataParallel`` for a wrapped one (whose forward the inner maximisation bypasses).

The defaults are the configuration chosen by the fine-tuning study on two real robust CIFAR-10 models
(``docs/experiments/wtrades.md``): the knapsack-informed inner solver (``method="knapsack"``: the batch's budget goes
to the inputs cheapest to flip, by first-order flip costs), the KL as inner loss, and the joint objective, which adds
a pointwise TRADES term β_pt·KL at the ℓ-ball of radius ``pointwise_eps`` (default ``eps``) with ``pointwise_beta=6``.
That beat a pointwise-TRADES fine-tune with the same β on W-AutoAttack accuracy, but pointwise TRADES with the same
total KL weight (β + β_pt) did as well: set ``pointwise_beta=0`` for the W-TRADES loss alone. Everything of a batch
stays on the estimator's device; statistics are read back once per epoch.

The trainer is put together from one module per job: its settings and their checks
(:mod:`art_wdat.training.settings`), the objective of one batch (:mod:`art_wdat.training.objective`), the ranks'
collectives (:mod:`art_wdat.training.sync`) and the epoch lifecycle (:mod:`art_wdat.training.loop`); here are the
per-batch step that ``fit`` and ``fit_generator`` share, the two loops' batches, and validation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from art_wdat.training.judge import HeldOutJudge, HeldOutPlan
from art_wdat.training.loop import Batch, EpochLoop, start_generator_epoch
from art_wdat.training.objective import LossTerms, WTradesObjective
from art_wdat.training.options import (
    EpochCallback,
    FitOptions,
    call_sizes,
    fit_options,
    held_out_judge,
    held_out_plan,
)
from art_wdat.training.recipe import FinetuneRecipe
from art_wdat.training.selection import Selection, Tolerances
from art_wdat.training.settings import TRADESSettings
from art_wdat.training.sync import Shard
from art_wdat.validation import check_labels, check_x

if TYPE_CHECKING:
    from art.data_generators import DataGenerator

logger = logging.getLogger(__name__)


class WassersteinTRADESTrainer(TRADESSettings):
    """W-TRADES: TRADES against a Wasserstein distributional threat (Bai, He, Jiang, Obłój, 2025).

    Trains (or fine-tunes) an ART ``PyTorchClassifier`` with its own optimizer. ``p = inf`` gives ordinary
    TRADES; ``p < inf`` lets the inner attack spend the budget unevenly over each mini-batch, which also
    covers the pointwise ball of radius ``eps``.

    | Paper link: https://arxiv.org/abs/2502.09352 (TRADES: https://proceedings.mlr.press/v97/zhang19p.html)
    """

    @property
    def history(self) -> list[dict]:
        """One dict per finished epoch: loss, train_clean_acc, train_robust_acc, time_s and, on the epochs the
        validation split is measured after, val_clean_acc, val_min_norm_acc (or val_autoattack_acc with
        ``val_pointwise="autoattack"``), val_wauto_acc (at eps) and val_wauto_acc@<budget>."""
        return self._state.history

    @history.setter
    def history(self, value: list[dict]) -> None:
        self._state.history = value

    @property
    def selection(self) -> Selection | None:
        """The held-out selection of the last ``fit`` with ``validation_data``: the start's and each epoch's
        validation record and the epoch kept (0: the start weights). None without a validation split."""
        return self._state.selection

    @property
    def _generator(self) -> torch.Generator:
        """The shuffling generator of :meth:`fit` (checkpointed with the model)."""
        return self._state.generator

    # -- the loss of one batch ------------------------------------------------------------------------------
    @property
    def objective(self) -> WTradesObjective:
        """The W-TRADES objective of one batch, from the current settings (an attribute changed takes effect)."""
        return WTradesObjective(
            classifier=self._classifier, threat=self.threat, forward=self._forward, set_train_mode=self._set_train_mode,
            reducer=self._sync.reducer, beta=self.beta, kl_start_std=self.kl_start_std, inner_loss=self.inner_loss,
            sensitivity_weight=self.sensitivity_weight, outer_loss=self.outer_loss, pointwise=self.pointwise_threat,
            pointwise_beta=self.pointwise_beta, cheapness_weight=self.effective_cheapness_weight)

    def _set_train_mode(self) -> None:
        """Train mode for the outer step, except frozen blocks (their batch-norm statistics stay fixed)."""
        self._classifier.model.train()
        for _, block in self._state.frozen:
            block.eval()

    def inner_maximize(self, x: torch.Tensor, y: torch.Tensor | None = None, shard: Shard = None) -> torch.Tensor:
        """The inner maximiser x' of the inner loss over the W_p ball around the batch ``x`` (model in eval mode).

        :param x: A mini-batch on the estimator's device; it is one distribution with one budget.
        :param y: Its labels (needed by ``inner_loss`` "rekl" and "redlr" and by ``method="knapsack"``).
        :param shard: (offset, global size) when ``x`` is this rank's slice of a global batch.
        :return: x' with C(x', x) ≤ eps inside the clip box, detached.
        """
        return self.objective.inner_maximize(x, y, shard)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, shard: Shard = None) -> LossTerms:
        """The W-TRADES loss of one batch in train mode, differentiable in the parameters.

        :param x: Inputs on the estimator's device.
        :param y: Class indices (int64) on the same device.
        """
        return self.objective.loss_terms(x, y, shard)

    def batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, x_adv)`` for one batch: CE(f(x), y) + β·KL(f(x) ‖ f(x')) and the inner maximiser x'."""
        terms = self.loss_terms(x, y)
        return terms.loss, terms.x_adv

    def train_step(self, x: torch.Tensor, y: torch.Tensor, shard: Shard = None) -> torch.Tensor:
        """One optimizer step on a batch; returns [loss·n, clean correct, robust correct, n] on the device.

        The per-batch step of both :meth:`fit` and :meth:`fit_generator` (ART's ``_batch_process``).

        :param shard: (offset, global size) when ``x`` is this rank's slice of a global batch.
        """
        terms = self.loss_terms(x, y, shard)
        optimizer = self._classifier.optimizer
        optimizer.zero_grad(set_to_none=True)
        self._sync.backward(terms.loss, x.shape[0], shard, self._classifier.model)
        optimizer.step()
        with torch.no_grad():
            n = torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)
            clean = (terms.logits.argmax(dim=1) == y).sum().double()
            robust = (terms.logits_adv.argmax(dim=1) == y).sum().double()
            return torch.stack([terms.loss.detach().double() * n, clean, robust, n])

    # -- public loops ---------------------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, validation_data: tuple[np.ndarray, np.ndarray] | None = None,
            batch_size: int | None = None, nb_epochs: int | None = None, scheduler: Any | None = None, *,
            recipe: FinetuneRecipe | None = None, select_best: bool | None = None,
            tolerances: Tolerances | None = None, checkpoint_dir: str | Path | None = None, resume: bool = False,
            seed: int | None = None, verbose: bool = True, callback: EpochCallback | None = None,
            val_every: int = 1, **kwargs: Any) -> list[dict]:
        """Train with W-TRADES on ``(x, y)``, a mini-batch (one shared budget) at a time.

        Under ``torch.distributed`` (see ``process_group``) every rank passes the same ``x``, ``y`` and ``seed``; each
        global batch of ``batch_size × world`` inputs (one shuffle, drawn alike on every rank) is split into
        near-equal slices, one per rank, and trained as one process would train it, with a plain module or a DDP
        model alike.

        :param x: Training inputs ``(N, *input_shape)`` inside the clip box. Not modified.
        :param y: Labels as indices (N,) or one-hot (N, nb_classes). Not modified.
        :param validation_data: ``(x_val, y_val)``, a held-out split never trained on. The start model and every
                                ``val_every``-th epoch are measured on it (:mod:`art_wdat.training.judge`): clean
                                accuracy, W-AutoAttack at eps/2, eps and 2·eps (those within the input box) with
                                order ``select_p`` (default ``p``) and the ground norm, and pointwise accuracy at ε
                                (``pointwise_eps``, default ``eps``) from W-AutoAttack's minimum-norm flip costs (or,
                                with ``val_pointwise="autoattack"``, the ``autoattack`` package's APGD-CE + APGD-T).
                                The records are in :attr:`history` and :attr:`selection`.
        :param batch_size: Mini-batch size: the distribution each inner maximisation attacks (per rank under
                           ``torch.distributed``: the distribution is then the global batch). Default: the recipe's.
        :param nb_epochs: Total number of epochs (a resumed run counts the finished ones). Default: the recipe's.
        :param scheduler: A torch LR scheduler of the classifier's optimizer, stepped once per epoch (not with
                          ``recipe``, which brings its own).
        :param recipe: A :class:`~art_wdat.training.recipe.FinetuneRecipe` (e.g. ``DEFAULT_RECIPE``, the schedule of
                       ``art-wdat finetune``): the classifier's optimizer is replaced by the recipe's, over the
                       model's trainable parameters, with its learning-rate decay, and ``max_iter`` becomes the
                       recipe's inner steps; ``batch_size`` and ``nb_epochs``, when not given, are the recipe's.
                       None: the classifier's own optimizer, ``scheduler`` and ``max_iter``.
        :param select_best: With ``validation_data`` (default True when it is given): end with the weights of the
                            epoch with the highest W-AutoAttack accuracy at eps on the held-out split among those
                            whose clean and pointwise accuracy are at most ``tolerances`` below the start's, or the
                            start weights if none beats the start. False: the last epoch's weights (the selection
                            still records the epoch it would keep, and ``kept.pt`` its weights).
                            Whatever it is, an exception escaping ``fit`` (``KeyboardInterrupt`` included) leaves
                            the weights the call would have ended with had it stopped there: the kept ones, or the
                            last finished epoch's (the start's before any), never half an epoch.
        :param tolerances: :class:`~art_wdat.training.selection.Tolerances` (default 1.5 points clean, 1 point
                           pointwise). On a resume, None takes the checkpoint's; others are refused (ValueError),
                           since the epochs before were judged with the checkpoint's.
        :param checkpoint_dir: Save ``last.pt`` there (atomically) after each epoch and, with ``validation_data``,
                               ``kept.pt``, the weights held-out selection keeps so far (written after the
                               ``last.pt`` that names them). Both record the run they belong to (a run id drawn at
                               a fresh start); a fresh start removes the files an earlier run left there.
        :param resume: Continue from ``checkpoint_dir/last.pt`` (model, optimizer, scheduler, history, selection, RNG
                       states); the fine-tuning protocol is not applied again. Starts afresh, with a warning, if
                       absent. Refused (ValueError) if ``kept.pt`` does not belong with ``last.pt`` (another run, or
                       another epoch than the one its selection keeps), or if the held-out measurement now differs
                       from the one its records were made with (budget, ``select_p``, norm, ``pointwise_eps``,
                       ``val_pointwise``, ``eval_max_iter`` or the split itself). ``select_best`` may change.
        :param seed: Seed torch, numpy and python ``random`` and the shuffling generator at the start.
        :param verbose: One progress bar per epoch (loss and running training accuracies) and one line of held-out
                        numbers after each; bars only on a terminal.
        :param callback: Called as ``callback(epoch, record)`` after each epoch (and its checkpoint).
        :param val_every: Measure the held-out split after every ``val_every``-th epoch and after the last (the start
                          is always measured); only measured epochs can be kept.
        :return: :attr:`history`.
        """
        batch_size, nb_epochs = call_sizes(recipe, batch_size, nb_epochs, scheduler)
        opts = fit_options(self, nb_epochs, batch_size, scheduler, checkpoint_dir, resume, seed, verbose, callback,
                           validation_data, select_best, tolerances, kwargs, val_every)
        x = check_x(x, self._classifier.input_shape, self._classifier.clip_values)
        labels = check_labels(y, x.shape[0], self._classifier.nb_classes)
        if labels is None:
            raise ValueError("`y` is required.")
        self._install_recipe(recipe, opts)
        n = x.shape[0]
        world, rank = self._sync.world()
        step = batch_size * world  # the global batch: one distribution, one budget

        def epoch_batches(_epoch: int) -> Iterator[Batch]:
            # The permutation comes from a checkpointed generator, so a resumed run shuffles as a straight one; every
            # rank draws the same one and takes its slice of each global batch.
            perm = torch.randperm(n, generator=self._generator).numpy()
            for start in range(0, n, step):
                glob = perm[start:start + step]
                parts = np.array_split(glob, world)
                idx, offset = parts[rank], sum(len(part) for part in parts[:rank])
                yield self._batch(x[idx], labels[idx], (offset, len(glob)) if world > 1 else None)

        return self._train(epoch_batches, math.ceil(n / step), opts)

    def fit_generator(self, generator: DataGenerator, nb_epochs: int | None = None,
                      validation_data: tuple | None = None, scheduler: Any | None = None, *,
                      recipe: FinetuneRecipe | None = None, select_best: bool | None = None,
                      tolerances: Tolerances | None = None, checkpoint_dir: str | Path | None = None,
                      resume: bool = False, seed: int | None = None, verbose: bool = True,
                      callback: EpochCallback | None = None, val_every: int = 1, **kwargs: Any) -> list[dict]:
        """Train with W-TRADES on the batches of an ART ``DataGenerator`` (each batch has its own budget).

        An epoch is ``ceil(generator.size / generator.batch_size)`` batches. Shuffling is the generator's; resuming
        restores the global RNG states (numpy's drives ``NumpyDataGenerator``) but not the generator's position.
        If the generator wraps a ``DataLoader`` whose sampler (or batch sampler) has ``set_epoch`` (a
        ``DistributedSampler``), each epoch calls ``set_epoch(epoch)`` and starts a fresh pass over the loader, so
        that epoch's order takes effect (ART's ``PyTorchDataGenerator`` would keep the iterator it already made).

        Under ``torch.distributed`` (see ``process_group``) each rank's generator yields that rank's own
        micro-batches, e.g. ``PyTorchDataGenerator(DataLoader(dataset, batch_size=b,
        sampler=DistributedSampler(dataset)), size=len(sampler), batch_size=b)``; the micro-batches of all ranks at
        one step form the global batch, the distribution of the inner maximisation (one budget across ranks) and of
        the gradient (weighted by micro-batch size, from one all-reduce of the sizes per step). Every rank must run
        the same number of batches per epoch (``DistributedSampler`` pads or drops to equal shares; checked once per
        call). The KL start noise is drawn for the whole global batch from each rank's torch RNG and sliced, as in
        :meth:`fit`: with the same ``seed`` on every rank the ranks start where one process with the global batch
        would; without one, each rank's slice is still independent Gaussian noise.

        :param generator: An ART ``DataGenerator`` that knows its ``size``; its batch size is the mini-batch's (a
                          recipe's ``batch_size`` does not apply).

        Other parameters as in :meth:`fit`.
        """
        from art.data_generators import DataGenerator

        if not isinstance(generator, DataGenerator):
            raise TypeError("`generator` must be an art.data_generators.DataGenerator, "
                            f"got {type(generator).__name__}.")
        if generator.size is None:
            raise ValueError("`generator` must know its size (generator.size is None).")
        nb_batches = getattr(generator, "batches_per_epoch", None) or math.ceil(generator.size / generator.batch_size)
        _, nb_epochs = call_sizes(recipe, generator.batch_size, nb_epochs, scheduler)
        opts = fit_options(self, nb_epochs, generator.batch_size, scheduler, checkpoint_dir, resume, seed, verbose,
                             callback, validation_data, select_best, tolerances, kwargs, val_every)
        sync = self._sync
        sync.check_same_batch_count(nb_batches)
        self._install_recipe(recipe, opts)

        def epoch_batches(epoch: int) -> Iterator[Batch]:
            start_generator_epoch(generator, epoch)
            for _ in range(nb_batches):
                xb, yb = generator.get_batch()[:2]
                xb = check_x(np.asarray(xb), self._classifier.input_shape, self._classifier.clip_values)
                yb = check_labels(np.asarray(yb), xb.shape[0], self._classifier.nb_classes)
                yield self._batch(xb, yb, sync.shard_of(xb.shape[0]))

        return self._train(epoch_batches, nb_batches, opts)

    def _batch(self, x: np.ndarray, y: np.ndarray | None, shard: Shard) -> Batch:
        """One batch of either loop on the device, as the per-batch step takes it."""
        x_t = torch.from_numpy(np.array(x, dtype=np.float32, copy=True)).to(self._device)
        return x_t, torch.from_numpy(np.asarray(y, dtype=np.int64)).to(self._device), shard

    def _install_recipe(self, recipe: FinetuneRecipe | None, opts: FitOptions) -> None:
        """With a recipe, after every check: its optimizer on the classifier, its decay over ``opts.nb_epochs`` as
        the call's scheduler, and its inner steps."""
        if recipe is None:
            return
        # The recipe's decay spans the epochs actually run.
        recipe = replace(recipe, epochs=opts.nb_epochs)
        optimizer = recipe.build_optimizer([p for p in self._classifier.model.parameters() if p.requires_grad])
        self._classifier._optimizer = optimizer  # ART's attribute behind `optimizer`: what the trainer steps
        self.max_iter = recipe.max_iter
        opts.scheduler = recipe.build_scheduler(optimizer)

    def _train(self, epoch_batches: Callable[[int], Iterable[Batch]], nb_batches: int,
               opts: FitOptions) -> list[dict]:
        return EpochLoop(self, self.train_step, opts, self._state, self._sync).run(epoch_batches, nb_batches)

    def held_out_plan(self, batch_size: int = 256) -> HeldOutPlan:
        """How :meth:`evaluate` and ``fit``'s validation attack a held-out split: W-AutoAttack at eps/2, eps and
        2·eps with order ``select_p`` (default ``p``), the pointwise row at ε (``pointwise_eps``, default ``eps``) by
        ``val_pointwise``, ``eval_max_iter`` iterations, seed 0."""
        return held_out_plan(self, batch_size)

    def held_out_judge(self, x: np.ndarray, y: np.ndarray | None, batch_size: int = 256) -> HeldOutJudge:
        """The measurements of ``fit``'s validation on ``(x, y)``."""
        return held_out_judge(self, x, y, batch_size)

    def evaluate(self, x: np.ndarray, y: np.ndarray | None, batch_size: int = 256) -> dict:
        """Clean, pointwise (at ε) and W-AutoAttack (at eps/2, eps, 2·eps, order ``select_p``, the ground norm)
        accuracy on ``(x, y)``: what ``fit`` measures on its validation split."""
        x = check_x(x, self._classifier.input_shape, self._classifier.clip_values)
        return self.held_out_judge(x, y, batch_size).measure()
