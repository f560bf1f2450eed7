"""The Wasserstein attack as the data-augmenting attack of ART's generic ``AdversarialTrainer``.

    python examples/art_adversarial_trainer.py --threads 1  # digits, offline
    python examples/art_adversarial_trainer.py --quick      # seconds: what tests/test_examples.py runs

Measured on a 2-core CPU machine: 13 s with ``--threads 1``, 151 s with the default (its 2 physical cores), which
oversubscribes a CPU that other jobs use as well.

A SmallCNN is trained plainly for a few epochs, then adversarially by
``art.defences.trainer.AdversarialTrainer(classifier, attacks=WassersteinDistributionalAttack(...), ratio=0.5)``.
Clean and W-PGD accuracy (p = 2, ground ℓ∞, ReDLR, one budget for the whole test set) are printed before and
after.

How this differs from W-TRADES (``art_wdat.trainer.WassersteinTRADESTrainer``, METHOD.md §7):

* **What is a distribution.** ``AdversarialTrainer`` calls ``attack.generate`` on a random ``ratio`` share of
  each mini-batch (``ceil(ratio·B)`` inputs), with the model being trained, so that sub-batch shares one budget
  δ; the rest of the batch stays clean. (Were the attack built on *another* classifier, ART would precompute
  ``attack.generate(x_train)`` once, before the first epoch: the whole training set would then be one
  distribution and its examples would never be refreshed.) W-TRADES attacks every input of the mini-batch,
  and the whole mini-batch is the distribution.
* **What is maximised and minimised.** Here the attack maximises its own loss (ReDLR by default: the budget
  goes to inputs still classified correctly) against the labels, and the model then takes one step of its own
  loss (CE) on the mix of clean and adversarial inputs: Madry-style training on a data set augmented by
  W-PGD. W-TRADES maximises KL(f(x) ‖ f(x')) against the clean prediction (no labels) and minimises
  CE(f(x), y) + β·KL(f(x) ‖ f(x')) over every pair, with the gradient flowing through both predictions; β
  trades clean accuracy against robustness.
* **Cost.** ``AdversarialTrainer`` goes through numpy twice per batch (``generate`` and ``fit``); W-TRADES keeps
  the batch on the device from the inner maximisation to the optimizer step.

Both put the model in eval mode for the attack (batch-norm statistics frozen) and in train mode for the step.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from art.defences.trainer import AdversarialTrainer

from art_wdat import WassersteinDistributionalAttack
from art_wdat.cli.threads import add_threads_argument, set_threads
from art_wdat.zoo import SmallCNN, make_classifier
from art_wdat.zoo.data import load_digits_split


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=0.1, help="W_2 budget δ over the ground ℓ∞ norm")
    parser.add_argument("--pretrain-epochs", type=int, default=5, help="plain epochs before adversarial training")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of AdversarialTrainer")
    parser.add_argument("--ratio", type=float, default=0.5, help="share of each batch replaced by W-PGD inputs")
    parser.add_argument("--train-iter", type=int, default=5, help="W-PGD iterations while training")
    parser.add_argument("--eval-iter", type=int, default=20, help="W-PGD iterations of the evaluation")
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-eval", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few hundred inputs, 1 epoch each (for tests)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.pretrain_epochs, args.epochs, args.train_iter, args.eval_iter = 3, 1, 2, 3
        args.n_train, args.n_eval, args.batch_size = 512, 64, 32
    return args


def evaluate(clf, x: np.ndarray, y: np.ndarray, eps: float, max_iter: int) -> tuple[float, float]:
    """(clean accuracy, W-PGD accuracy) with the whole of x as one distribution."""
    attack = WassersteinDistributionalAttack(clf, eps=eps, p=2, norm=np.inf, max_iter=max_iter, verbose=False)
    x_adv = attack.generate(x, y)
    return accuracy(clf, x, y), accuracy(clf, x_adv, y)


def accuracy(clf, x: np.ndarray, y: np.ndarray) -> float:
    return float((clf.predict(x, batch_size=256).argmax(1) == y).mean())


def main(argv: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
    args = parse_args(argv)
    set_threads(args.threads)
    np.random.seed(args.seed)  # AdversarialTrainer shuffles and picks the adversarial share with numpy
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_digits_split()
    x_train, y_train = x_train[:args.n_train], y_train[:args.n_train]
    x_test, y_test = x_test[:args.n_eval], y_test[:args.n_eval]

    clf = make_classifier(SmallCNN(1, 10, 8, width=16), (1, 8, 8), 10, lr=3e-3)
    clf.fit(x_train, y_train, nb_epochs=args.pretrain_epochs, batch_size=args.batch_size, verbose=False)
    results = {"before": evaluate(clf, x_test, y_test, args.eps, args.eval_iter)}

    # The attack is built on the classifier being trained, so AdversarialTrainer regenerates it every batch.
    augment = WassersteinDistributionalAttack(clf, eps=args.eps, p=2, norm=np.inf, max_iter=args.train_iter,
                                              verbose=False)
    trainer = AdversarialTrainer(clf, attacks=augment, ratio=args.ratio)
    trainer.fit(x_train, y_train, nb_epochs=args.epochs, batch_size=args.batch_size)
    results["after"] = evaluate(trainer.get_classifier(), x_test, y_test, args.eps, args.eval_iter)

    print(f"digits: AdversarialTrainer with W-PGD (p=2, ℓ∞, eps={args.eps}, ratio={args.ratio}), "
          f"{len(x_test)} test inputs\n")
    print("| model | clean accuracy | W-PGD accuracy |\n|---|---|---|")
    for name, (clean, robust) in results.items():
        print(f"| {name} AdversarialTrainer | {clean:.3f} | {robust:.3f} |")
    return results


if __name__ == "__main__":
    main()
