"""One model, ART's PGD and AutoAttack next to the Wasserstein attack, as one Markdown table.

    python examples/art_side_by_side.py --threads 1         # digits, offline
    python examples/art_side_by_side.py --data cifar10_subset.npz --epochs 15 --eps 8/255
    python examples/art_side_by_side.py --quick             # seconds: what tests/test_examples.py runs

``--data`` takes your own numpy archive: ``x_train``, ``y_train``, ``x_test``, ``y_test``, images channels first
(N, C, H, W), uint8 0..255 or float in [0, 1], integer labels (here a CIFAR-10 subset saved that way).

The digits run, measured on a 2-core CPU machine: 10 s with ``--threads 1``, 30 s with the default (its 2
physical cores).

A SmallCNN is trained plainly on the training split; then the test split is attacked by

* ART's ``ProjectedGradientDescent`` (pointwise ℓ∞ ball of radius eps),
* ART's ``AutoAttack`` with a short list of attacks: APGD-CE and APGD-DLR instances (the strongest, cheapest
  part of AutoAttack; DeepFool and Square are left out),
* ``WassersteinDistributionalAttack`` at p = inf (the same pointwise threat) and at p = 2 (W-PGD and
  W-PGD-Budget, ground ℓ∞, ReDLR): one budget δ = eps shared by the whole test set.

All of them get the same ART ``PyTorchClassifier``; the table shows accuracy, the transport costs C_2 and
C_inf (= the largest ‖x'_i − x_i‖∞) the attack spent, and its wall time. Pointwise attacks spend up to eps
on every input (C_2 ≤ C_inf ≤ eps); the distributional ones spend C_2 ≤ eps unevenly (C_inf may exceed eps).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, ProjectedGradientDescent

from art_wdat import WassersteinDistributionalAttack
from art_wdat.cli.threads import add_threads_argument, set_threads
from art_wdat.zoo import SmallCNN, make_classifier
from art_wdat.zoo.data import load_digits_split, load_npz


@dataclass
class Row:
    """One line of the table."""

    attack: str
    threat: str
    accuracy: float
    cost_2: float
    cost_inf: float
    seconds: float


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_threads_argument(parser)
    parser.add_argument("--data", default="digits", help="'digits' or an npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--eps", default="0.1", help="the budget, as a number or a fraction (8/255)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-iter", type=int, default=20, help="iterations of every attack")
    parser.add_argument("--n-eval", type=int, default=None, help="attack only the first N test inputs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 epochs, 3 iterations, 48 inputs (for tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.max_iter, args.n_eval = 2, 3, 48
    return args


def load(data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), images channels first in [0, 1]."""
    if data == "digits":
        return load_digits_split()
    x_train, y_train, x_test, y_test = load_npz(data)
    if x_train is None:
        raise SystemExit(f"{data} has no x_train/y_train to train the model on")
    return x_train, y_train, x_test, y_test


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int):
    """A plainly trained SmallCNN wrapped as an ART PyTorchClassifier."""
    torch.manual_seed(seed)
    nb_classes = int(y.max()) + 1
    model = SmallCNN(x.shape[1], nb_classes, x.shape[-1], width=16)
    clf = make_classifier(model, x.shape[1:], nb_classes, lr=3e-3)
    clf.fit(x, y, nb_epochs=epochs, batch_size=64, verbose=False)
    return clf


def attacks(clf, eps: float, max_iter: int, batch_size: int) -> list[tuple[str, str, object]]:
    """(name, threat, attack) for every row, all on the same classifier and with the same iterations."""
    step = 1.875 * eps / max_iter  # the papers' step for W-PGD; PGD gets the same
    # APGD adapts its step itself; 2·eps is its initial step (Croce & Hein, 2020).
    apgd = [AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=max_iter,
                                         nb_random_init=1, batch_size=batch_size, loss_type=loss, verbose=False)
            for loss in ("cross_entropy", "difference_logits_ratio")]

    def wpgd(p: float, method: str = "wpgd") -> WassersteinDistributionalAttack:
        return WassersteinDistributionalAttack(clf, eps=eps, p=p, norm=np.inf, method=method, max_iter=max_iter,
                                               batch_size=batch_size, verbose=False)

    pointwise, wasserstein = "pointwise ℓ∞ (W_∞)", "W_2 over ℓ∞"
    return [
        ("ART PGD (CE)", pointwise, ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=step,
                                                             max_iter=max_iter, batch_size=batch_size,
                                                             verbose=False)),
        ("ART AutoAttack (APGD-CE, APGD-DLR)", pointwise,
         AutoAttack(clf, norm=np.inf, eps=eps, eps_step=2 * eps, attacks=apgd, batch_size=batch_size)),
        ("W-PGD p=∞ (ReDLR)", pointwise, wpgd(math.inf)),
        ("W-PGD p=2 (ReDLR)", wasserstein, wpgd(2.0)),
        ("W-PGD-Budget p=2 (ReDLR)", wasserstein, wpgd(2.0, "budget")),
    ]


def run(name: str, threat: str, attack, clf, x: np.ndarray, y: np.ndarray, seed: int) -> Row:
    """Attack (x, y) once and measure accuracy, the spent transport costs and the wall time."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    x_adv = attack.generate(x, y)
    seconds = time.perf_counter() - start
    norms = np.abs(x_adv.astype(np.float64) - x).reshape(len(x), -1).max(axis=1)
    return Row(name, threat, accuracy(clf, x_adv, y), float(np.sqrt(np.mean(norms ** 2))), float(norms.max()),
               seconds)


def accuracy(clf, x: np.ndarray, y: np.ndarray) -> float:
    return float((clf.predict(x, batch_size=256).argmax(1) == y).mean())


def markdown(rows: list[Row], eps_text: str) -> str:
    lines = [f"| attack (eps = {eps_text}) | threat | accuracy | C_2 spent | C_∞ spent | time (s) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.attack} | {r.threat} | {r.accuracy:.3f} | {r.cost_2:.4f} | {r.cost_inf:.4f} | {r.seconds:.1f} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    set_threads(args.threads)
    eps = float(Fraction(args.eps))
    x_train, y_train, x_test, y_test = load(args.data)
    x_test, y_test = x_test[:args.n_eval], y_test[:args.n_eval]
    clf = train(x_train, y_train, args.epochs, args.seed)
    rows = [Row("none (clean)", "-", accuracy(clf, x_test, y_test), 0.0, 0.0, 0.0)]
    for name, threat, attack in attacks(clf, eps, args.max_iter, args.batch_size):
        rows.append(run(name, threat, attack, clf, x_test, y_test, args.seed))
    print(f"{args.data}: {len(x_test)} test inputs, {args.max_iter} iterations per attack\n")
    print(markdown(rows, args.eps))
    return rows


if __name__ == "__main__":
    main()
