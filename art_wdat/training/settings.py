"""The settings of :class:`~art_wdat.training.trainer.WassersteinTRADESTrainer` and their checks.

:class:`TRADESSettings` is the trainer's base: it takes the constructor's keywords as attributes (ART style, so
that changing one takes effect at the next call), checks them (again at each ``fit``), and derives from them what
the trainer works with: the threat of the inner maximisation (declared once, in :class:`ThreatSpec`), the
device, the network unwrapped from DDP, and the ranks that train together.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from art.defences.trainer.trainer import Trainer
from torch import nn

from art_wdat.attacks import estimator as est
from art_wdat.attacks.spec import NormLike, ThreatKeywords, ThreatSpec, check_eps_scale
from art_wdat.core.engine import AttackConfig
from art_wdat.core.reduce import ProcessGroupLike
from art_wdat.core.threat import WassersteinBall
from art_wdat.training.finetune import FINETUNE_MODES, FinetuneMode, find_last_linear
from art_wdat.training.judge import POINTWISE_ATTACKS, PointwiseAttack
from art_wdat.training.objective import (
    INNER_LOSSES,
    OUTER_LOSSES,
    TRAIN_METHODS,
    InnerLoss,
    OuterLoss,
    TrainMethod,
    inner_attack_config,
)
from art_wdat.training.recipe import DEFAULT_RECIPE
from art_wdat.training.selection import Selection
from art_wdat.training.sync import RankSync, training_group
from art_wdat.validation import check_int, check_number

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier


@dataclass
class RunState:
    """What the epoch loop keeps on the trainer between (and during) calls."""

    #: One dict per finished epoch: loss, train_clean_acc, train_robust_acc, [val_clean_acc, val_wauto_acc], ...
    history: list[dict] = field(default_factory=list)
    #: Draws fit's shuffles; checkpointed, so that a resumed run shuffles as a straight one.
    generator: torch.Generator = field(default_factory=torch.Generator)
    #: The blocks frozen by ``freeze_except_last`` during a call (kept in eval mode while training).
    frozen: list[tuple[str, nn.Module]] = field(default_factory=list)
    #: The held-out selection of the last call with a validation split (None without one).
    selection: Selection | None = None
    #: The weights of the epoch selection keeps so far (on the CPU), during a call.
    kept_weights: dict | None = None


class TRADESSettings(ThreatKeywords, Trainer):
    """The configuration of W-TRADES training: the constructor's keywords, their checks and what they imply."""

    def __init__(
        self,
        classifier: PyTorchClassifier,
        eps: float,
        p: float = 2.0,
        norm: NormLike = np.inf,
        beta: float = 6.0,
        *,
        max_iter: int = DEFAULT_RECIPE.max_iter,
        eps_step: float | None = None,
        method: TrainMethod = "knapsack",
        budget_rounds: int = 1,
        finetune: FinetuneMode | None = None,
        weight_noise: float = 0.01,
        last_layer: str | None = None,
        freeze_except_last: int | None = None,
        amp: bool = False,
        kl_start_std: float = 0.001,
        eval_max_iter: int = 20,
        inner_loss: InnerLoss = "kl",
        sensitivity_weight: float = 0.0,
        outer_loss: OuterLoss = "trades",
        pointwise_beta: float = 6.0,
        pointwise_eps: float | None = None,
        cheapness_weight: float = 0.0,
        process_group: ProcessGroupLike = None,
        allow_large_eps: bool = False,
        select_p: float | None = None,
        val_pointwise: PointwiseAttack = "min-norm",
    ) -> None:
        """
        :param classifier: An ART ``PyTorchClassifier`` with an optimizer; trained in place.
        :param eps: The Wasserstein budget δ ≥ 0 of each mini-batch, in units of the ground norm.
        :param p: Wasserstein order in [1, inf]; ``inf`` is pointwise TRADES.
        :param norm: Ground norm on inputs: ``np.inf``/"inf", 2 or 1.
        :param beta: Weight β ≥ 0 of the KL term.
        :param max_iter: Steps of the inner maximisation (default: the fine-tuning recipe's, 5; TRADES from scratch
                         uses 10). ``fit(..., recipe=...)`` sets it to the recipe's.
        :param eps_step: Step size of the inner maximisation; default ``1.875 · eps / max_iter``.
        :param method: Inner solver: "wpgd" (W-PGD), "budget" (W-PGD-Budget, :doc:`/maths`) or "knapsack" (default):
                       the knapsack-informed allocation, which estimates each input's flip cost to first order
                       (margin over the dual norm of its gradient, one pass), gives the batch's budget to the inputs
                       the knapsack would flip (in proportion to their costs; none to the others) and runs PGD in each
                       input's ball.
                       At p = inf every solver is TRADES' PGD. The defaults of ``method``, ``inner_loss`` and
                       ``pointwise_beta`` are the configuration chosen in docs/experiments/wtrades.md.
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
        :param eval_max_iter: Iterations of each attack run that measures the held-out split during ``fit``: the
                              W-PGD parts of W-AutoAttack (and every APGD run of ``val_pointwise="autoattack"``).
        :param inner_loss: What the inner maximisation ascends. "kl" (default): the KL everywhere (TRADES' inner loss
                           for every p). "rekl": the KL on inputs that x' still
                           classifies correctly and 0 on the others, so that the shared budget is not spent on inputs
                           already lost (the idea of ReDLR, :doc:`/maths`); with ``p = inf`` no budget is shared and it
                           is the KL. "redlr": the evaluation's ReDLR (label-based, like PGD's CE in Madry et al.'s
                           training).
        :param sensitivity_weight: γ ≥ 0: add β·γ·eps·Υ to the loss, Υ the sensitivity (:doc:`/maths`) of the KL at x',
                                   the first-order gain left to a further W_p step (costs a double backprop). Not
                                   under ``torch.distributed`` (``fit`` raises): Υ would be each rank's micro-batch's,
                                   not the global batch's.
        :param outer_loss: "trades" (default): CE(f(x)) + β·KL(f(x) ‖ f(x')). "ce": the cross-entropy CE(f(x')) at the
                           distributional adversary (β, and ``sensitivity_weight``, then unused).
        :param pointwise_beta: β_pt ≥ 0 (default 6): the joint objective adds β_pt·KL(f(x) ‖ f(x'_pt)), with x'_pt
                               TRADES' maximiser of the KL in each input's ground-norm ball of radius
                               ``pointwise_eps`` (a second inner maximisation, as many steps). 0 leaves it out (the
                               W-TRADES loss alone), and so does ``p = inf``, where the distributional term is
                               TRADES' already. The total KL weight is then β + β_pt: in the study, pointwise TRADES
                               with that weight did as well on W-AutoAttack (docs/experiments/wtrades.md).
        :param pointwise_eps: ε of that term; default ``eps``.
        :param cheapness_weight: λ ≥ 0: weigh each input's KL terms by 1 + λ·exp(−c_i/eps) (c_i its first-order flip
                                 cost; misclassified inputs 1), scaled to mean 1 over the batch, so that the KL goes
                                 to the inputs a W_p budget flips first (one extra forward and backward pass per
                                 batch). 0 (default): every input alike. It did not move the frontier against
                                 pointwise TRADES in the frontier study (:doc:`/experiments/frontier`). Ignored, with
                                 a warning at ``fit``, at ``p = inf``: that is TRADES.
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
        :param allow_large_eps: Accept an ``eps`` beyond the box ``clip_values`` (ℓ∞: half its range; ℓ2, ℓ1: its
                                diameter), which is refused by default as a budget on the wrong scale (8 for 8/255).
        :param select_p: The Wasserstein order of the W-AutoAttack that measures the held-out split and ranks the
                         epochs (in [1, inf]); None: ``p``. E.g. ``p=np.inf, select_p=2`` trains TRADES and keeps the
                         epoch best under W_2.
        :param val_pointwise: How the held-out pointwise accuracy at ε is measured: "min-norm" (default: from
                              W-AutoAttack's minimum-norm flip costs in the ground norm, no attack run of its own) or
                              "autoattack" (APGD-CE + APGD-T of the ``autoattack`` package; inputs in [0, 1]).
        :raises TypeError: if ``classifier`` is not an ART ``PyTorchClassifier`` (the trainer trains torch modules;
                           ``WassersteinDistributionalAttack`` attacks other estimators).
        :raises ValueError: also when the model does not return ``nb_classes`` outputs (one forward pass here).
        """
        super().__init__(classifier)
        self.eps, self.p, self.norm, self.beta = eps, p, norm, beta
        self.max_iter, self.eps_step, self.method, self.budget_rounds = max_iter, eps_step, method, budget_rounds
        self.finetune, self.weight_noise, self.last_layer = finetune, weight_noise, last_layer
        self.freeze_except_last, self.amp, self.kl_start_std = freeze_except_last, amp, kl_start_std
        self.eval_max_iter, self.inner_loss, self.sensitivity_weight = eval_max_iter, inner_loss, sensitivity_weight
        self.outer_loss, self.pointwise_beta, self.pointwise_eps = outer_loss, pointwise_beta, pointwise_eps
        self.cheapness_weight = cheapness_weight
        self.process_group, self.allow_large_eps = process_group, allow_large_eps
        self.select_p, self.val_pointwise = select_p, val_pointwise
        #: The history, shuffling generator and frozen blocks of the epoch loop (:attr:`history` is its history).
        self._state = RunState()
        self._check_params()
        est.check_nb_classes(classifier, type(self).__name__)
        # After the checks (they need a PyTorchClassifier). The inner maximisation's forward never goes through a
        # DDP wrapper (input-only gradients); the outer step's does, so that DDP averages the gradients.
        self._forward_fn = est.forward_fn(classifier)
        self._train_forward_fn = est.forward_fn(classifier, classifier.model) if self._ddp else self._forward_fn

    # -- checks -----------------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        require_pytorch_classifier(self._classifier, type(self).__name__)
        if self._classifier.optimizer is None:
            raise ValueError("`classifier` has no optimizer; pass one to PyTorchClassifier(optimizer=...).")
        self.check_threat()
        self.check_eps_plausible(self._classifier.clip_values, self._classifier.input_shape)
        if self.method not in TRAIN_METHODS:
            raise ValueError(f"`method` of the inner maximisation must be one of {TRAIN_METHODS}, got {self.method!r}.")
        check_number("beta", self.beta, low=0.0)
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
        if self.outer_loss not in OUTER_LOSSES:
            raise ValueError(f"`outer_loss` must be one of {OUTER_LOSSES}, got {self.outer_loss!r}.")
        if self.outer_loss == "ce" and self.sensitivity_weight > 0:
            raise ValueError("`sensitivity_weight` > 0 penalises the KL of outer_loss='trades'; it has no term to "
                             "act on with outer_loss='ce'.")
        check_number("pointwise_beta", self.pointwise_beta, low=0.0)
        check_number("cheapness_weight", self.cheapness_weight, low=0.0)
        if self.select_p is not None:
            check_number("select_p", self.select_p, low=1.0, allow_inf=True)
        if self.val_pointwise not in POINTWISE_ATTACKS:
            raise ValueError(f"`val_pointwise` must be one of {POINTWISE_ATTACKS}, got {self.val_pointwise!r}.")
        if self.pointwise_eps is not None:
            check_number("pointwise_eps", self.pointwise_eps, low=0.0)
            if not self.allow_large_eps:  # the same scale check as eps (8 where 8/255 was meant)
                check_eps_scale(self.pointwise_eps, self.norm, self._classifier.clip_values,
                                self._classifier.input_shape, name="`pointwise_eps`")
        self._check_ddp()

    def _check_ddp(self) -> None:
        """A DDP model averages gradients over its own group: the trainer's ranks must be those."""
        if not self._ddp:
            return
        if self.process_group is False:
            raise ValueError("`process_group`=False does not fit a DistributedDataParallel model, which averages "
                             "the gradients over its process group.")
        world, ddp_world = self._sync.reducer.world_size, self._classifier.model.process_group.size()
        if world != ddp_world:
            raise ValueError(f"`process_group` has {world} ranks but the DistributedDataParallel model averages over "
                             f"{ddp_world}.")

    # -- what the settings imply ------------------------------------------------------------------------------
    @property
    def _ddp(self) -> bool:
        """Whether the classifier's model is a ``DistributedDataParallel`` wrapper."""
        return est.is_ddp(self._classifier.model)

    @property
    def _module(self) -> torch.nn.Module:
        """The network itself, unwrapped from DDP: what fine-tuning, freezing and checkpoints act on."""
        return est.unwrap(self._classifier.model)

    @property
    def _sync(self) -> RankSync:
        """The collectives of the ranks that train together: over ``process_group``, by default a DDP model's own."""
        return RankSync(training_group(self._classifier.model, self.process_group), self._device)

    @property
    def pointwise_threat(self) -> ThreatSpec | None:
        """The joint objective's pointwise threat (TRADES' ℓ-ball of radius ``pointwise_eps``), or None when off
        (``pointwise_beta`` = 0, or p = inf)."""
        if self.pointwise_beta == 0 or self.ball.pointwise:
            return None
        eps = self.eps if self.pointwise_eps is None else self.pointwise_eps
        return replace(self.threat, eps=eps, p=math.inf, method="wpgd", eps_step=None)

    @property
    def selection_p(self) -> float:
        """The order p of the W-AutoAttack that ranks the epochs: ``select_p``, or the training ``p``."""
        return float(self.p if self.select_p is None else self.select_p)

    @property
    def effective_cheapness_weight(self) -> float:
        """``cheapness_weight`` as trained with: 0 at p = inf, which is TRADES whatever it says."""
        return 0.0 if self.ball.pointwise else float(self.cheapness_weight)

    @property
    def ball(self) -> WassersteinBall:
        """The threat of the inner maximisation: the W_p ball of radius ``eps`` over each mini-batch."""
        return self.threat.ball

    def attack_config(self, batch_size: int) -> AttackConfig:
        """Settings of the inner maximisation for a mini-batch of ``batch_size`` inputs (one pass, one budget)."""
        return inner_attack_config(self.threat, batch_size)

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


def require_pytorch_classifier(classifier: object, who: str) -> None:
    """TypeError unless ``classifier`` is an ART ``PyTorchClassifier`` (with a preprocessing chain ART can run).

    The trainer trains the torch module with its optimizer; the attack is what works with other estimators.
    """
    from art.estimators.classification import PyTorchClassifier

    if not isinstance(classifier, PyTorchClassifier):
        raise TypeError(f"{who} trains PyTorch models: it needs an ART PyTorchClassifier (with an optimizer), got "
                        f"{type(classifier).__name__}. Wrap the torch.nn.Module in "
                        "art.estimators.classification.PyTorchClassifier; to attack this estimator instead, use "
                        "art_wdat.WassersteinDistributionalAttack, which works with other ART classifiers.")
    est.require_pytorch_classifier(classifier, who)
