"""Clean, ART PGD and W-PGD accuracy side by side on scikit-learn's digits (offline, ~10 s on 2 cores).

    python examples/digits_side_by_side.py [--quick]

A small CNN is trained on 1,400 digits; the remaining 397 are attacked with ART's pointwise PGD
(ε = eps) and with the distributional W-PGD and W-PGD-Budget (p = 2, ground ℓ∞, one budget δ = eps
for the whole test set).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from sklearn.datasets import load_digits

from art_wdat import WassersteinDistributionalAttack


def train_digits_cnn(x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> PyTorchClassifier:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 16, 10))
    clf = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                            clip_values=(0.0, 1.0), optimizer=torch.optim.Adam(model.parameters(), lr=3e-3))
    clf.fit(x, y, nb_epochs=epochs, batch_size=64, verbose=False)
    return clf


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, budgets and iterations")
    args = parser.parse_args(argv)
    d = load_digits()
    x, y = (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)
    clf = train_digits_cnn(x[:1400], y[:1400], epochs=2 if args.quick else 8)
    x_test, y_test = x[1400:], y[1400:]
    budgets, iters = ((0.1,), 5) if args.quick else ((0.05, 0.1, 0.2), 20)

    def acc(x_eval):
        return float((clf.predict(x_eval).argmax(1) == y_test).mean())

    rows = []
    print(f"clean accuracy: {acc(x_test):.3f}")
    print("| eps | ART PGD (pointwise) | W-PGD (p=2) | W-PGD-Budget (p=2) | time W-PGD / PGD |")
    print("|---|---|---|---|---|")
    for eps in budgets:
        pgd = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=1.875 * eps / iters, max_iter=iters,
                                       batch_size=128, verbose=False)
        t0 = time.perf_counter()
        acc_pgd = acc(pgd.generate(x_test, y_test))
        t_pgd = time.perf_counter() - t0
        accs, t_w = {}, 0.0
        for method in ("wpgd", "budget"):
            attack = WassersteinDistributionalAttack(clf, eps=eps, p=2, norm=np.inf, method=method, max_iter=iters,
                                                     batch_size=128, verbose=False)
            t0 = time.perf_counter()
            accs[method] = acc(attack.generate(x_test, y_test))
            t_w = time.perf_counter() - t0 if method == "wpgd" else t_w
        rows.append((eps, acc_pgd, accs["wpgd"], accs["budget"]))
        print(f"| {eps:g} | {acc_pgd:.3f} | {accs['wpgd']:.3f} | {accs['budget']:.3f} | {t_w / t_pgd:.2f} |")
    return rows


if __name__ == "__main__":
    main()
