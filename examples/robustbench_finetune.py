"""Fine-tune a RobustBench CIFAR-10 model with W-TRADES; clean, AutoAttack and W-PGD accuracy before and after.

On a machine with internet (robustbench downloads the weights once, into ``--model-dir``)::

    python -c "import torchvision; torchvision.datasets.CIFAR10('./data', train=True, download=True)"
    python examples/robustbench_finetune.py --model Addepalli2022Efficient_RN18 --model-dir ./models \\
        --data cifar10 --data-dir ./data --epochs 3 --device cuda

Offline, with a local checkpoint: copy the weights to ``<model_dir>/cifar10/Linf/<name>.pt`` (a state dict, also
accepted as ``{"state_dict": {"module.<key>": ...}}``; ``art_wdat.models.robustbench_checkpoint_path`` gives the
path) and the CIFAR-10 python batches to ``<data_dir>/cifar-10-batches-py``, then run the same command;
``load_robustbench`` reads the file and never touches the network. Any ``npz`` with ``x_train``/``y_train``/
``x_test``/``y_test`` works as data too (``--data npz:cifar10_subset.npz``: images channels first, uint8 0..255 or
float in [0, 1], integer labels)::

    python examples/robustbench_finetune.py --quick     # seconds, on the CPU: what tests/test_examples.py runs

``--quick`` needs neither internet nor data: it saves a random-weight ``Addepalli2022Efficient_RN18`` where
robustbench looks for it in a temporary ``model_dir``, loads it through the offline path, and fine-tunes it for
one epoch on 4 random images.

The schedule is ``art-wdat finetune``'s (``DEFAULT_RECIPE``: SGD, momentum 0.9, cosine decay; each flag
overrides one option), with 1,000 training images held out to choose the epoch kept. Expected run time on one
A100/H100-class GPU, for ``Addepalli2022Efficient_RN18`` (49,000 training images, batch 128, 5 inner steps):
about 1.5–2 minutes per epoch, plus under a minute per held-out measurement and for the evaluation of 1,000 test
images. **Estimated, not measured** (no GPU was at hand): one W-TRADES batch with the joint objective costs about
``2 · max_iter + 2`` = 12 forward-backward passes (the steps of its two inner maximisations, the clean forward for
the KL target, and the outer step), so an epoch is ~12 plain training epochs' worth of compute, and a CIFAR
ResNet-18 trains at roughly 5,000–8,000 images/s in fp32/TF32 on such a GPU (0.56 GFLOPs per forward, ~3× that per
forward-backward). WideResNet-28-10 entries (5.2 GFLOPs per forward) take about 10× longer. The per-epoch wall time
is printed (``time_s``), so the estimate is easy to check.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from fractions import Fraction

import numpy as np
import torch
from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent

from art_wdat import WassersteinDistributionalAttack
from art_wdat.cli.threads import add_threads_argument, set_threads
from art_wdat.training.recipe import DEFAULT_RECIPE, held_out_size, split_held_out
from art_wdat.training.trainer import WassersteinTRADESTrainer
from art_wdat.zoo import (
    build_zoo_architecture,
    load_robustbench,
    make_classifier,
    robustbench_checkpoint_path,
)
from art_wdat.zoo.data import load_dataset

QUICK_MODEL = "Addepalli2022Efficient_RN18"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=QUICK_MODEL, help="RobustBench cifar10/Linf model-zoo name")
    parser.add_argument("--model-dir", default="./models", help="robustbench's model folder")
    parser.add_argument("--data", default="cifar10", help="'cifar10' or 'npz:PATH' (see art_wdat.data)")
    parser.add_argument("--data-dir", default="./data", help="folder holding cifar-10-batches-py")
    parser.add_argument("--n-train", type=int, default=None, help="fine-tune on the first N training images")
    parser.add_argument("--n-eval", type=int, default=1000, help="evaluate on the first N test images")
    parser.add_argument("--eps", default="8/255", help="budget δ (W_p) and ε (pointwise), fractions allowed")
    parser.add_argument("--p", type=float, default=2.0, help="Wasserstein order of training and evaluation")
    parser.add_argument("--beta", type=float, default=6.0)
    parser.add_argument("--finetune", choices=("none", "reinit_last", "perturb"), default="none")
    # The schedule of `art-wdat finetune` (art_wdat.training.recipe.DEFAULT_RECIPE), option by option.
    parser.add_argument("--epochs", type=int, default=DEFAULT_RECIPE.epochs)
    parser.add_argument("--lr", type=float, default=DEFAULT_RECIPE.lr,
                        help="SGD learning rate (momentum 0.9, cosine decay)")
    parser.add_argument("--max-iter", type=int, default=DEFAULT_RECIPE.max_iter, help="inner steps while training")
    parser.add_argument("--val-split", type=float, default=None,
                        help="held-out training images that choose the epoch kept (default 1,000 or 10%%; 0: off)")
    parser.add_argument("--eval-iter", type=int, default=20, help="steps of the evaluation attacks")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_RECIPE.batch_size)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--checkpoint-dir", default=None, help="save (and --resume from) last.pt here")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="random-weight model, 4 random images (for tests)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train = args.n_eval = 4
        args.epochs, args.max_iter, args.eval_iter, args.batch_size, args.device = 1, 1, 2, 4, "cpu"
    return args


@contextlib.contextmanager
def quick_model_dir(name: str) -> Iterator[str]:
    """A temporary model_dir holding random weights for ``name`` where robustbench looks for its checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        path = robustbench_checkpoint_path(name, "cifar10", "Linf", model_dir=tmp)
        path.parent.mkdir(parents=True)
        torch.save(build_zoo_architecture(name, "cifar10", "Linf").state_dict(), path)
        yield tmp


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); random images with random labels in quick mode."""
    if args.quick:
        rng = np.random.default_rng(args.seed)
        x = rng.random((2 * args.n_train, 3, 32, 32), dtype=np.float32)
        y = rng.integers(0, 10, 2 * args.n_train)
        return x[:args.n_train], y[:args.n_train], x[args.n_train:], y[args.n_train:]
    x_train, y_train = load_dataset(args.data, args.data_dir, n_samples=args.n_train, split="train")
    x_test, y_test = load_dataset(args.data, args.data_dir, n_samples=args.n_eval, split="test")
    return x_train, y_train, x_test, y_test


def finetunable(name: str, model_dir: str, args: argparse.Namespace):
    """The zoo model as an ART classifier with the SGD optimizer W-TRADES fine-tunes it with."""
    zoo = load_robustbench(name, "cifar10", "Linf", model_dir=model_dir, device=args.device)
    model = zoo.model
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    return make_classifier(model, zoo.input_shape, zoo.nb_classes, clip_values=(0.0, 1.0), optimizer=optimizer,
                           device=args.device)


def evaluate(clf, x: np.ndarray, y: np.ndarray, eps: float, args: argparse.Namespace) -> dict[str, float]:
    """Clean accuracy, AutoAttack (APGD-CE, APGD-DLR; pointwise ℓ∞ eps) and W-PGD (W_p over ℓ∞, ReDLR) accuracy."""
    apgd = [AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=args.eval_iter,
                                         nb_random_init=1, batch_size=args.batch_size, loss_type=loss, verbose=False)
            for loss in ("cross_entropy", "difference_logits_ratio")]
    autoattack = AutoAttack(clf, norm=np.inf, eps=eps, eps_step=2 * eps, attacks=apgd, batch_size=args.batch_size)
    wpgd = WassersteinDistributionalAttack(clf, eps=eps, p=args.p, norm=np.inf, max_iter=args.eval_iter,
                                           batch_size=args.batch_size, verbose=False)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    x_aa = autoattack.generate(x, y)
    return {"clean": accuracy(clf, x, y), "autoattack": accuracy(clf, x_aa, y),
            "wpgd": accuracy(clf, wpgd.generate(x, y), y)}


def accuracy(clf, x: np.ndarray, y: np.ndarray) -> float:
    return float((clf.predict(x, batch_size=256).argmax(1) == y).mean())


def finetune(clf, x: np.ndarray, y: np.ndarray, eps: float, args: argparse.Namespace) -> list[dict]:
    """W-TRADES with the default recipe (the flags' epochs, lr, inner steps and batch size), the epoch kept chosen on a
    held-out part of the training images (the start weights if no epoch beats them)."""
    recipe = replace(DEFAULT_RECIPE, epochs=args.epochs, lr=args.lr, max_iter=args.max_iter,
                     batch_size=args.batch_size)
    (x_fit, y_fit), held_out = split_held_out(x, y, held_out_size(len(x), args.val_split))
    trainer = WassersteinTRADESTrainer(clf, eps=eps, p=args.p, norm=np.inf, beta=args.beta,
                                       eval_max_iter=args.eval_iter,
                                       finetune=None if args.finetune == "none" else args.finetune)
    history = trainer.fit(x_fit, y_fit, validation_data=held_out, recipe=recipe, checkpoint_dir=args.checkpoint_dir,
                          resume=args.resume, seed=args.seed, verbose=not args.quick)
    if trainer.selection is not None:
        print(trainer.selection.summary())
    return history


def markdown(results: dict[str, dict[str, float]], eps_text: str, p: float) -> str:
    lines = [f"| model | clean | AutoAttack (APGD-CE, APGD-DLR; ℓ∞ ε={eps_text}) | W-PGD (p={p:g}, ℓ∞, δ={eps_text}) |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {r['clean']:.3f} | {r['autoattack']:.3f} | {r['wpgd']:.3f} |"
              for name, r in results.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    eps = float(Fraction(args.eps))
    x_train, y_train, x_test, y_test = load_data(args)
    with quick_model_dir(args.model) if args.quick else contextlib.nullcontext(args.model_dir) as model_dir:
        clf = finetunable(args.model, model_dir, args)
    results = {"before": evaluate(clf, x_test, y_test, eps, args)}
    history = finetune(clf, x_train, y_train, eps, args)
    results["after W-TRADES"] = evaluate(clf, x_test, y_test, eps, args)
    epoch_times = ", ".join(f"{h['time_s']:.0f} s" for h in history)
    data = "random images" if args.quick else args.data
    print(f"{args.model} on {data}: fine-tuned {args.epochs} epoch(s) on {len(x_train)} images ({epoch_times} "
          f"per epoch), evaluated on {len(x_test)}\n")
    print(markdown(results, args.eps, args.p))
    results["history"] = history
    return results


if __name__ == "__main__":
    main()
