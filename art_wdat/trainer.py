"""``WassersteinTRADESTrainer``: W-TRADES distributional adversarial training and fine-tuning as an ART trainer.

Per mini-batch B (METHOD.md §7)::

    loss = (1/|B|) Σ CE(f(x_i), y_i)  +  β · (1/|B|) Σ KL(f(x_i) ‖ f(x'_i)),
    x' ≈ argmax_{C(x', x) ≤ eps} (1/|B|) Σ KL(f(x_i) ‖ f(x'_i))

The mini-batch is the distribution: its inputs share one W_p budget. The inner maximisation is the
package's W-PGD (or W-PGD-Budget) on the KL loss, in eval mode, from x + 0.001·N(0, I); the outer step
is in train mode, and, as in TRADES, the gradient flows through both the clean and the adversarial
prediction of the KL term. With ``p = inf`` this is TRADES (Zhang et al., 2019) step for step.

Under ``torch.distributed`` the mini-batch is the global batch, the micro-batches of all ranks at one step
together: the inner maximisation shares one budget across ranks (:mod:`art_wdat.reduce`), and the parameters get
the gradient of the global batch's mean loss, from the trainer's own all-reduce for a plain module or from
``DistributedDataParallel`` for a wrapped one (whose forward the inner maximisation bypasses).

By default (``inner_loss="rekl"``) the inner maximisation ascends the KL only on inputs that x' still
classifies correctly, so that the shared budget is not spent on inputs already lost (the idea of ReDLR);
on the tests' digits benchmark that is what makes W-TRADES beat pointwise TRADES on W-PGD accuracy, while
the plain KL does not (see ``tests/test_finetune.py``). Everything of a batch stays on the estimator's
device; statistics are read back once per epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from art.defences.trainer.trainer import Trainer
from tqdm.auto import tqdm

from art_wdat import estimator as est
from art_wdat.attack import EPS_STEP_RATIO, WassersteinDistributionalAttack, parse_norm
from art_wdat.checkpoint import (
    LAST,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    seed_everything,
    training_state,
)
from art_wdat.engine import METHODS, AttackConfig, run_attack
from art_wdat.finetune import FINETUNE_MODES, apply_finetune, find_last_linear, freeze_except_last
from art_wdat.inputs import check_int, check_labels, check_number, check_x
from art_wdat.losses import kl_divergence
from art_wdat.reduce import default_reducer
from art_wdat.threat import WassersteinBall

logger = logging.getLogger(__name__)

#: (x, y, shard): shard = (offset, global size) of this rank's slice of a global batch, None when not sharded.
Batch = tuple[torch.Tensor, torch.Tensor, "tuple[int, int] | None"]
EpochCallback = Callable[[int, dict], None]
INNER_LOSSES = ("kl", "rekl")


class LossTerms(NamedTuple):
    """One batch's W-TRADES loss and its parts (all on the device)."""

    loss: torch.Tensor
    x_adv: torch.Tensor
    logits: torch.Tensor
    logits_adv: torch.Tensor


@dataclass
class _FitOptions:
    """The per-call settings of :meth:`WassersteinTRADESTrainer.fit` shared by the epoch loop."""

    nb_epochs: int
    batch_size: int
    scheduler: Any | None
    checkpoint_dir: Path | None
    resume: bool
    seed: int | None
    verbose: bool
    callback: EpochCallback | None
    validation: tuple[np.ndarray, np.ndarray] | None


class WassersteinTRADESTrainer(Trainer):
    """W-TRADES: TRADES against a Wasserstein distributional threat (Bai, He, Jiang, Obłój, 2025).

    Trains (or fine-tunes) an ART ``PyTorchClassifier`` with its own optimizer. ``p = inf`` gives ordinary
    TRADES; ``p < inf`` lets the inner attack spend the budget unevenly over each mini-batch, which also
    covers the pointwise ball of radius ``eps``.

    | Paper link: https://arxiv.org/abs/2502.09352 (TRADES: https://proceedings.mlr.press/v97/zhang19p.html)
    """

    def __init__(
        self,
        classifier,
        eps: float,
        p: float = 2.0,
        norm: int | float | str = np.inf,
        beta: float = 6.0,
        max_iter: int = 10,
        eps_step: float | None = None,
        method: str = "wpgd",
        budget_rounds: int = 1,
        finetune: str | None = None,
        weight_noise: float = 0.01,
        last_layer: str | None = None,
        freeze_except_last: int | None = None,
        amp: bool = False,
        kl_start_std: float = 0.001,
        eval_max_iter: int = 10,
        inner_loss: str = "rekl",
        sensitivity_weight: float = 0.0,
        process_group: object | None = None,
    ) -> None:
        """
        :param classifier: An ART ``PyTorchClassifier`` with an optimizer; trained in place.
        :param eps: The Wasserstein budget δ ≥ 0 of each mini-batch, in units of the ground norm.
        :param p: Wasserstein order in [1, inf]; ``inf`` is pointwise TRADES.
        :param norm: Ground norm on inputs: ``np.inf``/"inf", 2 or 1.
        :param beta: Weight β ≥ 0 of the KL term.
        :param max_iter: Steps of the inner maximisation (TRADES: 10).
        :param eps_step: Step size of the inner maximisation; default ``1.875 · eps / max_iter``.
        :param method: Inner solver: "wpgd" (W-PGD) or "budget" (W-PGD-Budget, METHOD.md §4).
        :param budget_rounds: For "budget": budget (re-)allocations per inner maximisation.
        :param finetune: Protocol applied once at the start of :meth:`fit` (not when resuming): None,
                         "reinit_last" (re-initialise the last ``nn.Linear``, or ``last_layer``) or "perturb"
                         (multiply every trainable parameter by ``1 + weight_noise·N(0, 1)``).
        :param weight_noise: Relative noise level of ``finetune="perturb"``.
        :param last_layer: Name (as in ``model.named_modules()``) of the layer "reinit_last" re-initialises;
                           default the last ``nn.Linear`` in registration order.
        :param freeze_except_last: Train only the last ``k`` parameter-holding child blocks of the model
                                   (frozen blocks stay in eval mode); None trains everything.
        :param amp: bf16 autocast on CUDA; ignored, with a warning, elsewhere.
        :param kl_start_std: Std of the Gaussian start x + std·N(0, I) of the inner maximisation (∇KL = 0 at x).
        :param eval_max_iter: Iterations of the ReDLR W-PGD that measures validation robustness.
        :param inner_loss: What the inner maximisation ascends. "rekl" (default): the KL on inputs that x' still
                           classifies correctly and 0 on the others, so that the shared budget is not spent on inputs
                           already lost (the idea of ReDLR, METHOD.md §5); with ``p = inf`` no budget is shared and it
                           is the KL. "kl": the KL everywhere (TRADES' inner loss for every p).
        :param sensitivity_weight: γ ≥ 0: add β·γ·eps·Υ to the loss, Υ the sensitivity (METHOD.md §2) of the KL at x',
                                   the first-order gain left to a further W_p step (costs a double backprop). Not
                                   under ``torch.distributed`` (``fit`` raises): Υ would be each rank's micro-batch's,
                                   not the global batch's.
        :param process_group: The ranks that train together under ``torch.distributed``: default the model's
                              group if it is a ``DistributedDataParallel`` wrapper, else the world group when
                              initialised; ``False``: none (not with a DDP model). Each step trains on a global
                              batch, the ranks' micro-batches together (:meth:`fit` slices one, :meth:`fit_generator`
                              joins the ranks' generator batches): the inner maximisation's distribution, with one
                              budget, is the global batch, and every rank's parameters get the gradient of the global
                              batch's mean loss. The model may be the plain module (the trainer all-reduces the
                              gradients, weighted by slice size) or a DDP wrapper, ``PyTorchClassifier(model=
                              DistributedDataParallel(module), ...)``: the inner maximisation then runs on
                              ``.module`` (input-only gradients must bypass DDP's hooks), the outer step through the
                              wrapper, with each rank's loss scaled by world × n_rank / n_global so that DDP's equal
                              average is the global batch's mean; fine-tuning, freezing and checkpoints act on
                              ``.module`` (checkpoints load into the plain model). With DDP, ``freeze_except_last``
                              needs ``find_unused_parameters=True`` or blocks frozen before wrapping (DDP waits for
                              gradients of every parameter trainable when it was built). The fine-tuning protocol's
                              result and the shuffling seed are taken from the first rank; rank 0 writes the
                              checkpoints.
        """
        super().__init__(classifier)
        self.eps, self.p, self.norm, self.beta = eps, p, norm, beta
        self.max_iter, self.eps_step, self.method, self.budget_rounds = max_iter, eps_step, method, budget_rounds
        self.finetune, self.weight_noise, self.last_layer = finetune, weight_noise, last_layer
        self.freeze_except_last, self.amp, self.kl_start_std = freeze_except_last, amp, kl_start_std
        self.eval_max_iter, self.inner_loss, self.sensitivity_weight = eval_max_iter, inner_loss, sensitivity_weight
        self.process_group = process_group
        #: One dict per finished epoch: loss, train_clean_acc, train_robust_acc, [val_clean_acc, val_wpgd_acc], ...
        self.history: list[dict] = []
        self._generator = torch.Generator()
        self._frozen: list = []
        self._check_params()
        # After the checks (they need a PyTorchClassifier). The inner maximisation's forward never goes through a
        # DDP wrapper (input-only gradients); the outer step's does, so that DDP averages the gradients.
        self._forward_fn = est.forward_fn(classifier)
        self._train_forward_fn = est.forward_fn(classifier, classifier.model) if self._ddp else self._forward_fn

    # -- configuration --------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        est.require_pytorch_classifier(self._classifier, type(self).__name__)
        if self._classifier.optimizer is None:
            raise ValueError("`classifier` has no optimizer; pass one to PyTorchClassifier(optimizer=...).")
        check_number("eps", self.eps, low=0.0)
        check_number("p", self.p, low=1.0, allow_inf=True)
        parse_norm(self.norm)
        check_number("beta", self.beta, low=0.0)
        check_int("max_iter", self.max_iter, low=1)
        if self.eps_step is not None:
            check_number("eps_step", self.eps_step, low=0.0)
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {self.method!r}.")
        check_int("budget_rounds", self.budget_rounds, low=1)
        if self.finetune is not None and self.finetune not in FINETUNE_MODES:
            raise ValueError(f"`finetune` must be None or one of {FINETUNE_MODES}, got {self.finetune!r}.")
        check_number("weight_noise", self.weight_noise, low=0.0)
        if self.last_layer is not None:
            find_last_linear(self._module, self.last_layer)
        if self.freeze_except_last is not None:
            check_int("freeze_except_last", self.freeze_except_last, low=1)
        if not isinstance(self.amp, bool):
            raise TypeError(f"`amp` must be a bool, got {self.amp!r}.")
        check_number("kl_start_std", self.kl_start_std, low=0.0)
        check_int("eval_max_iter", self.eval_max_iter, low=1)
        check_number("sensitivity_weight", self.sensitivity_weight, low=0.0)
        if self.inner_loss not in INNER_LOSSES:
            raise ValueError(f"`inner_loss` must be one of {INNER_LOSSES}, got {self.inner_loss!r}.")
        self._check_ddp()

    def _check_ddp(self) -> None:
        """A DDP model averages gradients over its own group: the trainer's ranks must be those."""
        if not self._ddp:
            return
        if self.process_group is False:
            raise ValueError("`process_group`=False does not fit a DistributedDataParallel model, which averages "
                             "the gradients over its process group.")
        world, ddp_world = default_reducer(self._group()).world_size, self._classifier.model.process_group.size()
        if world != ddp_world:
            raise ValueError(f"`process_group` has {world} ranks but the DistributedDataParallel model averages over "
                             f"{ddp_world}.")

    @property
    def _ddp(self) -> bool:
        """Whether the classifier's model is a ``DistributedDataParallel`` wrapper."""
        return est.is_ddp(self._classifier.model)

    @property
    def _module(self) -> torch.nn.Module:
        """The network itself, unwrapped from DDP: what fine-tuning, freezing and checkpoints act on."""
        return est.unwrap(self._classifier.model)

    def _group(self) -> object | None:
        """The process group the ranks train in: ``process_group``, by default a DDP model's own."""
        if self.process_group is None and self._ddp:
            return self._classifier.model.process_group
        return self.process_group

    @property
    def ball(self) -> WassersteinBall:
        """The threat of the inner maximisation: the W_p ball of radius ``eps`` over each mini-batch."""
        return WassersteinBall(eps=float(self.eps), p=float(self.p), norm=parse_norm(self.norm))

    def attack_config(self, batch_size: int) -> AttackConfig:
        """Settings of the inner maximisation for a mini-batch of ``batch_size`` inputs (one pass, one budget)."""
        step = EPS_STEP_RATIO * self.eps / self.max_iter if self.eps_step is None else self.eps_step
        return AttackConfig(ball=self.ball, loss_fn=kl_divergence, eps_step=float(step), max_iter=self.max_iter,
                            method=self.method, batch_size=max(1, batch_size), keep_best=False,
                            budget_rounds=self.budget_rounds)

    @property
    def _device(self) -> torch.device:
        return est.device_of(self._classifier)

    def _use_amp(self) -> bool:
        return self.amp and self._device.type == "cuda"

    def _forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Logits through the estimator's preprocessing, under bf16 autocast when ``amp`` is active.

        :param train: For the outer step: through the DDP wrapper, if any (else the unwrapped module).
        """
        forward = self._train_forward_fn if train else self._forward_fn
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self._use_amp() else contextlib.nullcontext()
        with ctx:
            logits = forward(x)
        return logits.float()

    # -- the loss of one batch ------------------------------------------------------------------------------
    def _kl_start(self, x: torch.Tensor, shard: tuple[int, int] | None = None) -> torch.Tensor:
        # Not clipped, as in TRADES' code: the first step's clip-and-project makes the iterate feasible.
        if shard is None:
            return x + self.kl_start_std * torch.randn_like(x)
        # Every rank draws the noise of the whole global batch (identical RNG states) and keeps its slice, so the
        # ranks together start where one process with the global batch would.
        offset, total = shard
        noise = torch.randn((total, *x.shape[1:]), dtype=x.dtype, device=x.device)
        return x + self.kl_start_std * noise[offset:offset + x.shape[0]]

    def _inner_loss(self, y: torch.Tensor | None):
        """The per-sample loss the inner maximisation ascends: KL, or ReKL when the budget is shared."""
        if self.inner_loss == "kl" or self.ball.pointwise:
            return kl_divergence
        if y is None:
            raise ValueError("`inner_loss`='rekl' needs the labels `y` of the batch.")

        def rekl(logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
            # Zero (and zero gradient) on inputs already misclassified at x': the shared budget goes elsewhere.
            # The whole mini-batch is one engine batch (attack_config), so `y` lines up with `logits`.
            return kl_divergence(logits, clean_probs) * (logits.argmax(dim=1) == y).to(logits.dtype)

        return rekl

    def inner_maximize(self, x: torch.Tensor, y: torch.Tensor | None = None,
                       shard: tuple[int, int] | None = None) -> torch.Tensor:
        """The inner maximiser x' of the KL over the W_p ball around the batch ``x`` (model in eval mode).

        :param x: A mini-batch on the estimator's device; it is one distribution with one budget.
        :param y: Its labels (needed by ``inner_loss="rekl"`` only).
        :param shard: (offset, global size) when ``x`` is this rank's slice of a global batch.
        :return: x' with C(x', x) ≤ eps inside the clip box, detached.
        """
        cfg = replace(self.attack_config(x.shape[0]), loss_fn=self._inner_loss(y))
        with est.eval_mode(self._classifier):
            with torch.no_grad():
                clean_probs = F.softmax(self._forward(x), dim=1)
            x_adv, _ = run_attack(self._forward, x, clean_probs, cfg, start=lambda z: self._kl_start(z, shard),
                                  clip=est.clip_box(self._classifier, x.device), track=False,
                                  reducer=default_reducer(self._group()))
        return x_adv.detach()

    def _set_train_mode(self) -> None:
        """Train mode for the outer step, except frozen blocks (their batch-norm statistics stay fixed)."""
        self._classifier.model.train()
        for _, block in self._frozen:
            block.eval()

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, shard: tuple[int, int] | None = None) -> LossTerms:
        """The W-TRADES loss of one batch in train mode, differentiable in the parameters.

        :param x: Inputs on the estimator's device.
        :param y: Class indices (int64) on the same device.
        """
        x_adv = self.inner_maximize(x, y, shard)
        self._set_train_mode()
        penalise = self.sensitivity_weight > 0 and self.eps > 0
        x_in = x_adv.requires_grad_(True) if penalise else x_adv
        # Two DDP forwards before one backward are fine: each parameter's gradient hook still fires once.
        logits, logits_adv = self._forward(x, train=True), self._forward(x_in, train=True)
        natural = F.cross_entropy(logits, y)
        # KLDivLoss(sum)/B of TRADES' code; the clean prediction is not detached (the gradient flows through it).
        kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="none").sum(dim=1)
        robust = kl.sum() / x.shape[0]
        if penalise:
            robust = robust + self.sensitivity_weight * self.eps * self._sensitivity(kl, x_in)
        return LossTerms(natural + self.beta * robust, x_adv.detach(), logits, logits_adv)

    def _sensitivity(self, kl: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Υ of the per-sample KL at x' (METHOD.md §2), differentiable in the parameters (double backprop).

        δ·Υ is the first-order gain of the KL from moving x' by a further δ in W_p: penalising it flattens the
        KL where the distributional attacker would push next.
        """
        (grad,) = torch.autograd.grad(kl.sum(), x_adv, create_graph=True)
        return self.ball.sensitivity(self.ball.dual_norms(grad)).to(kl.dtype)

    def batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, x_adv)`` for one batch: CE(f(x), y) + β·KL(f(x) ‖ f(x')) and the inner maximiser x'."""
        terms = self.loss_terms(x, y)
        return terms.loss, terms.x_adv

    def train_step(self, x: torch.Tensor, y: torch.Tensor, shard: tuple[int, int] | None = None) -> torch.Tensor:
        """One optimizer step on a batch; returns [loss·n, clean correct, robust correct, n] on the device.

        :param shard: (offset, global size) when ``x`` is this rank's slice of a global batch.
        """
        terms = self.loss_terms(x, y, shard)
        optimizer = self._classifier.optimizer
        optimizer.zero_grad(set_to_none=True)
        self._backward(terms.loss, x.shape[0], shard)
        optimizer.step()
        with torch.no_grad():
            n = torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)
            clean = (terms.logits.argmax(dim=1) == y).sum().double()
            robust = (terms.logits_adv.argmax(dim=1) == y).sum().double()
            return torch.stack([terms.loss.detach().double() * n, clean, robust, n])

    def _backward(self, loss: torch.Tensor, n: int, shard: tuple[int, int] | None) -> None:
        """Leave the gradient of the global batch's mean loss in every rank's ``.grad``.

        :param loss: This rank's mean loss over its ``n`` inputs.
        :param shard: (offset, global size) of this rank's micro-batch, None when not sharded.
        """
        if shard is None:
            loss.backward()
            return
        share = n / shard[1]
        if self._ddp:
            # DDP averages the ranks' gradients with equal weights 1/world; scaling each rank's loss by
            # world·n_rank/n_global makes that average Σ (n_rank/n_global)·∇(rank's mean loss) for unequal slices.
            (loss * (self._world()[0] * share)).backward()
            return
        loss.backward()
        self._average_gradients(share)

    def _average_gradients(self, share: float) -> None:
        """The gradient of the global batch's mean loss: Σ_ranks (n_rank / n_global) · ∇(rank's mean loss)."""
        reducer = default_reducer(self._group())
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for param in self._classifier.model.parameters():
            if param.grad is not None:
                by_dtype.setdefault(param.grad.dtype, []).append(param.grad)
        for grads in by_dtype.values():
            # One all-reduce of all gradients (as DDP's buckets do), not one per tensor: on gloo each call costs
            # ~0.2 ms of latency whatever its size.
            flat = reducer.sum(torch.cat([g.reshape(-1) for g in grads]) * share)
            for grad, part in zip(grads, flat.split([g.numel() for g in grads])):
                grad.copy_(part.view_as(grad))

    # -- public loops ---------------------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, validation_data: tuple[np.ndarray, np.ndarray] | None = None,
            batch_size: int = 128, nb_epochs: int = 20, scheduler: Any | None = None,
            checkpoint_dir: str | Path | None = None, resume: bool = False, seed: int | None = None,
            verbose: bool = True, callback: EpochCallback | None = None, **kwargs) -> list[dict]:
        """Train with W-TRADES on ``(x, y)``, a mini-batch (one shared budget) at a time.

        Under ``torch.distributed`` (see ``process_group``) every rank passes the same ``x``, ``y`` and ``seed``; each
        global batch of ``batch_size × world`` inputs (one shuffle, drawn alike on every rank) is split into
        near-equal slices, one per rank, and trained as one process would train it, with a plain module or a DDP
        model alike.

        :param x: Training inputs (N, *input_shape) inside the clip box. Not modified.
        :param y: Labels as indices (N,) or one-hot (N, nb_classes). Not modified.
        :param validation_data: ``(x_val, y_val)``: clean and W-PGD (ReDLR, ``eval_max_iter`` steps, at the training
                                eps and p) accuracy after each epoch.
        :param batch_size: Mini-batch size: the distribution each inner maximisation attacks (per rank under
                           ``torch.distributed``: the distribution is then the global batch).
        :param nb_epochs: Total number of epochs (a resumed run counts the finished ones).
        :param scheduler: A torch LR scheduler of the classifier's optimizer, stepped once per epoch.
        :param checkpoint_dir: Save ``last.pt`` there (atomically) after each epoch.
        :param resume: Continue from ``checkpoint_dir/last.pt`` (model, optimizer, scheduler, history, RNG states);
                       the fine-tuning protocol is not applied again. Starts afresh, with a warning, if absent.
        :param seed: Seed torch, numpy and python ``random`` and the shuffling generator at the start.
        :param verbose: Progress bars over epochs and batches.
        :param callback: Called as ``callback(epoch, record)`` after each epoch (and its checkpoint).
        :return: :attr:`history`.
        """
        opts = self._options(nb_epochs, batch_size, scheduler, checkpoint_dir, resume, seed, verbose, callback,
                             validation_data, kwargs)
        x = check_x(x, self._classifier.input_shape, self._classifier.clip_values)
        labels = check_labels(y, x.shape[0], self._classifier.nb_classes)
        if labels is None:
            raise ValueError("`y` is required.")
        n = x.shape[0]

        world, rank = self._world()
        step = batch_size * world  # the global batch: one distribution, one budget

        def epoch_batches(_epoch: int) -> Iterator[Batch]:
            # The permutation comes from a checkpointed generator, so a resumed run shuffles as a straight one; every
            # rank draws the same one and takes its slice of each global batch.
            perm = torch.randperm(n, generator=self._generator).numpy()
            for start in range(0, n, step):
                glob = perm[start:start + step]
                parts = np.array_split(glob, world)
                idx, offset = parts[rank], sum(len(part) for part in parts[:rank])
                yield (*self._to_device(x[idx], labels[idx]), (offset, len(glob)) if world > 1 else None)

        return self._train(epoch_batches, math.ceil(n / step), opts)

    def _world(self) -> tuple[int, int]:
        """(world size, rank) of the process group training together; (1, 0) without one."""
        reducer = default_reducer(self._group())
        if reducer.world_size == 1:
            return 1, 0
        import torch.distributed as dist

        return reducer.world_size, dist.get_rank(reducer.group)

    def fit_generator(self, generator, nb_epochs: int = 20, validation_data: tuple | None = None,
                      scheduler: Any | None = None, checkpoint_dir: str | Path | None = None,
                      resume: bool = False, seed: int | None = None, verbose: bool = True,
                      callback: EpochCallback | None = None, **kwargs) -> list[dict]:
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

        :param generator: An ART ``DataGenerator`` that knows its ``size``.
        Other parameters as in :meth:`fit`.
        """
        from art.data_generators import DataGenerator

        if not isinstance(generator, DataGenerator):
            raise TypeError("`generator` must be an art.data_generators.DataGenerator, "
                            f"got {type(generator).__name__}.")
        if generator.size is None:
            raise ValueError("`generator` must know its size (generator.size is None).")
        nb_batches = getattr(generator, "batches_per_epoch", None) or math.ceil(generator.size / generator.batch_size)
        opts = self._options(nb_epochs, generator.batch_size, scheduler, checkpoint_dir, resume, seed, verbose,
                             callback, validation_data, kwargs)
        self._check_same_batch_count(nb_batches)

        def epoch_batches(epoch: int) -> Iterator[Batch]:
            _start_generator_epoch(generator, epoch)
            for _ in range(nb_batches):
                xb, yb = generator.get_batch()[:2]
                xb = check_x(np.asarray(xb), self._classifier.input_shape, self._classifier.clip_values)
                yb = check_labels(np.asarray(yb), xb.shape[0], self._classifier.nb_classes)
                yield (*self._to_device(xb, yb), self._shard_of(xb.shape[0]))

        return self._train(epoch_batches, nb_batches, opts)

    def _check_same_batch_count(self, nb_batches: int) -> None:
        """Every rank must run as many steps as the others, or the collectives of the longer ranks would hang."""
        if self._world()[0] == 1:
            return
        counts = torch.tensor([nb_batches, -nb_batches], dtype=torch.int64, device=self._device)
        most, fewest = default_reducer(self._group()).max(counts).tolist()
        if most != -fewest:
            raise ValueError(f"The ranks' generators give between {-fewest} and {most} batches per epoch; every rank "
                             "must run the same number (use a DistributedSampler, or equal `size`/`batch_size`).")

    def _shard_of(self, n: int) -> tuple[int, int] | None:
        """(offset, global size) of this rank's ``n`` inputs in the step's global batch; None without ranks.

        One all-reduce of a world-sized vector of sizes, read back: the global size weights the gradient, and the
        offset picks this rank's slice of the global batch's start noise.
        """
        world, rank = self._world()
        if world == 1:
            return None
        sizes = torch.zeros(world, dtype=torch.int64, device=self._device)
        sizes[rank] = n
        sizes = default_reducer(self._group()).sum(sizes).tolist()
        return sum(sizes[:rank]), sum(sizes)

    # -- the epoch loop -------------------------------------------------------------------------------------
    def _options(self, nb_epochs, batch_size, scheduler, checkpoint_dir, resume, seed, verbose, callback,
                 validation_data, kwargs) -> _FitOptions:
        self._check_params()
        if self.sensitivity_weight > 0 and self._world()[0] > 1:
            raise ValueError("`sensitivity_weight` > 0 is not supported under torch.distributed: its Υ would be each "
                             "rank's micro-batch's, not the global batch's.")
        check_int("nb_epochs", nb_epochs, low=1)
        check_int("batch_size", batch_size, low=1)
        if seed is not None:
            check_int("seed", seed, low=0)
        if resume and checkpoint_dir is None:
            raise ValueError("`resume`=True needs a `checkpoint_dir`.")
        if kwargs:
            logger.warning("%s ignores the arguments %s.", type(self).__name__, sorted(kwargs))
        if self.amp and not self._use_amp():
            logger.warning("`amp`=True needs a CUDA device; training in float32 on %s.", self._device)
        return _FitOptions(nb_epochs, batch_size, scheduler, None if checkpoint_dir is None else Path(checkpoint_dir),
                           resume, seed, verbose, callback, self._check_validation(validation_data))

    def _check_validation(self, data: tuple | None) -> tuple[np.ndarray, np.ndarray] | None:
        if data is None:
            return None
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError("`validation_data` must be a pair (x_val, y_val).")
        x_val = check_x(data[0], self._classifier.input_shape, self._classifier.clip_values, name="validation_data[0]")
        y_val = check_labels(data[1], x_val.shape[0], self._classifier.nb_classes, name="validation_data[1]")
        return x_val, y_val

    def _to_device(self, x: np.ndarray, y: np.ndarray) -> Batch:
        x_t = torch.from_numpy(np.array(x, dtype=np.float32, copy=True)).to(self._device)
        return x_t, torch.from_numpy(np.asarray(y, dtype=np.int64)).to(self._device)

    def _train(self, epoch_batches: Callable[[int], Iterable[Batch]], nb_batches: int,
               opts: _FitOptions) -> list[dict]:
        model = self._classifier.model
        trainable = [p.requires_grad for p in model.parameters()]
        try:
            first = self._begin(opts)
            epochs = range(first, opts.nb_epochs)
            for epoch in tqdm(epochs, desc="W-TRADES epochs", disable=not opts.verbose):
                self._finish_epoch(epoch, self._train_epoch(epoch_batches(epoch), nb_batches, epoch, opts.verbose),
                                   opts)
        finally:
            # Freezing is for this fit only; hand the model back as it came (and in eval mode, like ART).
            for param, flag in zip(model.parameters(), trainable):
                param.requires_grad_(flag)
            self._frozen = []
            model.eval()
        return self.history

    def _begin(self, opts: _FitOptions) -> int:
        """Seed, freeze, then resume from the checkpoint or apply the fine-tuning protocol; the first epoch."""
        if opts.seed is not None:
            seed_everything(opts.seed)
        base = opts.seed if opts.seed is not None else self._shared_seed(int(torch.randint(2**62, (1,))))
        self._generator = torch.Generator().manual_seed(base)
        model = self._module  # fine-tuning, freezing and checkpoints act on the network, not on a DDP wrapper
        self._frozen = self._freeze(model)
        path = None if opts.checkpoint_dir is None else opts.checkpoint_dir / LAST
        if opts.resume and path is not None and path.is_file():
            epoch, self.history = restore_training_state(load_checkpoint(path), model, self._classifier.optimizer,
                                                         opts.scheduler, self._generator)
            logger.info("Resumed from %s after epoch %d.", path, epoch)
            return epoch
        if opts.resume:
            logger.warning("No checkpoint at %s; training from the start.", path)
        self.history = []
        apply_finetune(model, self.finetune, self.weight_noise, self.last_layer)
        if self.finetune is not None:
            self._broadcast_from_first_rank(model)
        return 0

    def _shared_seed(self, seed: int) -> int:
        """One unseeded shuffling seed for all ranks (the largest), so that their slices of fit's batches tile."""
        if self._world()[0] == 1:
            return seed
        return int(default_reducer(self._group()).max(torch.tensor([seed], device=self._device)).item())

    def _freeze(self, module: torch.nn.Module) -> list:
        """Apply ``freeze_except_last`` to ``module``; the frozen blocks."""
        if self.freeze_except_last is None:
            return []
        before = [p.requires_grad for p in module.parameters()]
        frozen = freeze_except_last(module, self.freeze_except_last)
        newly = any(was and not p.requires_grad for was, p in zip(before, module.parameters()))
        if newly and self._ddp and not self._classifier.model.find_unused_parameters:
            # DDP would wait for the gradients of parameters it saw trainable when built ("Expected to have finished
            # reduction in the prior iteration") at the next step.
            raise ValueError("`freeze_except_last` with a DistributedDataParallel model: freeze the blocks before "
                             "wrapping (art_wdat.finetune.freeze_except_last(module, k)), or build the wrapper with "
                             "find_unused_parameters=True.")
        return frozen

    def _broadcast_from_first_rank(self, module: torch.nn.Module) -> None:
        """Give every rank the first rank's parameters and buffers.

        The fine-tuning protocol draws from each rank's RNG, and the ranks must train one model (DDP only broadcasts
        the weights when it wraps the module).
        """
        if self._world()[0] == 1:
            return
        import torch.distributed as dist

        group = self._group()
        src = 0 if group is None else dist.get_global_rank(group, 0)
        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=src, group=group)

    def _train_epoch(self, batches: Iterable[Batch], nb_batches: int, epoch: int, verbose: bool) -> dict:
        start = time.perf_counter()
        totals = torch.zeros(4, dtype=torch.float64, device=self._device)
        for x_b, y_b, shard in tqdm(batches, total=nb_batches, desc=f"epoch {epoch + 1}", leave=False,
                                    disable=not verbose):
            totals += self.train_step(x_b, y_b, shard)
        totals = default_reducer(self._group()).sum(totals)
        loss, clean, robust, n = totals.tolist()  # the one host sync of the epoch
        n = max(n, 1.0)
        return {"epoch": epoch + 1, "loss": loss / n, "train_clean_acc": clean / n, "train_robust_acc": robust / n,
                "time_s": time.perf_counter() - start}

    def _finish_epoch(self, epoch: int, record: dict, opts: _FitOptions) -> None:
        """Scheduler, validation, logging, checkpoint and callback after one epoch."""
        _step_scheduler(opts.scheduler, record["loss"])
        if opts.validation is not None:
            record.update(self.evaluate(*opts.validation, batch_size=opts.batch_size))
        self.history.append(record)
        logger.info("W-TRADES epoch %d/%d: %s", epoch + 1, opts.nb_epochs,
                    ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        if opts.checkpoint_dir is not None and self._world()[1] == 0:
            state = training_state(self._module, self._classifier.optimizer, opts.scheduler, epoch + 1,
                                   self.history, self._generator)
            save_checkpoint(state, opts.checkpoint_dir / LAST)
        if opts.callback is not None:
            opts.callback(epoch, record)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 128) -> dict:
        """Clean and W-PGD accuracy (ReDLR, ``eval_max_iter`` steps, the training eps, p and norm) on ``(x, y)``."""
        labels = check_labels(y, x.shape[0], self._classifier.nb_classes)
        clean = float((self._classifier.predict(x, batch_size=batch_size).argmax(axis=1) == labels).mean())
        attack = WassersteinDistributionalAttack(
            self._classifier, eps=self.eps, p=self.p, norm=self.norm, max_iter=self.eval_max_iter,
            loss="redlr" if self._classifier.nb_classes >= 3 else "ce", batch_size=batch_size, verbose=False)
        attack.generate(x, labels)
        res = attack.last_result_
        robust = clean if res is None else float(res.accuracy[res.best_iteration])
        return {"val_clean_acc": clean, "val_wpgd_acc": robust}


def _start_generator_epoch(generator, epoch: int) -> None:
    """``set_epoch(epoch)`` on a DataLoader-backed generator's (batch) sampler, and a fresh pass over the loader.

    ART's ``PyTorchDataGenerator`` makes its next DataLoader iterator only when the current one runs out (the first
    at construction), and a loader with workers draws the sampler's indices when its iterator is made: without a
    fresh iterator the new epoch's order would not take effect at once (resumed runs, workers, or epochs that do not
    end where the loader does).
    """
    from art.data_generators import PyTorchDataGenerator

    loader = getattr(generator, "iterator", None)
    samplers = [getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)]
    with_epoch = [s for s in samplers if callable(getattr(s, "set_epoch", None))]
    if not with_epoch:
        return
    for sampler in with_epoch:
        sampler.set_epoch(epoch)
    if isinstance(generator, PyTorchDataGenerator):
        generator._current = iter(loader)  # ART's own attribute: the iterator get_batch draws from


def _step_scheduler(scheduler: Any | None, loss: float) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(loss)
    else:
        scheduler.step()
