"""Clean, ART PGD and W-PGD accuracy side by side, with the wall time of W-PGD over PGD's.

    python examples/side_by_side.py --threads 1           # digits, offline
    python examples/side_by_side.py --data cifar10_subset.npz --epochs 15 --eps 1/255,2/255,4/255,8/255

``--data`` takes your own numpy archive: ``x_train``, ``y_train``, ``x_test``, ``y_test``, images channels first
(N, C, H, W), uint8 0..255 or float in [0, 1], integer labels (here a CIFAR-10 subset saved that way).

The digits run, measured on a 2-core CPU machine: 8 s with ``--threads 1``, 52 s with the default (its 2
physical cores).

A SmallCNN is trained plainly on the training split, then the test split is attacked with ART's
pointwise PGD (ε = eps) and with the distributional W-PGD and W-PGD-Budget (p = 2, ground ℓ∞, ReDLR,
one budget δ = eps for the whole test set), with the same iterations and batch size.
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent

from art_wdat import WassersteinDistributionalAttack
from art_wdat.cli.threads import add_threads_argument, set_threads
from art_wdat.zoo import SmallCNN, make_classifier
from art_wdat.zoo.data import load_digits_split, load_npz


def load(data: str):
    """(x_train, y_train, x_test, y_test) in [0, 1], channels first: scikit-learn's digits or an npz file."""
    return load_digits_split() if data == "digits" else load_npz(data)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", help="'digits' or an npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--eps", default="0.05,0.1,0.2", help="budgets, fractions allowed (8/255)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    x_train, y_train, x_test, y_test = load(args.data)
    torch.manual_seed(args.seed)
    model = SmallCNN(x_train.shape[1], 10, x_train.shape[-1], width=16)
    clf = make_classifier(model, x_train.shape[1:], 10, lr=3e-3)
    clf.fit(x_train, y_train, nb_epochs=args.epochs, batch_size=64, verbose=False)

    def acc(x_eval):
        return float((clf.predict(x_eval, batch_size=256).argmax(1) == y_test).mean())

    t = args.max_iter
    print(f"{args.data}: {len(x_test)} test inputs, clean accuracy {acc(x_test):.3f}, {t} iterations")
    print("| eps | ART PGD (pointwise) | W-PGD (p=2, ReDLR) | W-PGD-Budget (p=2, ReDLR) | time W-PGD / ART PGD |")
    print("|---|---|---|---|---|")
    rows = []
    for text in args.eps.split(","):
        eps = float(Fraction(text))
        pgd = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=1.875 * eps / t, max_iter=t,
                                       batch_size=args.batch_size, verbose=False)
        x_pgd, t_pgd = timed(pgd.generate, x_test, y_test)
        accs, t_w = {}, None
        for method in ("wpgd", "budget"):
            attack = WassersteinDistributionalAttack(clf, eps=eps, p=2, norm=np.inf, method=method, max_iter=t,
                                                     batch_size=args.batch_size, verbose=False)
            x_w, secs = timed(attack.generate, x_test, y_test)
            accs[method], t_w = acc(x_w), secs if t_w is None else t_w
        rows.append((eps, acc(x_pgd), accs["wpgd"], accs["budget"], t_w / t_pgd))
        print(f"| {text} | {rows[-1][1]:.3f} | {accs['wpgd']:.3f} | {accs['budget']:.3f} | {t_w / t_pgd:.2f} |")
    return rows


if __name__ == "__main__":
    main()
