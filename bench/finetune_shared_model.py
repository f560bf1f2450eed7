"""Fine-tune a real adversarially trained CIFAR-10 model with W-TRADES and judge it with W-AutoAttack, end to end.

The model is one of the two robust networks in ``SHARED/models`` (stand-ins for RobustBench checkpoints), the data
the JPEG copy of CIFAR-10 in ``SHARED/data`` (``--shared``, default: the ``shared`` folder beside the repository);
the script stops with a message when they are absent. Any ``nn.Module`` on [0, 1] images works the same way (for a
RobustBench model: ``art_wdat.zoo.load_robustbench``). "Here" is the project's 2-core CPU machine (Intel Xeon), other
jobs running::

    python bench/finetune_shared_model.py --threads 2                  # resnet2b, 10,000 images, 1,000 judged
    python bench/finetune_shared_model.py --model cnn_a_adv --n-train 49000
    python bench/finetune_shared_model.py --quick --threads 1          # 256 images, 64 judged: 22 s here

It fine-tunes as ``art-wdat finetune`` does: ``WassersteinTRADESTrainer``'s defaults, the default
``FinetuneRecipe`` (the schedule of ``docs/experiments/finetune_recipe.md``) and a held-out split of the
fine-tuning images (1,000 or 10%) that chooses the epoch kept, or the start weights if no epoch beats them. Then it
evaluates the model before and after with the package's ``evaluate`` on test images never used for choosing: clean
accuracy, AutoAttack (the ``autoattack`` package) at ε = 2/255 and W-AutoAttack at δ = 2/255 (p = 2, ground ℓ∞).
``bench/finetune_recipe.py`` runs the command line itself on both shared models.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from art_wdat import WassersteinTRADESTrainer
from art_wdat.cli.threads import add_threads_argument, set_threads
from art_wdat.evaluation import EvaluationSettings, evaluate
from art_wdat.training.recipe import DEFAULT_RECIPE, held_out_size, split_held_out
from art_wdat.zoo import make_classifier

ROOT = Path(__file__).resolve().parents[1]
DELTA = 2 / 255


def load_split(shared: Path, n_train: int, n_test: int) -> tuple[np.ndarray, ...]:
    """Fine-tuning and test images in [0, 1] from the JPEG CIFAR-10 (stored by class: shuffled with seed 0)."""
    data = np.load(shared / "data" / "cifar10_jpeg.npz")
    train = np.random.default_rng(0).permutation(len(data["y_train"]))[:n_train]
    test = np.random.default_rng(0).permutation(len(data["y_test"]))[:n_test]
    return (data["x_train"][train] / np.float32(255), data["y_train"][train].astype(np.int64),
            data["x_test"][test] / np.float32(255), data["y_test"][test].astype(np.int64))


def load_model(shared: Path, name: str) -> torch.nn.Module:
    """``zoo.load(name)`` from ``SHARED/models/zoo.py`` (a file, not a package)."""
    sys.path.insert(0, str(shared / "models"))
    import zoo  # type: ignore[import-not-found]  # SHARED/models/zoo.py

    return zoo.load(name)


def judge(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, quick: bool) -> dict[str, float]:
    """Clean, AutoAttack at ε = δ and W-AutoAttack at δ, from the package's evaluation."""
    clf = make_classifier(model, (3, 32, 32), 10)
    settings = EvaluationSettings(max_iter=5 if quick else 100, autoattack_max_iter=5 if quick else None)
    result = evaluate(clf, x, y, [DELTA], attacks=("autoattack", "wauto"), settings=settings)
    attacks = result.budgets[0].attacks
    return {"clean": result.clean_accuracy, "AutoAttack": attacks["autoattack"].accuracy,
            "W-AutoAttack": attacks["wauto"].accuracy}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("resnet2b", "cnn_a_adv"), default="resnet2b")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="256 training and 64 test images, few iterations")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="folder with models/ and data/")
    add_threads_argument(ap)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    if not (args.shared / "models" / "zoo.py").is_file() or not (args.shared / "data" / "cifar10_jpeg.npz").is_file():
        raise SystemExit(f"bench/finetune_shared_model.py: {args.shared} must hold models/zoo.py and "
                         "data/cifar10_jpeg.npz (the shared folder beside the repository; pass --shared PATH)")
    recipe = DEFAULT_RECIPE
    if args.quick:
        args.n_train, args.n_test = 256, 64
        recipe = replace(recipe, epochs=1, max_iter=2)
    model = load_model(args.shared, args.model)
    x_train, y_train, x_test, y_test = load_split(args.shared, args.n_train, args.n_test)
    before = judge(model, x_test, y_test, args.quick)

    # The recipe brings its own optimizer; the classifier's is replaced by it.
    clf = make_classifier(model, (3, 32, 32), 10, optimizer=torch.optim.SGD(model.parameters(), lr=recipe.lr))
    (x_fit, y_fit), held_out = split_held_out(x_train, y_train, held_out_size(len(x_train)))
    trainer = WassersteinTRADESTrainer(clf, eps=DELTA, eval_max_iter=2 if args.quick else 20)
    trainer.fit(x_fit, y_fit, validation_data=held_out, recipe=recipe, seed=0)
    print(trainer.selection.summary())
    after = judge(model, x_test, y_test, args.quick)

    print(f"{args.model}, {args.n_train} fine-tuning images, {args.n_test} test images, δ = ε = 2/255 (p = 2, ℓ∞)")
    for key in before:
        print(f"  {key:13s} {before[key]:.3f} -> {after[key]:.3f} ({100 * (after[key] - before[key]):+.1f} points)")
    return {"before": before, "after": after}


if __name__ == "__main__":
    main()
