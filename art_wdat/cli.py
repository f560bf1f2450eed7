"""The ``art-wdat`` command line (also ``python -m art_wdat``): demo, evaluate, finetune.

Thin by design: the work is in :mod:`art_wdat.demo`, :mod:`art_wdat.evaluation` and the trainer. Heavy
imports (torch, ART, robustbench, matplotlib) happen inside the commands, so ``--help`` is instant and
importing this module loads none of them. Errors a user can cause (unknown model, missing file, no
internet, bad numbers, shape mismatch) end as one line on stderr and exit status 2; ``--debug`` re-raises.

``evaluate`` and ``finetune`` also run under ``torchrun`` (one process per GPU, or several CPU processes):
evaluate shares the test images out among the ranks and reports on all of them with one budget;
finetune trains on global batches of ``--batch-size`` × ranks; rank 0 alone prints and writes.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

logger = logging.getLogger("art_wdat.cli")

PROG = "art-wdat"
EXIT_USAGE = 2
#: Exceptions reported as one line (anything else is a bug: traceback).
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError, ImportError)
DEMO_MODEL = "demo"
RB_PREFIX = "rb:"
DEFAULT_ATTACKS = "pgd,autoattack,wpgd,wpgd-budget"
#: Budgets when --eps is not given: the digits demo's for digits, the usual CIFAR ℓ∞ ones otherwise.
DEFAULT_BUDGETS = {"digits": "0.05,0.1,0.15"}
DEFAULT_IMAGE_BUDGETS = "2/255,4/255,8/255"


# --------------------------------------------------------------------------------------------------
# argument types
# --------------------------------------------------------------------------------------------------


def parse_number(text: str) -> float:
    """A number written as a decimal ("0.03"), a fraction ("8/255") or "inf"; ValueError otherwise."""
    s = text.strip()
    try:
        value = float(Fraction(s)) if "/" in s else float(s)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a number: {text!r} (use e.g. 0.03 or 8/255)") from None
    if math.isnan(value):
        raise ValueError(f"not a number: {text!r}")
    return value


def parse_budgets(text: str) -> list:
    """Comma-separated finite budgets ≥ 0, e.g. "1/255,2/255,0.1"."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"no budget in {text!r}")
    values = [parse_number(p) for p in parts]
    bad = [p for p, v in zip(parts, values) if not math.isfinite(v) or v < 0]
    if bad:
        raise ValueError(f"budgets must be finite and >= 0, got {', '.join(bad)}")
    return values


def _arg_type(fn, what: str):
    """Wrap a parser so argparse reports its ValueError as a usage error naming ``what``."""

    def convert(text: str):
        try:
            return fn(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = what
    return convert


def _order(text: str) -> float:
    value = parse_number(text)
    if not value >= 1:
        raise ValueError(f"must be in [1, inf], got {text!r}")
    return value


def _norm(text: str) -> float:
    value = parse_number(text)
    if value not in (2.0, math.inf):
        raise ValueError(f"must be inf or 2, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = parse_number(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"must be finite and >= 0, got {text!r}")
    return value


# --------------------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=_arg_type(int, "--seed"), default=0, help="seed of everything random (0)")
    parser.add_argument("--threads", type=_arg_type(_positive_int, "--threads"), default=None,
                        help="torch CPU threads (default: torch's own; the demo uses 1, which is fastest for its "
                             "tiny model and keeps its numbers identical run to run)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages (INFO)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="rb:<RobustBench name>, the path of a local checkpoint, or 'demo' (trains the demo model)")
    parser.add_argument("--dataset", required=True, help="cifar10, cifar100, digits or npz:PATH")
    parser.add_argument("--data-dir", default=None, help="folder holding the CIFAR data (default ./data)")
    parser.add_argument("--model-dir", default="./models", help="RobustBench model folder (./models)")
    parser.add_argument("--threat-model", default="Linf", help="RobustBench threat model: Linf, L2, ... (Linf)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (cpu)")
    parser.add_argument("--n-samples", type=_arg_type(_positive_int, "--n-samples"), default=None,
                        help="use only the first N images")
    parser.add_argument("--batch-size", type=_arg_type(_positive_int, "--batch-size"), default=128,
                        help="inputs per forward/backward pass (128); under torchrun, per rank")
    parser.add_argument("--p", type=_arg_type(_order, "--p"), default=2.0, help="Wasserstein order p in [1, inf] (2)")
    parser.add_argument("--norm", type=_arg_type(_norm, "--norm"), default=math.inf, help="ground norm: inf or 2 (inf)")
    parser.add_argument("--max-iter", type=_arg_type(_positive_int, "--max-iter"), default=None,
                        help="attack iterations (evaluate: 20; finetune: inner steps, 10)")


def build_parser() -> argparse.ArgumentParser:
    """The ``art-wdat`` argument parser."""
    parser = _Parser(prog=PROG, description="Wasserstein distributional robustness for ART's PyTorch classifiers.")
    from art_wdat import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,evaluate,finetune}", parser_class=_Parser)
    sub.required = True

    demo = sub.add_parser("demo", help="the offline main job: TRADES on digits, evaluate, W-TRADES fine-tune, "
                                       "evaluate again, before/after table",
                          description="Offline demo on scikit-learn's digits; writes report.json, report.md and "
                                      "curve.png.")
    demo.add_argument("--out", default="art-wdat-out", help="output folder (./art-wdat-out)")
    demo.add_argument("--quick", action="store_true", help="seconds-long version with tiny settings (for tests)")
    _common(demo)
    demo.set_defaults(func=cmd_demo)

    ev = sub.add_parser("evaluate", help="side-by-side evaluation: PGD, AutoAttack, W-PGD, W-PGD-Budget, bounds",
                        description="Evaluate a model against pointwise and distributional attacks at each budget.")
    _model_args(ev)
    ev.add_argument("--eps", type=_arg_type(parse_budgets, "--eps"), default=None,
                    help=f"comma-separated budgets, fractions allowed (digits: {DEFAULT_BUDGETS['digits']}; "
                         f"otherwise {DEFAULT_IMAGE_BUDGETS})")
    ev.add_argument("--attacks", default=DEFAULT_ATTACKS, help=f"comma-separated subset of {DEFAULT_ATTACKS}")
    ev.add_argument("--aa-iter", type=_arg_type(_positive_int, "--aa-iter"), default=None,
                    help="iterations of each APGD run in AutoAttack (default: --max-iter)")
    ev.add_argument("--aa-restarts", type=_arg_type(_positive_int, "--aa-restarts"), default=1,
                    help="random restarts of each APGD run in AutoAttack (1)")
    ev.add_argument("--out", default=None, help="also write report.json, report.md and curve.png to this folder")
    _common(ev)
    ev.set_defaults(func=cmd_evaluate)

    ft = sub.add_parser("finetune", help="W-TRADES fine-tuning; writes a checkpoint that evaluate reads",
                        description="Fine-tune a model with W-TRADES on the training split of the dataset "
                                    "(npz: x_train/y_train).")
    _model_args(ft)
    ft.add_argument("--out", required=True, help="checkpoint file to write")
    ft.add_argument("--eps", type=_arg_type(_non_negative, "--eps"), default=None,
                    help="training budget δ, fractions allowed (digits: 0.1; otherwise 8/255)")
    ft.add_argument("--beta", type=_arg_type(_non_negative, "--beta"), default=6.0, help="KL weight β (6)")
    ft.add_argument("--epochs", type=_arg_type(_positive_int, "--epochs"), default=1, help="epochs (1)")
    ft.add_argument("--lr", type=_arg_type(_non_negative, "--lr"), default=1e-4, help="Adam learning rate (1e-4)")
    ft.add_argument("--method", choices=("wpgd", "budget"), default="wpgd", help="inner solver (wpgd)")
    ft.add_argument("--finetune-mode", choices=("none", "reinit_last", "perturb"), default="none",
                    help="kick the model out of its minimum first (none)")
    ft.add_argument("--weight-noise", type=_arg_type(_non_negative, "--weight-noise"), default=0.01,
                    help="relative weight noise of --finetune-mode perturb (0.01)")
    _common(ft)
    ft.set_defaults(func=cmd_finetune)
    return parser


# --------------------------------------------------------------------------------------------------
# models and data
# --------------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A classifier and what is needed to save it again as a local checkpoint.

    :ivar classifier: The ART classifier.
    :ivar arch: Architecture for :func:`art_wdat.models.save_checkpoint_model` (name, dict or module).
    :ivar meta: Checkpoint meta (input_shape, nb_classes, clip_values, preprocessing, ...).
    :ivar label: Printable name.
    """

    classifier: Any
    arch: Any
    meta: dict = field(default_factory=dict)
    label: str = ""


def _rb_dataset(dataset: str) -> str:
    """The RobustBench zoo to look in: the dataset's own for CIFAR, else CIFAR-10 (shape checks catch misuse)."""
    return dataset if dataset in ("cifar10", "cifar100") else "cifar10"


def load_model(spec: str, args: argparse.Namespace) -> LoadedModel:
    """Resolve ``--model``: ``rb:<name>``, ``demo``, or a local checkpoint path.

    :raises FileNotFoundError: neither of the three.
    """
    from art_wdat import models

    if spec.startswith(RB_PREFIX):
        name = spec[len(RB_PREFIX):]
        if not name:
            raise ValueError("--model rb: needs a RobustBench model name, e.g. rb:Addepalli2022Efficient_RN18")
        dataset = _rb_dataset(args.dataset)
        clf = models.load_robustbench(name, dataset=dataset, threat_model=args.threat_model,
                                      model_dir=args.model_dir, device=args.device)
        meta = {"input_shape": list(clf.input_shape), "nb_classes": clf.nb_classes, "clip_values": [0.0, 1.0],
                "dataset": dataset, "threat_model": args.threat_model}
        return LoadedModel(clf, spec, meta, spec)
    if spec == DEMO_MODEL:
        return _demo_model(args)
    check_model_spec(spec)
    path = Path(spec)
    payload = models.read_checkpoint(path)
    clf = models.load_local_checkpoint(path, device=args.device)
    meta = {k: payload.get(k) for k in ("input_shape", "nb_classes", "clip_values", "preprocessing")}
    meta.update({k: v for k, v in payload["arch"].get("kwargs", {}).items() if k in ("dataset", "threat_model")})
    return LoadedModel(clf, payload["arch"], meta, str(path))


def check_model_spec(spec: str) -> None:
    """Fail fast, before any data is loaded, on a ``--model`` that is neither rb:, demo nor an existing file."""
    if spec.startswith(RB_PREFIX) or spec == DEMO_MODEL:
        return
    path = Path(spec)
    if path.is_dir():
        raise IsADirectoryError(f"--model {spec!r} is a folder; give the checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"unknown model {spec!r}: expected rb:<RobustBench name>, 'demo', or the path of an "
                                "art-wdat checkpoint (no such file)")


def _demo_model(args: argparse.Namespace) -> LoadedModel:
    from art_wdat import demo

    config = demo.DemoConfig(seed=args.seed)
    x_train, y_train, _, _ = demo.load_demo_data(config)
    logger.info("training the demo model (TRADES on digits, %d epochs)", config.train_epochs)
    clf, _ = demo.train_demo_model(config, x_train, y_train, verbose=not args.quiet)
    meta = {"input_shape": list(clf.input_shape), "nb_classes": clf.nb_classes, "clip_values": [0.0, 1.0]}
    return LoadedModel(clf, clf.model, meta, "demo (SmallCNN, TRADES on digits)")


def load_data(args: argparse.Namespace, split: str):
    """``--dataset`` as (x, y) for ``split``; ``--n-samples`` keeps the first N."""
    from art_wdat.data import load_dataset

    return load_dataset(args.dataset, data_dir=args.data_dir, n_samples=args.n_samples, split=split)


def check_compatible(classifier, x, y, dataset: str) -> None:
    """ValueError when the data does not fit the model (input shape, label range)."""
    if tuple(x.shape[1:]) != tuple(classifier.input_shape):
        raise ValueError(f"the model expects inputs of shape {tuple(classifier.input_shape)} but {dataset} has "
                         f"{tuple(x.shape[1:])}")
    if len(y) and int(y.max()) >= classifier.nb_classes:
        raise ValueError(f"{dataset} has label {int(y.max())} but the model has {classifier.nb_classes} classes")


# --------------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------------


def shard(x, y, world: int, rank: int):
    """This rank's contiguous share of (x, y): the shards in rank order are the data in its order."""
    import numpy as np

    if len(x) < world:
        raise ValueError(f"{len(x)} input(s) cannot be shared among {world} ranks; use more data or fewer ranks")
    idx = np.array_split(np.arange(len(x)), world)[rank]
    return x[idx], y[idx]


def _set_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


def _threads_for(args: argparse.Namespace) -> int | None:
    """--threads, else 1 for the tiny demo model (as ``demo`` does), else torch's default."""
    if args.threads is not None:
        return args.threads
    return 1 if args.model == DEMO_MODEL else None


def cmd_demo(args: argparse.Namespace) -> int:
    """``art-wdat demo``: the offline main job."""
    from art_wdat.demo import run_demo

    _set_threads(args.threads if args.threads is not None else 1)
    report = run_demo(args.out, seed=args.seed, quick=args.quick, verbose=not args.quiet, echo=print)
    print()
    print(f"Before (TRADES) / after (W-TRADES fine-tune, p = {report.config['finetune_p']:g}), "
          f"{report.before.n_samples} test digits, p = {report.before.p:g}, norm = inf:")
    print()
    print(report.table)
    print(f"Total {report.seconds['total']:.1f} s. Wrote {', '.join(report.files.values())}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``art-wdat evaluate``: the side-by-side evaluation of one model."""
    from art_wdat import distributed
    from art_wdat.evaluation import EvaluationSettings, evaluate, parse_attacks

    _set_threads(_threads_for(args))
    attacks = parse_attacks(args.attacks)
    if not attacks:
        raise ValueError("--attacks names no attack")
    budgets = args.eps if args.eps is not None else parse_budgets(DEFAULT_BUDGETS.get(args.dataset,
                                                                                      DEFAULT_IMAGE_BUDGETS))
    check_model_spec(args.model)
    settings = EvaluationSettings(max_iter=args.max_iter or 20, batch_size=args.batch_size,
                                  autoattack_max_iter=args.aa_iter, autoattack_restarts=args.aa_restarts)
    with distributed.launched(distributed.backend_for(args.device)) as (world, rank):
        x, y = load_data(args, "test")
        loaded = load_model(args.model, args)
        check_compatible(loaded.classifier, x, y, args.dataset)
        x, y = shard(x, y, world, rank)
        result = evaluate(loaded.classifier, x, y, budgets, p=args.p, norm=args.norm, attacks=attacks,
                          seed=args.seed, verbose=not args.quiet and rank == 0, settings=settings,
                          meta={"model": loaded.label, "dataset": args.dataset, "device": args.device, "ranks": world})
    if rank == 0:
        print(result.to_markdown(title=f"{loaded.label} on {args.dataset}"))
        if args.out:
            _write_evaluation(result, Path(args.out))
    return 0


def _write_evaluation(result, out: Path) -> None:
    from art_wdat.plotting import plot_accuracy

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(result.to_json(), encoding="utf-8")
    (out / "report.md").write_text(result.to_markdown(title=result.meta.get("model")), encoding="utf-8")
    plot_accuracy(result, out / "curve.png", title=f"{result.meta.get('model')} on {result.meta.get('dataset')}")
    print(f"Wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'curve.png'}")


def cmd_finetune(args: argparse.Namespace) -> int:
    """``art-wdat finetune``: W-TRADES fine-tuning to a checkpoint."""
    from art_wdat import distributed
    from art_wdat.models import save_checkpoint_model

    _set_threads(_threads_for(args))
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out must be a checkpoint file, {out} is a folder")
    check_model_spec(args.model)
    with distributed.launched(distributed.backend_for(args.device)) as (world, rank):
        trainer, loaded, history = _finetune(args, verbose=not args.quiet and rank == 0)
    if rank != 0:
        return 0
    meta = dict(loaded.meta)
    meta["extra"] = {"finetuned_from": loaded.label, "dataset": args.dataset, "eps": trainer.eps, "p": args.p,
                     "norm": "inf" if math.isinf(args.norm) else args.norm, "beta": args.beta,
                     "epochs": args.epochs, "lr": args.lr, "seed": args.seed, "ranks": world,
                     "global_batch_size": args.batch_size * world, "history": _plain_history(history)}
    path = save_checkpoint_model(out, loaded.arch, trainer.get_classifier().model.state_dict(), meta)
    last = history[-1] if history else {}
    print(f"W-TRADES fine-tune of {loaded.label} on {args.dataset}: {args.epochs} epoch(s), p = {args.p:g}, "
          f"δ = {trainer.eps:.4g}, {world} rank(s); last epoch: loss {last.get('loss', math.nan):.4f}, "
          f"train clean acc {last.get('train_clean_acc', math.nan):.4f}, "
          f"train robust acc {last.get('train_robust_acc', math.nan):.4f}")
    print(f"Wrote {path}; evaluate it with: {PROG} evaluate --model {path} --dataset {args.dataset}")
    return 0


def _finetune(args: argparse.Namespace, verbose: bool):
    """Load and fine-tune; return (trainer, loaded model, history).

    Under torchrun every rank loads all of the data and trains on its slice of each global batch (``--batch-size``
    per rank), so the inner attack's one budget spans the global batch and the ranks end with the same weights.
    """
    from art_wdat.models import clip_pair, make_classifier
    from art_wdat.trainer import WassersteinTRADESTrainer

    x, y = load_data(args, "train")
    loaded = load_model(args.model, args)
    check_compatible(loaded.classifier, x, y, args.dataset)
    base = loaded.classifier
    # A fresh optimizer at the fine-tuning learning rate, on the same module and preprocessing.
    clf = make_classifier(base.model, base.input_shape, base.nb_classes, clip_values=clip_pair(base.clip_values),
                          preprocessing=loaded.meta.get("preprocessing"), device=args.device, lr=args.lr)
    eps = args.eps if args.eps is not None else (0.1 if args.dataset == "digits" else 8 / 255)
    trainer = WassersteinTRADESTrainer(clf, eps=eps, p=args.p, norm=args.norm, beta=args.beta,
                                       max_iter=args.max_iter or 10, method=args.method,
                                       finetune=None if args.finetune_mode == "none" else args.finetune_mode,
                                       weight_noise=args.weight_noise)
    history = trainer.fit(x, y, batch_size=args.batch_size, nb_epochs=args.epochs, seed=args.seed, verbose=verbose)
    return trainer, loaded, history


def _plain_history(history: Sequence[dict]) -> list:
    """Finite floats only (the checkpoint format refuses nothing plain, but JSON-like values keep it readable)."""
    return [{k: (v if isinstance(v, (int, str)) or (isinstance(v, float) and math.isfinite(v)) else None)
             for k, v in rec.items()} for rec in history]


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("art_wdat").setLevel(level)
    if not verbose:
        # ART logs every attack and training call at INFO; keep the terminal for our own output.
        logging.getLogger("art").setLevel(logging.WARNING)


def _one_line(err: BaseException) -> str:
    """The message on one line; the exception's type only where the message alone would not say much."""
    text = " ".join(str(err).split())
    if isinstance(err, KeyError) or not text:
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``art-wdat`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    :param argv: The arguments, without the program name.
    :return: 0 on success, 2 on a usage or user error, 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has already written the message
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _configure_logging(args.verbose, args.quiet)
    threads = _torch_threads()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"{PROG} {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        _restore_threads(threads)


def _torch_threads() -> int | None:
    """torch's thread count if torch is already loaded (in-process callers get it back after main)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _restore_threads(threads: int | None) -> None:
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
