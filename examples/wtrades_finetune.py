"""W-TRADES fine-tuning of a TRADES-trained CNN, against a pointwise-TRADES fine-tune of the same model.

1. Pre-train a small CNN with pointwise TRADES (``WassersteinTRADESTrainer`` with ``p=inf``).
2. Fine-tune copies of it (a) with W-TRADES (p=2, ground ℓ∞) and (b) with pointwise TRADES (the control), same
   eps, optimizer, schedule, fine-tuning protocol and seed.
3. Report clean, AutoAttack-style (ART's APGD-CE then APGD-DLR, worst case per input) and W-PGD (p=2, ℓ∞, ReDLR)
   accuracy on the test images before and after.
4. Time one training epoch of W-TRADES against ART's ``AdversarialTrainerTRADESPyTorch`` with a
   ``ProjectedGradientDescent`` of the same number of steps, side by side on the same data, model and batch size.

Runs on scikit-learn's digits by default, or on your own images with ``--data PATH.npz``: a numpy archive with
``x_train``, ``y_train``, ``x_test``, ``y_test`` (images channels first, (N, C, H, W) with H = W, uint8 0..255 or
float in [0, 1]; integer labels 0..K-1), for instance a CIFAR-10 subset saved that way. ``--quick`` is a
seconds-long smoke run (512 training and 128 test images, a few iterations; on digits it is what the tests run)::

    python examples/wtrades_finetune.py --threads 1                            # digits
    python examples/wtrades_finetune.py --data cifar10_subset.npz --threads 1  # eps 4/255, a narrow CNN
    python examples/wtrades_finetune.py --quick

On a 4,660/846-image CIFAR-10 subset (the first images of each CIFAR-10 batch file) the second command took
8.5 minutes on a 2-core CPU machine with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from art.attacks.evasion import AutoProjectedGradientDescent, ProjectedGradientDescent
from art.defences.trainer import AdversarialTrainerTRADESPyTorch
from art.estimators.classification import PyTorchClassifier

from art_wdat.attacks import EPS_STEP_RATIO, WassersteinDistributionalAttack
from art_wdat.cli.threads import add_threads_argument, set_threads
from art_wdat.training.trainer import WassersteinTRADESTrainer
from art_wdat.zoo import SmallCNN
from art_wdat.zoo.data import load_digits_split, load_npz

#: W-PGD on ReKL without the joint pointwise term (the trainer's defaults before docs/experiments/wtrades.md).
W_TRADES_ALONE = {"method": "wpgd", "inner_loss": "rekl", "pointwise_beta": 0.0}


@dataclass
class Settings:
    """One experiment; the presets below fill it per data set."""

    data: str  # "digits" or the path of an npz
    eps: float
    n_train: int
    n_test: int
    width: int
    pre_epochs: int
    ft_epochs: int
    pre_lr: float = 1e-3
    ft_lr: float = 3e-4
    beta: float = 6.0
    max_iter: int = 10
    batch_size: int = 64
    finetune: str | None = None  # "perturb"/"reinit_last" did not help these small CNNs (tests/test_finetune.py)
    weight_noise: float = 0.01
    eval_iter: int = 50
    timing_n: int = 512
    seed: int = 0
    nb_classes: int = 10  # set from the labels by run()


PRESETS = {
    # An npz of CIFAR-like images, all of it, with a narrow CNN: 8.5 minutes for a 4,660/846-image CIFAR-10 subset on
    # a 2-core CPU machine with --threads 1.
    "npz": dict(eps=4 / 255, n_train=10**9, n_test=10**9, width=8, pre_epochs=20, ft_epochs=5, timing_n=1024),
    "digits": dict(eps=0.1, n_train=10**9, n_test=10**9, width=16, pre_epochs=20, ft_epochs=5),
}
#: --quick, over either preset. Small but trained: 1 epoch of 256 digits left a constant model (0.1172 in every
#: cell). 3 s on digits, 1 thread.
QUICK = dict(n_train=512, n_test=128, width=8, pre_epochs=10, pre_lr=3e-3, ft_epochs=1, max_iter=2, eval_iter=3,
             timing_n=64)


def settings_for(data: str, quick: bool) -> Settings:
    """The preset of ``data`` ("digits" or an npz path), shrunk by ``QUICK`` for a smoke run."""
    preset = PRESETS["digits" if data == "digits" else "npz"]
    return Settings(data=data, **{**preset, **(QUICK if quick else {})})


def load(settings: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) in [0, 1], float32, subsampled to the settings' sizes (seeded)."""
    if settings.data == "digits":
        x_tr, y_tr, x_te, y_te = load_digits_split(test_size=0.25, seed=0)
    else:  # uint8 images are divided by 255; bad arrays are a ValueError naming the key
        x_tr, y_tr, x_te, y_te = load_npz(settings.data)
        if x_tr is None or y_tr is None:
            raise ValueError(f"--data {settings.data} has no x_train/y_train: this example trains a model")
    if settings.n_train < len(x_tr):  # a seeded subsample; the whole set keeps its order
        tr = np.random.default_rng(settings.seed).permutation(len(x_tr))[:settings.n_train]
        x_tr, y_tr = x_tr[tr], y_tr[tr]
    return x_tr, y_tr.astype(np.int64), x_te[:settings.n_test], y_te[:settings.n_test].astype(np.int64)


def classifier(settings: Settings, shape: tuple, lr: float, state: dict | None = None) -> PyTorchClassifier:
    torch.manual_seed(settings.seed)
    model = SmallCNN(shape[0], settings.nb_classes, shape[1], width=settings.width)
    if state is not None:
        model.load_state_dict(state)
    return PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=shape, nb_classes=settings.nb_classes,
                             clip_values=(0.0, 1.0), optimizer=torch.optim.Adam(model.parameters(), lr=lr))


def evaluate(clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray, settings: Settings) -> dict:
    """Clean, AutoAttack-style (APGD-CE + APGD-DLR) and W-PGD (p=2, ℓ∞, ReDLR) accuracy."""
    clean = float((clf.predict(x, batch_size=256).argmax(1) == y).mean())
    survive = np.ones(len(x), dtype=bool)
    for loss in ("cross_entropy", "difference_logits_ratio"):
        apgd = AutoProjectedGradientDescent(clf, norm=np.inf, eps=settings.eps, eps_step=2 * settings.eps,
                                            max_iter=settings.eval_iter, nb_random_init=1, batch_size=256,
                                            loss_type=loss, verbose=False)
        survive &= clf.predict(apgd.generate(x, y), batch_size=256).argmax(1) == y
    wpgd = WassersteinDistributionalAttack(clf, eps=settings.eps, p=2, norm=np.inf, loss="redlr",
                                           max_iter=settings.eval_iter, batch_size=256, verbose=False)
    wpgd.generate(x, y)
    res = wpgd.last_result_
    return {"clean": clean, "autoattack": float(survive.mean()), "wpgd": float(res.accuracy[res.best_iteration])}


def train(clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray, settings: Settings, p: float, epochs: int,
          finetune: str | None, seed: int) -> WassersteinTRADESTrainer:
    # The W-TRADES loss alone (W-PGD on ReKL, no pointwise term): the configuration this example's numbers measure.
    trainer = WassersteinTRADESTrainer(clf, eps=settings.eps, p=p, beta=settings.beta, max_iter=settings.max_iter,
                                       finetune=finetune, weight_noise=settings.weight_noise, **W_TRADES_ALONE)
    trainer.fit(x, y, batch_size=settings.batch_size, nb_epochs=epochs, seed=seed, verbose=False)
    return trainer


def epoch_times(state: dict, x: np.ndarray, y: np.ndarray, settings: Settings) -> dict:
    """Seconds for one epoch of ART's TRADES (PGD, same steps) and of W-TRADES (p=2), same data/model/batch."""
    x, y = x[:settings.timing_n], y[:settings.timing_n]
    shape = x.shape[1:]
    art_clf = classifier(settings, shape, settings.ft_lr, state)
    pgd = ProjectedGradientDescent(art_clf, norm=np.inf, eps=settings.eps,
                                   eps_step=EPS_STEP_RATIO * settings.eps / settings.max_iter,
                                   max_iter=settings.max_iter, batch_size=settings.batch_size, verbose=False)
    art_trainer = AdversarialTrainerTRADESPyTorch(art_clf, pgd, beta=settings.beta)
    ours = WassersteinTRADESTrainer(classifier(settings, shape, settings.ft_lr, state), eps=settings.eps, p=2.0,
                                    beta=settings.beta, max_iter=settings.max_iter, **W_TRADES_ALONE)
    times = {"art_trades_s": [], "wtrades_s": []}
    for _ in range(2):  # alternate, so that load from other processes hits both alike; keep the faster of each
        start = time.perf_counter()
        art_trainer.fit(x, y, batch_size=settings.batch_size, nb_epochs=1)
        times["art_trades_s"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ours.fit(x, y, batch_size=settings.batch_size, nb_epochs=1, verbose=False)
        times["wtrades_s"].append(time.perf_counter() - start)
    out = {k: min(v) for k, v in times.items()}
    out["ratio"] = out["wtrades_s"] / out["art_trades_s"]
    out["n"] = len(x)
    return out


def run(settings: Settings) -> dict:
    x_tr, y_tr, x_te, y_te = load(settings)
    settings = replace(settings, nb_classes=int(max(y_tr.max(), y_te.max())) + 1)
    shape = x_tr.shape[1:]
    print(f"data={settings.data}: {len(x_tr)} train / {len(x_te)} test images {shape}, eps={settings.eps:.4g}")
    pre = classifier(settings, shape, settings.pre_lr)
    start = time.perf_counter()
    train(pre, x_tr, y_tr, settings, np.inf, settings.pre_epochs, None, settings.seed)
    print(f"pre-trained with TRADES for {settings.pre_epochs} epochs in {time.perf_counter() - start:.0f}s")
    state = copy.deepcopy(pre.model.state_dict())
    results = {"settings": asdict(settings), "pretrained": evaluate(pre, x_te, y_te, settings)}
    for name, p in (("wtrades_p2", 2.0), ("trades_control", np.inf)):
        clf = classifier(settings, shape, settings.ft_lr, state)
        start = time.perf_counter()
        trainer = train(clf, x_tr, y_tr, settings, p, settings.ft_epochs, settings.finetune, settings.seed + 1)
        results[name] = evaluate(clf, x_te, y_te, settings)
        results[name]["epoch_s"] = (time.perf_counter() - start) / settings.ft_epochs
        results[name]["train_loss"] = trainer.history[-1]["loss"]
    results["timing"] = epoch_times(state, x_tr, y_tr, settings)
    return results


def show(results: dict) -> None:
    print("\n| model | clean | AutoAttack-style | W-PGD (p=2, ℓ∞) |\n|---|---|---|---|")
    for name in ("pretrained", "wtrades_p2", "trades_control"):
        r = results[name]
        print(f"| {name} | {r['clean']:.4f} | {r['autoattack']:.4f} | {r['wpgd']:.4f} |")
    t = results["timing"]
    print(f"\nepoch on {t['n']} images: W-TRADES {t['wtrades_s']:.2f}s, ART TRADES (PGD) {t['art_trades_s']:.2f}s, "
          f"ratio {t['ratio']:.2f}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", metavar="PATH.npz",
                        help="an npz with x_train, y_train, x_test, y_test (default: scikit-learn's digits)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run (512 training, 128 test images)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.data != "digits" and not Path(args.data).is_file():
        parser.error(f"--data: no file {args.data} (an npz with x_train, y_train, x_test, y_test, or 'digits')")
    logging.basicConfig(level=logging.WARNING)
    set_threads(args.threads)
    results = run(settings_for(args.data, args.quick))
    show(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
