"""The W-TRADES objective of one mini-batch (:doc:`/maths`): the inner maximisation and the loss terms.

Per mini-batch B::

    loss = (1/|B|) Σ CE(f(x_i), y_i)  +  β · (1/|B|) Σ KL(f(x_i) ‖ f(x'_i)),
    x' ≈ argmax_{C(x', x) ≤ eps} (1/|B|) Σ KL(f(x_i) ‖ f(x'_i))

The inner maximisation is the package's W-PGD (or W-PGD-Budget) on the KL (or ReKL) loss, in eval mode, from
x + std·N(0, I); the loss terms are computed in train mode, with the gradient flowing through both the clean and
the adversarial prediction of the KL term, as in TRADES. Optionally a sensitivity penalty β·γ·eps·Υ is added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F

from art_wdat.attacks import estimator as est
from art_wdat.attacks.spec import ThreatSpec
from art_wdat.core.engine import AttackConfig, run_distribution_attack
from art_wdat.core.knapsack import first_order_flip_costs, knapsack_budgets
from art_wdat.core.losses import LossFn, kl_divergence, redlr
from art_wdat.core.reduce import Reducer
from art_wdat.training.sync import Shard

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

#: What the inner maximisation ascends: the KL everywhere, ReKL (the KL on inputs x' still classifies correctly), or
#: ReDLR (the evaluation's loss: DLR on inputs still correct, 0 on the others).
InnerLoss = Literal["kl", "rekl", "redlr"]
INNER_LOSSES: tuple[str, ...] = get_args(InnerLoss)
#: The outer loss: TRADES' CE(f(x)) + β·KL(f(x) ‖ f(x')), or the cross-entropy CE(f(x')) at the adversary.
OuterLoss = Literal["trades", "ce"]
OUTER_LOSSES: tuple[str, ...] = get_args(OuterLoss)
#: The inner solvers of the trainer: the engine's two, and the knapsack-informed allocation.
TrainMethod = Literal["wpgd", "budget", "knapsack"]
TRAIN_METHODS: tuple[str, ...] = get_args(TrainMethod)

#: Logits (float32) of a batch: ``forward(x, train)``; ``train`` for the outer step (through a DDP wrapper, if any).
Forward = Callable[[torch.Tensor, bool], torch.Tensor]


def inner_attack_config(threat: ThreatSpec, batch_size: int, loss_fn: LossFn = kl_divergence) -> AttackConfig:
    """Settings of the inner maximisation for a mini-batch of ``batch_size`` inputs (one pass, one budget).

    The knapsack-informed solver steps as W-PGD-Budget; its budgets are set per batch (:meth:`WTradesObjective.
    inner_maximize`).
    """
    if threat.method == "knapsack":
        # At p = inf nothing is shared: every input's ball is eps, and the solver is PGD (W-PGD's step).
        threat = threat.stepping("wpgd" if threat.ball.pointwise else "budget")
    return threat.config(loss_fn, max(1, batch_size), keep_best=False)


class LossTerms(NamedTuple):
    """One batch's W-TRADES loss and its parts (all on the device)."""

    loss: torch.Tensor
    x_adv: torch.Tensor
    logits: torch.Tensor
    logits_adv: torch.Tensor


@dataclass(frozen=True)
class WTradesObjective:
    """The W-TRADES loss of one mini-batch, one distribution with one budget; the trainer builds it from its settings.

    :param classifier: The ART ``PyTorchClassifier`` being trained (its clip box; eval mode for the inner step).
    :param threat: The W_p ball of the inner maximisation and its solver's steps.
    :param forward: Logits of a batch (see :data:`Forward`).
    :param set_train_mode: Puts the model in train mode for the outer step (frozen blocks stay in eval mode).
    :param reducer: Sums and maxima over the ranks' micro-batches (the global batch shares one budget).
    :param beta: Weight β ≥ 0 of the KL term.
    :param kl_start_std: Std of the Gaussian start x + std·N(0, I) of the inner maximisation (∇KL = 0 at x).
    :param inner_loss: "rekl", "kl" or "redlr" (see :class:`~art_wdat.training.trainer.WassersteinTRADESTrainer`).
    :param sensitivity_weight: γ ≥ 0 of the sensitivity penalty β·γ·eps·Υ.
    :param outer_loss: "trades" or "ce".
    :param pointwise: The pointwise threat of the joint objective's extra TRADES term, or None.
    :param pointwise_beta: Its weight β_pt ≥ 0.
    :param cheapness_weight: λ ≥ 0 of :meth:`cheapness_weights`; 0 weighs every input's KL alike (TRADES).
    """

    classifier: PyTorchClassifier
    threat: ThreatSpec
    forward: Forward
    set_train_mode: Callable[[], None]
    reducer: Reducer
    beta: float
    kl_start_std: float
    inner_loss: InnerLoss
    sensitivity_weight: float
    outer_loss: OuterLoss = "trades"
    pointwise: ThreatSpec | None = None
    pointwise_beta: float = 0.0
    cheapness_weight: float = 0.0

    def kl_start(self, x: torch.Tensor, shard: Shard = None) -> torch.Tensor:
        """The start x + std·N(0, I) of the inner maximisation; this rank's slice of the global batch's noise."""
        # Not clipped, as in TRADES' code: the first step's clip-and-project makes the iterate feasible.
        if shard is None:
            return x + self.kl_start_std * torch.randn_like(x)
        # Every rank draws the noise of the whole global batch (identical RNG states) and keeps its slice, so the
        # ranks together start where one process with the global batch would.
        offset, total = shard
        noise = torch.randn((total, *x.shape[1:]), dtype=x.dtype, device=x.device)
        return x + self.kl_start_std * noise[offset:offset + x.shape[0]]

    def inner_loss_fn(self, y: torch.Tensor | None, threat: ThreatSpec, inner_loss: InnerLoss) -> LossFn:
        """The per-sample loss the inner maximisation ascends: KL, ReDLR, or ReKL when the budget is shared."""
        if inner_loss == "redlr":
            return redlr
        if inner_loss == "kl" or threat.ball.pointwise:
            return kl_divergence
        if y is None:
            raise ValueError("`inner_loss`='rekl' needs the labels `y` of the batch.")

        def rekl(logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
            # Zero (and zero gradient) on inputs already misclassified at x': the shared budget goes elsewhere.
            # The whole mini-batch is one engine batch (inner_attack_config), so `y` lines up with `logits`.
            return kl_divergence(logits, clean_probs) * (logits.argmax(dim=1) == y).to(logits.dtype)

        return rekl

    def inner_maximize(self, x: torch.Tensor, y: torch.Tensor | None = None, shard: Shard = None,
                       threat: ThreatSpec | None = None, inner_loss: InnerLoss | None = None) -> torch.Tensor:
        """The inner maximiser x' of the inner loss over the W_p ball around the batch ``x`` (model in eval mode).

        :param x: A mini-batch on the estimator's device; it is one distribution with one budget.
        :param y: Its labels (needed by "rekl", "redlr" and the knapsack-informed solver).
        :param shard: (offset, global size) when ``x`` is this rank's slice of a global batch.
        :param threat: The threat to maximise over; default the trainer's (the joint objective's pointwise term
                       passes its own).
        :param inner_loss: The loss to ascend; default the trainer's (the pointwise term ascends TRADES' KL).
        :return: x' with C(x', x) ≤ eps inside the clip box, detached.
        """
        threat = self.threat if threat is None else threat
        loss = self.inner_loss if inner_loss is None else inner_loss
        needs_labels = loss == "redlr" or (threat.method == "knapsack" and not threat.ball.pointwise)
        if needs_labels and y is None:
            raise ValueError(f"`inner_loss`={loss!r} with `method`={threat.method!r} needs the labels `y` of the "
                             "batch.")
        cfg = inner_attack_config(threat, x.shape[0], self.inner_loss_fn(y, threat, loss))

        def evaluate(z: torch.Tensor) -> torch.Tensor:
            return self.forward(z, False)

        with est.eval_mode(self.classifier):
            if threat.method == "knapsack" and not threat.ball.pointwise:
                assert y is not None
                budgets, clean_logits = self.knapsack_budgets(evaluate, x, y, threat)
                cfg = replace(cfg, budgets=budgets)
            else:
                with torch.no_grad():
                    clean_logits = evaluate(x)
            clean_probs = F.softmax(clean_logits, dim=1)
            target = y if loss == "redlr" else clean_probs
            assert target is not None
            x_adv, _ = run_distribution_attack(evaluate, x, target, cfg, start=lambda z: self.kl_start(z, shard),
                                               clip=est.clip_box(self.classifier, x.device), track=False,
                                               reducer=self.reducer)
        return x_adv.detach()

    def knapsack_budgets(self, evaluate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                         threat: ThreatSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-input budgets of the knapsack-informed solver: the batch's budget spent on the inputs cheapest to
        flip, by their first-order flip costs (one forward and backward pass); and the clean logits of that
        forward pass, detached (the inner loss's clean prediction, so that x is not evaluated twice)."""
        ball = threat.ball
        z = x.detach().requires_grad_(True)
        logits = evaluate(z)
        costs = first_order_flip_costs(logits, z, y, ball.dual)
        return knapsack_budgets(costs, ball.p, ball.eps, self.reducer), logits.detach()

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, shard: Shard = None) -> LossTerms:
        """The W-TRADES loss of one batch in train mode, differentiable in the parameters.

        :param x: Inputs on the estimator's device.
        :param y: Class indices (int64) on the same device.
        :param shard: (offset, global size) when ``x`` is this rank's slice of a global batch.
        """
        weights = self.cheapness_weights(x, y)
        x_adv = self.inner_maximize(x, y, shard)
        x_point = None if self.pointwise is None else self.inner_maximize(x, y, shard, self.pointwise, "kl")

        def mean_kl(kl: torch.Tensor) -> torch.Tensor:
            return (kl if weights is None else kl * weights).sum() / x.shape[0]

        self.set_train_mode()
        penalise = self.sensitivity_weight > 0 and self.threat.eps > 0
        x_in = x_adv.requires_grad_(True) if penalise else x_adv
        # Several DDP forwards before one backward are fine: each parameter's gradient hook still fires once.
        logits, logits_adv = self.forward(x, True), self.forward(x_in, True)
        if self.outer_loss == "ce":
            loss = F.cross_entropy(logits_adv, y)
        else:
            kl = trades_kl(logits, logits_adv)
            robust = mean_kl(kl)
            if penalise:
                robust = robust + self.sensitivity_weight * self.threat.eps * self.sensitivity(kl, x_in)
            loss = F.cross_entropy(logits, y) + self.beta * robust
        if x_point is not None:
            loss = loss + self.pointwise_beta * mean_kl(trades_kl(logits, self.forward(x_point, True)))
        return LossTerms(loss, x_adv.detach(), logits, logits_adv)

    def cheapness_weights(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Per-input weights of the KL terms that fall as the input's flip cost rises; None when λ = 0.

        w_i ∝ 1 + λ·exp(−c_i / eps) for inputs classified correctly, c_i their first-order flip cost (the knapsack's
        estimate, one pass in eval mode), and ∝ 1 for the others (a W_p attack has them for free, however smooth the
        model is there); scaled to mean 1 over the global batch, so the total KL weight stays β (+ β_pt). A W_p
        budget flips the low tail of the flip costs first: this puts the KL where that tail is. (On the robust CIFAR-10
        models of the experiments it moved nothing: at p = 2 the inputs it favours cost the attacker almost nothing,
        c_i², and W-AutoAttack at δ = 2/255 is decided near a flip cost of 5.5/255; docs/experiments/frontier.md.)
        """
        if self.cheapness_weight == 0:
            return None
        ball = self.threat.ball
        with est.eval_mode(self.classifier):
            z = x.detach().requires_grad_(True)
            costs = first_order_flip_costs(self.forward(z, False), z, y, ball.dual)
        scale = max(float(ball.eps), 1e-12)
        # Cost 0 (misclassified) and +inf (no gradient) get no extra weight: exp(-inf) = 0 handles the second.
        cheap = torch.where(costs > 0, torch.exp(-costs / scale), torch.zeros_like(costs))
        w = 1.0 + self.cheapness_weight * cheap
        totals = self.reducer.sum(torch.stack([w.sum(), w.new_tensor(float(w.numel()))]))
        return (w * (totals[1] / totals[0])).to(x.dtype).detach()

    def sensitivity(self, kl: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Υ of the per-sample KL at x' (:doc:`/maths`), differentiable in the parameters (double backprop).

        δ·Υ is the first-order gain of the KL from moving x' by a further δ in W_p: penalising it flattens the
        KL where the distributional attacker would push next.
        """
        (grad,) = torch.autograd.grad(kl.sum(), x_adv, create_graph=True)
        ball = self.threat.ball
        return ball.sensitivity(ball.dual_norms(grad)).to(kl.dtype)


def trades_kl(logits: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(f(x) ‖ f(x')) of TRADES' outer loss; the clean prediction is not detached (the gradient
    flows through it, as in TRADES' code, whose KLDivLoss(sum)/B is this summed over the batch over B)."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="none").sum(dim=1)
