"""The ``art-wdat`` commands: ``demo``, ``evaluate`` and ``finetune``.

Thin by design: the work is in :mod:`art_wdat.cli.demo`, :mod:`art_wdat.evaluation` and the trainer, imported
inside each command so that ``--help`` is instant. ``evaluate`` and ``finetune`` also run under ``torchrun``:
evaluate shares the test images out among the ranks and reports on all of them with one budget; finetune
trains on global batches of ``--batch-size`` × ranks; rank 0 alone prints and writes.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from art_wdat.cli import checks, loading
from art_wdat.cli.parser import (
    DEFAULT_BUDGETS,
    DEFAULT_IMAGE_BUDGETS,
    PROG,
    parse_budgets,
)
from art_wdat.cli.threads import set_threads
from art_wdat.training.recipe import DEFAULT_RECIPE

if TYPE_CHECKING:
    from art_wdat.evaluation import EvaluationResult
    from art_wdat.training.recipe import FinetuneRecipe
    from art_wdat.training.trainer import WassersteinTRADESTrainer


def _threads_for(args: argparse.Namespace) -> int | None:
    """--threads, else 1 for the tiny demo model (as ``demo`` does), else None: the physical cores."""
    if args.threads is not None:
        return args.threads
    return 1 if args.model == loading.DEMO_MODEL else None


def cmd_demo(args: argparse.Namespace) -> int:
    """``art-wdat demo``: the offline main job."""
    from art_wdat.cli.demo import run_demo

    set_threads(args.threads if args.threads is not None else 1)
    report = run_demo(args.out, seed=args.seed, quick=args.quick, verbose=not args.quiet, echo=print)
    print()
    print(f"Before (TRADES) / after (W-TRADES fine-tune, p = {report.config['finetune_p']:g}), "
          f"{report.before.n_samples} test digits, p = {report.before.p:g}, norm = inf:")
    print()
    print(report.table)
    print(report.placement_text())
    print()
    print(f"Total {report.seconds['total']:.1f} s. Wrote {', '.join(report.files.values())}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``art-wdat evaluate``: the side-by-side evaluation of one model."""
    from art_wdat import distributed
    from art_wdat.evaluation import EvaluationSettings, evaluate, parse_attacks

    set_threads(_threads_for(args))
    attacks = parse_attacks(args.attacks)
    if not attacks:
        raise ValueError("--attacks names no attack")
    budgets = args.eps if args.eps is not None else parse_budgets(DEFAULT_BUDGETS.get(args.dataset,
                                                                                      DEFAULT_IMAGE_BUDGETS))
    loading.check_model_spec(args.model)
    checks.check_plan(args, {"--eps": budgets})  # before any download, and before the demo model trains
    settings = EvaluationSettings(max_iter=args.max_iter or 20, batch_size=args.batch_size,
                                  autoattack_version=args.autoattack_version, autoattack_max_iter=args.aa_iter,
                                  apgd_art_max_iter=args.apgd_iter, apgd_art_restarts=args.apgd_restarts,
                                  allow_large_eps=args.allow_large_eps, amp=args.amp)
    with distributed.launched(distributed.backend_for(args.device)) as (world, rank):
        x, y = loading.load_data(args, "test")
        loaded = loading.load_model(args.model, args, (x, y))
        loading.check_budgets(loaded.classifier, budgets, args.norm, args.allow_large_eps)
        x, y = loading.shard(x, y, world, rank)
        result = evaluate(loaded.classifier, x, y, budgets, p=args.p, norm=args.norm, attacks=attacks,
                          seed=args.seed, verbose=not args.quiet and rank == 0, settings=settings,
                          meta={"model": loaded.label, "dataset": args.dataset, "device": args.device, "ranks": world})
    if rank == 0:
        print(result.to_markdown(title=f"{loaded.label} on {args.dataset}"))
        if args.out:
            _write_evaluation(result, Path(args.out))
    return 0


def _write_evaluation(result: EvaluationResult, out: Path) -> None:
    from art_wdat.evaluation.plotting import plot_accuracy, plot_knapsack_curve

    out.mkdir(parents=True, exist_ok=True)
    title = f"{result.meta.get('model')} on {result.meta.get('dataset')}"
    files = [out / "report.json", out / "report.md", out / "curve.png"]
    files[0].write_text(result.to_json(), encoding="utf-8")
    files[1].write_text(result.to_markdown(title=result.meta.get("model")), encoding="utf-8")
    plot_accuracy(result, files[2], title=title)
    if result.curve is not None:  # W-AutoAttack ran: its flip costs give the whole curve
        files.append(plot_knapsack_curve(result, out / "knapsack_curve.png", title=title))
    print(f"Wrote {', '.join(map(str, files))}")


def training_eps(args: argparse.Namespace) -> float:
    """finetune's budget δ: --eps, else 0.1 on digits and 8/255 on other data."""
    return args.eps if args.eps is not None else (0.1 if args.dataset == "digits" else 8 / 255)


def cmd_finetune(args: argparse.Namespace) -> int:
    """``art-wdat finetune``: W-TRADES fine-tuning to a checkpoint, the epoch kept chosen on a held-out split."""
    from art_wdat import distributed

    set_threads(_threads_for(args))
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out must be a checkpoint file, {out} is a folder")
    loading.check_model_spec(args.model)
    # Before any download or training (the demo model's included): the data fits the model, the budgets their box.
    pointwise_eps = getattr(args, "pointwise_eps", None)
    checks.check_plan(args, {"--eps": [training_eps(args)], "--pointwise-eps": [pointwise_eps or 0.0]})
    with distributed.launched(distributed.backend_for(args.device)) as (world, rank):
        run = _finetune(args, verbose=not args.quiet and rank == 0)
    if rank != 0:
        return 0
    trainer, loaded, history = run.trainer, run.loaded, run.history
    selection = trainer.selection
    meta = dict(loaded.meta)
    meta["extra"] = {"finetuned_from": loaded.label, "dataset": args.dataset, "eps": trainer.eps, "p": args.p,
                     "select_p": trainer.selection_p, "val_pointwise": trainer.val_pointwise,
                     "val_every": args.val_every,
                     "norm": "inf" if math.isinf(args.norm) else args.norm, "beta": args.beta,
                     "recipe": run.recipe.to_dict(), "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
                     "ranks": world, "global_batch_size": args.batch_size * world, "method": trainer.method,
                     "inner_loss": trainer.inner_loss, "outer_loss": trainer.outer_loss,
                     "pointwise_beta": trainer.pointwise_beta, "cheapness_weight": trainer.cheapness_weight,
                     "history": _plain_history(history),
                     "train_images": run.n_train, "val_images": run.n_val,
                     "kept_epoch": None if selection is None else selection.kept_epoch,
                     "validation": None if selection is None else _plain_value(selection.to_dict())}
    path, options = loading.save_finetuned(loaded, out, trainer.get_classifier().model.state_dict(), meta)
    print(f"W-TRADES fine-tune of {loaded.label} on {args.dataset} ({run.n_train} training images), p = {args.p:g}, "
          f"δ = {trainer.eps:.4g}, {world} rank(s): {run.recipe.describe()}.")
    if selection is None:
        last = history[-1] if history else {}
        print(f"{_no_split_reason(args, run.n_train)}: kept the last epoch; its training loss "
              f"{last.get('loss', math.nan):.4f}, clean acc {last.get('train_clean_acc', math.nan):.4f}, "
              f"robust acc {last.get('train_robust_acc', math.nan):.4f}.")
    else:
        from art_wdat.training.selection import selection_markdown

        table = selection_markdown(selection, title=f"{loaded.label}: held-out split ({run.n_val} images)")
        print()
        print(table)
        files = _write_selection_report(path, meta["extra"], table)
        print(f"Wrote {', '.join(map(str, files))}")
    print(f"Wrote {path}; evaluate it on the test split with:\n  {_evaluate_command(options, args, trainer)}")
    return 0


def _no_split_reason(args: argparse.Namespace, n_train: int) -> str:
    """Why no epoch was chosen on a held-out split: asked for (--val-split 0), or too few images for the default."""
    if args.val_split == 0:
        return "No held-out split (--val-split 0)"
    if args.val_split is not None:
        return f"No held-out split: --val-split {args.val_split:g} of {n_train} training image(s) rounds down to none"
    from art_wdat.training.recipe import VAL_SPLIT_FRACTION

    return (f"No held-out split: the default one is {100 * VAL_SPLIT_FRACTION:g}% of the training images, and "
            f"{n_train} image(s) give none (pass --val-split N to hold out N of them)")


def _evaluate_command(options: str, args: argparse.Namespace, trainer: WassersteinTRADESTrainer) -> str:
    """The ``art-wdat evaluate`` line for the fine-tuned model at eps/2, eps and 2·eps (those within the input box),
    the order p epochs were selected by and the ground norm."""
    from art_wdat.training.judge import budgets_in_box
    from art_wdat.training.selection import budget_label

    eps, clf = float(trainer.eps), trainer.get_classifier()
    budgets, _ = budgets_in_box((eps / 2, eps, 2 * eps) if eps > 0 else (eps,), eps, args.norm, clf.clip_values,
                                clf.input_shape)
    norm = "inf" if math.isinf(args.norm) else f"{args.norm:g}"
    return (f"{PROG} evaluate {options} --dataset {args.dataset} --eps {','.join(map(budget_label, budgets))} "
            f"--p {trainer.selection_p:g} --norm {norm}")


@dataclass
class _FinetuneRun:
    """What :func:`_finetune` hands back: the trainer, the model, the history, the recipe and the split sizes."""

    trainer: WassersteinTRADESTrainer
    loaded: loading.LoadedModel
    history: list
    recipe: FinetuneRecipe
    n_train: int
    n_val: int


def _finetune(args: argparse.Namespace, verbose: bool) -> _FinetuneRun:
    """Load, hold out the validation split, fine-tune with the recipe of the flags and select the epoch.

    Under torchrun every rank loads all of the data and trains on its slice of each global batch (``--batch-size``
    per rank), so the inner attack's one budget spans the global batch and the ranks end with the same weights;
    every rank measures the whole held-out split, so they keep the same epoch.
    """
    from art_wdat.training.recipe import FinetuneRecipe, held_out_size, split_held_out
    from art_wdat.training.selection import Tolerances
    from art_wdat.training.trainer import WassersteinTRADESTrainer
    from art_wdat.zoo import clip_pair, make_classifier

    x, y = loading.load_data(args, "train")
    loaded = loading.load_model(args.model, args, (x, y))
    eps = training_eps(args)
    loading.check_budgets(loaded.classifier, [eps], args.norm, args.allow_large_eps)
    (x_tr, y_tr), validation = split_held_out(x, y, held_out_size(len(x), args.val_split))
    recipe = FinetuneRecipe(optimizer=args.optimizer, lr=args.lr, schedule=args.schedule, epochs=args.epochs,
                            batch_size=args.batch_size, max_iter=args.max_iter or DEFAULT_RECIPE.max_iter)
    base = loaded.classifier
    # The recipe puts its own optimizer on this classifier: same module, same preprocessing.
    clf = make_classifier(base.model, base.input_shape, base.nb_classes, clip_values=clip_pair(base.clip_values),
                          preprocessing=loaded.meta.get("preprocessing"), device=args.device, lr=args.lr)
    # The variant's options only when given: their defaults are the trainer's (the study's choice, one place).
    keys = ("method", "inner_loss", "outer_loss", "pointwise_beta", "pointwise_eps", "cheapness_weight")
    variant = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    trainer = WassersteinTRADESTrainer(clf, eps=eps, p=args.p, norm=args.norm, beta=args.beta,
                                       finetune=None if args.finetune_mode == "none" else args.finetune_mode,
                                       weight_noise=args.weight_noise, eval_max_iter=args.val_iter, amp=args.amp,
                                       allow_large_eps=args.allow_large_eps, select_p=args.select_p,
                                       val_pointwise=args.val_pointwise, **variant)
    tolerances = Tolerances(clean=args.clean_tolerance / 100, pointwise=args.pointwise_tolerance / 100)
    history = trainer.fit(x_tr, y_tr, validation_data=validation, recipe=recipe, tolerances=tolerances,
                          seed=args.seed, verbose=verbose, val_every=args.val_every)
    n_val = 0 if validation is None else len(validation[0])
    return _FinetuneRun(trainer, loaded, list(history), recipe, len(x_tr), n_val)


def _write_selection_report(checkpoint: Path, extra: dict, table: str) -> list[Path]:
    """The held-out table beside the checkpoint, as JSON and Markdown (each written atomically)."""
    from art_wdat.training.checkpoint import save_text

    stem = checkpoint.with_suffix("")
    report = {key: extra[key] for key in ("finetuned_from", "dataset", "eps", "p", "norm", "recipe", "seed",
                                          "train_images", "val_images", "kept_epoch", "validation")}
    return [save_text(json.dumps(report, indent=2) + "\n", f"{stem}.validation.json"),
            save_text(table + "\n", f"{stem}.validation.md")]


def _plain_history(history: Sequence[dict]) -> list:
    """Finite floats only (the checkpoint format refuses nothing plain, but JSON-like values keep it readable)."""
    return [_plain_value(rec) for rec in history]


def _plain_value(value: Any) -> Any:
    """``value`` with every non-finite float as None, nested dicts and lists included."""
    if isinstance(value, dict):
        return {k: _plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
