"""The offline demo pipeline behind ``art-wdat demo`` (the command line stays thin).

1. scikit-learn's 8x8 digits (shipped with scikit-learn: no download), a fixed stratified split;
2. a :class:`~art_wdat.zoo.SmallCNN` trained from scratch with pointwise TRADES
   (:class:`~art_wdat.training.WassersteinTRADESTrainer` with ``p = inf``);
3. the side-by-side evaluation (:func:`~art_wdat.evaluation.evaluate`);
4. a W-TRADES fine-tune (``p = 2``) of that model;
5. the evaluation again, a before/after table, and report.json, report.md, curve.png (accuracy per attack at the
   evaluated budgets) and knapsack_curve.png (the knapsack's whole accuracy-versus-budget curve, one line per p);
6. where the run falls against the README's ranges over seeds and torch thread counts (:mod:`art_wdat.cli.ranges`).

Every random draw is seeded from ``seed``: on the CPU, with the same number of torch threads, two runs
give the same numbers (wall times aside). The library never prints: progress goes to tqdm bars (stderr),
and the caller decides what to do with the text of the report (``echo``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from art_wdat.cli.ranges import Placement, load_reference, place
from art_wdat.core.engine import StepMethod
from art_wdat.evaluation import (
    ATTACK_NAMES,
    EvaluationResult,
    EvaluationSettings,
    compare_markdown,
    evaluate,
    format_order,
    json_safe,
)
from art_wdat.training.checkpoint import seed_everything
from art_wdat.training.finetune import FinetuneMode

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

    from art_wdat.training.objective import InnerLoss

logger = logging.getLogger(__name__)

REPORT_JSON, REPORT_MD, CURVE_PNG = "report.json", "report.md", "curve.png"
KNAPSACK_PNG = "knapsack_curve.png"
LABELS = ("TRADES", "W-TRADES fine-tune")


@dataclass(frozen=True)
class DemoConfig:
    """Every setting of the demo (stored in report.json).

    :ivar seed: Seed of the model initialisation, training, fine-tuning and attacks.
    :ivar width: Channels of the SmallCNN's first block.
    :ivar n_train: Training images used (None: all 1,347 of the split).
    :ivar n_eval: Test images evaluated (None: all 450 of the split).
    :ivar train_eps: ℓ∞ radius of the pointwise TRADES training.
    :ivar train_epochs: TRADES epochs from scratch.
    :ivar train_iter: Inner PGD steps of TRADES and W-TRADES.
    :ivar lr: Adam learning rate of the TRADES training.
    :ivar beta: TRADES/W-TRADES weight of the KL term.
    :ivar batch_size: Mini-batch size of training (= the distribution of each W-TRADES inner attack).
    :ivar finetune_p: Wasserstein order of the fine-tune.
    :ivar finetune_eps: Its budget δ.
    :ivar finetune_epochs: Its epochs.
    :ivar finetune_lr: Its Adam learning rate (smaller: a fine-tune, not a re-training).
    :ivar finetune_mode: The trainer's ``finetune`` protocol (None, "reinit_last", "perturb").
    :ivar finetune_method: The inner solver of the fine-tune: "budget" (W-PGD-Budget) or "wpgd". "budget" is the
        default because in a sweep on this demo (seed 0; δ 0.05–0.15, β 3–6, batch 64–128) it was the one
        W-TRADES variant that raised W-PGD and W-PGD-Budget accuracy at most budgets; with "wpgd" they fell.
    :ivar finetune_inner_loss: The inner loss of the fine-tune ("rekl", chosen in the same sweep).
    :ivar finetune_pointwise_beta: The weight of the joint objective's pointwise term: 0, the W-TRADES loss alone
        (the demo predates the CIFAR-10 study that chose the trainer's defaults, docs/experiments/wtrades.md, and
        keeps its one inner maximisation per step).
    :ivar budgets: Evaluation budgets δ (ε for the pointwise attacks).
    :ivar p: Wasserstein order of the evaluation.
    :ivar eval_iter: Iterations of every evaluation attack.
    """

    seed: int = 0
    width: int = 32
    n_train: int | None = None
    n_eval: int | None = None
    train_eps: float = 0.1
    train_epochs: int = 15
    train_iter: int = 10
    lr: float = 3e-3
    beta: float = 6.0
    batch_size: int = 64
    finetune_p: float = 2.0
    finetune_eps: float = 0.1
    finetune_epochs: int = 5
    finetune_lr: float = 3e-4
    finetune_mode: FinetuneMode | None = None
    finetune_method: StepMethod = "budget"
    finetune_inner_loss: InnerLoss = "rekl"
    finetune_pointwise_beta: float = 0.0
    budgets: tuple = (0.05, 0.1, 0.15)
    p: float = 2.0
    eval_iter: int = 20

    @classmethod
    def quick(cls, seed: int = 0) -> DemoConfig:
        """A few seconds' version for tests: fewer images, epochs and iterations (~75-85% clean accuracy)."""
        return cls(seed=seed, width=8, n_train=512, n_eval=96, train_epochs=4, train_iter=2, lr=1e-2,
                   finetune_epochs=1, budgets=(0.05, 0.15), eval_iter=3)


@dataclass
class DemoReport:
    """What the demo produced.

    :ivar before: Evaluation of the TRADES model.
    :ivar after: Evaluation after the W-TRADES fine-tune.
    :ivar table: The before/after Markdown table.
    :ivar config: The :class:`DemoConfig` as a dict.
    :ivar history: Training records: {"trades": [...], "wtrades": [...]} (the trainer's per-epoch dicts).
    :ivar seconds: Wall time of each stage and the total.
    :ivar files: Paths written, by kind ("json", "markdown", "png", "knapsack_png").
    :ivar settings: "default", "quick" or "custom".
    :ivar placement: Where the run falls against the README's ranges for its settings (None when none are
        shipped for them: custom settings).
    """

    before: EvaluationResult
    after: EvaluationResult
    table: str
    config: dict
    history: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    settings: str = "custom"
    placement: Placement | None = None

    def __repr__(self) -> str:
        """One line: settings, seed, clean and strongest-attack accuracy before → after, time, placement."""
        last = self.after.budgets[-1] if self.after.budgets else None
        worst = ""
        if last is not None and last.best_attack is not None:
            before = {b.budget: b for b in self.before.budgets}.get(last.budget)
            was = before.accuracy(last.best_attack) if before is not None else math.nan
            name = ATTACK_NAMES.get(last.best_attack, last.best_attack)
            worst = f", {name} at δ={last.budget:g} {was:.4f} → {last.accuracy(last.best_attack):.4f}"
        placed = ""
        if self.placement is not None:
            placed = f", {self.placement.inside} of {self.placement.total} cells in range"
        return (f"DemoReport({self.settings} settings, seed {self.config.get('seed')}: clean "
                f"{self.before.clean_accuracy:.4f} → {self.after.clean_accuracy:.4f}{worst}, "
                f"{self.seconds.get('total', math.nan):.1f} s{placed})")

    def to_dict(self) -> dict:
        """JSON-safe dict (see :meth:`EvaluationResult.to_dict`)."""
        return json_safe({"config": self.config, "settings": self.settings, "labels": list(LABELS),
                          "before": self.before.to_dict(), "after": self.after.to_dict(), "table": self.table,
                          "history": self.history, "seconds": self.seconds,
                          "placement": None if self.placement is None else self.placement.to_dict()})

    def to_json(self, indent: int = 2) -> str:
        """The report as strict JSON."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> DemoReport:
        """Read back a report.json (``files`` is not stored)."""
        data = json.loads(text)
        placement = data.get("placement")
        return cls(before=EvaluationResult.from_dict(data["before"]), after=EvaluationResult.from_dict(data["after"]),
                   table=data["table"], config=data["config"], history=data.get("history", {}),
                   seconds=data.get("seconds", {}), settings=data.get("settings", "custom"),
                   placement=Placement(**placement) if placement else None)

    def to_markdown(self) -> str:
        """report.md: the before/after table, then each full evaluation."""
        cfg = self.config
        lines = ["# art-wdat demo", "",
                 f"SmallCNN on scikit-learn digits: pointwise TRADES (ℓ∞ ε = {cfg['train_eps']:g}, "
                 f"{cfg['train_epochs']} epochs), then W-TRADES fine-tune (p = {format_order(cfg['finetune_p'])}, "
                 f"δ = {cfg['finetune_eps']:g}, inner solver {cfg['finetune_method']}, "
                 f"{cfg['finetune_epochs']} epochs). Seed {cfg['seed']}; "
                 f"total {self.seconds.get('total', math.nan):.1f} s.", "", "## Before / after", "", self.table,
                 self.placement_text(), "",
                 self.before.to_markdown(title=f"{LABELS[0]} model"), self.after.to_markdown(title=f"{LABELS[1]}")]
        return "\n".join(lines)

    def placement_text(self) -> str:
        """Where the run falls against the README's ranges, or why it is not compared."""
        if self.placement is not None:
            return self.placement.summary()
        return (f"No reference ranges for these ({self.settings}) settings: the README's are for the default "
                "settings (and --quick).")


# --------------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------------


def load_demo_data(config: DemoConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits split (fixed, seed 0, so that every seed sees the same data), cut to n_train / n_eval."""
    from art_wdat.zoo.data import load_digits_split

    x_train, y_train, x_test, y_test = load_digits_split(test_size=0.25, seed=0)
    return x_train[:config.n_train], y_train[:config.n_train], x_test[:config.n_eval], y_test[:config.n_eval]


def train_demo_model(config: DemoConfig, x_train: np.ndarray, y_train: np.ndarray, verbose: bool = False
                     ) -> tuple[PyTorchClassifier, list]:
    """A SmallCNN trained from scratch with pointwise TRADES (the trainer with p = inf).

    :return: (the ART classifier, the trainer's per-epoch history).
    """
    from art_wdat.training.trainer import WassersteinTRADESTrainer
    from art_wdat.zoo import SmallCNN, make_classifier

    seed_everything(config.seed)
    model = SmallCNN(in_channels=1, nb_classes=10, image_size=8, width=config.width)
    classifier = make_classifier(model, (1, 8, 8), 10, clip_values=(0.0, 1.0), lr=config.lr)
    trainer = WassersteinTRADESTrainer(classifier, eps=config.train_eps, p=math.inf, norm=np.inf, beta=config.beta,
                                       max_iter=config.train_iter)
    history = trainer.fit(x_train, y_train, batch_size=config.batch_size, nb_epochs=config.train_epochs,
                          seed=config.seed, verbose=verbose)
    return trainer.get_classifier(), list(history)


def finetune_demo_model(classifier: PyTorchClassifier, config: DemoConfig, x_train: np.ndarray, y_train: np.ndarray,
                        verbose: bool = False) -> tuple[PyTorchClassifier, list]:
    """W-TRADES fine-tune (p = ``finetune_p``) of ``classifier``'s model with a fresh Adam at ``finetune_lr``.

    The model is changed in place; the returned classifier wraps it with the new optimizer.
    """
    from art_wdat.training.trainer import WassersteinTRADESTrainer
    from art_wdat.zoo import clip_pair, make_classifier

    tuned = make_classifier(classifier.model, classifier.input_shape, classifier.nb_classes,
                            clip_values=clip_pair(classifier.clip_values), lr=config.finetune_lr)
    trainer = WassersteinTRADESTrainer(tuned, eps=config.finetune_eps, p=config.finetune_p, norm=np.inf,
                                       beta=config.beta, max_iter=config.train_iter, method=config.finetune_method,
                                       inner_loss=config.finetune_inner_loss,
                                       pointwise_beta=config.finetune_pointwise_beta,
                                       finetune=config.finetune_mode)
    history = trainer.fit(x_train, y_train, batch_size=config.batch_size, nb_epochs=config.finetune_epochs,
                          seed=config.seed + 1, verbose=verbose)
    return trainer.get_classifier(), list(history)


def evaluate_demo_model(classifier: PyTorchClassifier, config: DemoConfig, x: np.ndarray, y: np.ndarray, label: str,
                        verbose: bool = False) -> EvaluationResult:
    """The side-by-side evaluation with the demo's budgets and settings.

    AutoAttack (custom version) runs ``eval_iter`` iterations too, not the package's 100: at 100 the evaluation
    of the 450 digits took 206 s instead of 83 s (AutoAttack 5-7 s per budget at 20), measured on a shared,
    loaded 2-core machine, one thread. The report's note says how many iterations ran.
    """
    settings = EvaluationSettings(max_iter=config.eval_iter, batch_size=128, autoattack_max_iter=config.eval_iter)
    return evaluate(classifier, x, y, list(config.budgets), p=config.p, norm=np.inf, seed=config.seed,
                    verbose=verbose, settings=settings, meta={"model": label, "dataset": "digits"})


def write_report(report: DemoReport, out_dir: str | os.PathLike) -> dict:
    """Write report.json, report.md, curve.png and knapsack_curve.png to ``out_dir``; return their paths.

    knapsack_curve.png needs both evaluations' curves (W-AutoAttack ran); without them it is not written.
    """
    from art_wdat.evaluation.plotting import plot_accuracy, plot_knapsack_curve

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / REPORT_JSON, "markdown": out / REPORT_MD, "png": out / CURVE_PNG}
    files["json"].write_text(report.to_json(), encoding="utf-8")
    files["markdown"].write_text(report.to_markdown(), encoding="utf-8")
    plot_accuracy({LABELS[0]: report.before, LABELS[1]: report.after}, files["png"],
                  title="art-wdat demo: accuracy against budget (digits)")
    if report.before.curve is not None and report.after.curve is not None:
        files["knapsack_png"] = plot_knapsack_curve({LABELS[0]: report.before, LABELS[1]: report.after},
                                                    out / KNAPSACK_PNG,
                                                    title="art-wdat demo: the knapsack's whole curve (digits)")
    return {k: str(v) for k, v in files.items()}


# --------------------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------------------


class _Stages:
    """Times each stage of the demo and says when it is done (``seconds`` ends in report.json)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.seconds: dict = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = fn()
        self.seconds[name] = time.perf_counter() - start
        self.say(f"[{sum(self.seconds.values()):6.1f} s] {name} done ({self.seconds[name]:.1f} s)")
        return value


def _resolve_config(config: DemoConfig | None, seed: int, quick: bool) -> tuple[DemoConfig, str]:
    """The configuration run_demo uses (``seed`` replaces its seed) and its kind: custom, quick or default."""
    kind = "custom" if config is not None else ("quick" if quick else "default")
    base = config if config is not None else (DemoConfig.quick(seed) if quick else DemoConfig())
    return replace(base, seed=seed), kind


def run_demo(out_dir: str | os.PathLike = "art-wdat-out", *, seed: int = 0, quick: bool = False,
             verbose: bool = True, config: DemoConfig | None = None,
             echo: Callable[[str], None] | None = None) -> DemoReport:
    """Train, evaluate, fine-tune, evaluate again; write the report files to ``out_dir``.

    :param out_dir: Folder for report.json, report.md, curve.png and knapsack_curve.png (created).
    :param seed: Seed of everything random.
    :param quick: Use :meth:`DemoConfig.quick` (seconds; for tests).
    :param verbose: tqdm progress bars.
    :param config: Full configuration; overrides ``quick`` (its seed is replaced by ``seed``).
    :param echo: Called with each stage's text (the CLI passes ``print``); None stays silent.
    :return: The report, with the paths it wrote in ``files``.
    """
    config, kind = _resolve_config(config, seed, quick)
    stages = _Stages(echo or (lambda _text: None))
    begin = time.perf_counter()
    x_train, y_train, x_test, y_test = load_demo_data(config)
    stages.say(f"digits: {len(x_train)} training and {len(x_test)} test images; {kind} settings, seed {seed}")
    classifier, trades_history = stages.run("TRADES training",
                                            lambda: train_demo_model(config, x_train, y_train, verbose))
    before = stages.run("evaluation (TRADES)",
                        lambda: evaluate_demo_model(classifier, config, x_test, y_test, LABELS[0], verbose))
    tuned, wtrades_history = stages.run("W-TRADES fine-tune",
                                        lambda: finetune_demo_model(classifier, config, x_train, y_train, verbose))
    after = stages.run("evaluation (W-TRADES)",
                       lambda: evaluate_demo_model(tuned, config, x_test, y_test, LABELS[1], verbose))
    stages.seconds["total"] = time.perf_counter() - begin
    report = DemoReport(before=before, after=after, table=compare_markdown(before, after, LABELS),
                        config=_config_dict(config), history={"trades": trades_history, "wtrades": wtrades_history},
                        seconds=stages.seconds, settings=kind)
    reference = load_reference(kind, report.config) if kind != "custom" else None
    report.placement = place(before, after, reference) if reference is not None else None
    report.files = write_report(report, out_dir)
    return report


def _config_dict(config: DemoConfig) -> dict:
    data = asdict(config)
    data["budgets"] = list(config.budgets)
    data["torch_threads"] = torch.get_num_threads()
    return data
