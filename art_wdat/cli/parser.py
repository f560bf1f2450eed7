"""The ``art-wdat`` argument parser and its argument types.

Numbers are written as decimals, fractions ("8/255") or "inf"; the ranges are checked by
:func:`art_wdat.validation.check_int` / :func:`~art_wdat.validation.check_number`, and a bad value is a
usage error of one line naming the option (exit status 2).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from typing import Any

from art_wdat.cli.threads import THREADS_DEFAULT
from art_wdat.training.recipe import DECAYS, DEFAULT_RECIPE, OPTIMIZERS, VAL_SPLIT_FRACTION, VAL_SPLIT_MAX
from art_wdat.validation import check_int, check_number

PROG = "art-wdat"
EXIT_USAGE = 2
DEFAULT_ATTACKS = "pgd,autoattack,wpgd,wpgd-budget,wauto"
#: Every attack --attacks accepts ("apgd-art": ART's APGD-CE + APGD-DLR, "APGD (ART)", on request only).
ALL_ATTACKS = "pgd,autoattack,apgd-art,wpgd,wpgd-budget,wauto"
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


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _norm(text: str) -> float:
    # The ground norms of the API (art_wdat.core.threat.SUPPORTED_NORMS), not imported: --help loads no torch.
    value = parse_number(text)
    if value not in (1.0, 2.0, math.inf):
        raise ValueError(f"must be inf, 2 or 1, got {text!r}")
    return value


def parse_numbers(text: str) -> list[float]:
    """Comma-separated finite numbers, e.g. a per-channel mean "0.4914,0.4822,0.4465"."""
    values = [parse_number(p) for p in text.split(",") if p.strip()]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"expected comma-separated finite numbers, got {text!r}")
    return values


#: Range checks, called as ``check(option, value)``.
_AT_LEAST_ONE = partial(check_int, low=1)
_NON_NEGATIVE = partial(check_number, low=0.0)
_ORDER = partial(check_number, low=1.0, allow_inf=True)


def _arg_type(convert: Callable[[str], Any], what: str,
              check: Callable[[str, Any], None] | None = None) -> Callable[[str], Any]:
    """``convert``, then ``check(what, value)``, as an argparse type: a ValueError becomes a usage error."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
            if check is not None:
                check(what, value)
            return value
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = what
    return parse


# --------------------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=_arg_type(int, "--seed"), default=0, help="seed of everything random (0)")
    parser.add_argument("--threads", type=_arg_type(_integer, "--threads", _AT_LEAST_ONE), default=None,
                        help=f"torch CPU threads (default: {THREADS_DEFAULT}; the demo and --model demo use 1, which "
                             "is fastest for their tiny model and keeps their numbers identical run to run)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages (INFO)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="rb:<RobustBench name>, a local checkpoint, FILE.py:FACTORY[:ARGS] (a function that "
                             "builds the module), a TorchScript or torch.export file, or 'demo' (trains the demo "
                             "model)")
    parser.add_argument("--weights", default=None,
                        help="a torch.save'd state_dict to load into a FILE.py:FACTORY, TorchScript or torch.export "
                             "model")
    parser.add_argument("--mean", type=_arg_type(parse_numbers, "--mean"), default=None,
                        help="input normalisation of a model file, per channel, e.g. 0.4914,0.4822,0.4465 (with --std; "
                             "default: none, the model normalises its [0, 1] inputs itself)")
    parser.add_argument("--std", type=_arg_type(parse_numbers, "--std"), default=None,
                        help="input normalisation's standard deviations, per channel (with --mean)")
    parser.add_argument("--dataset", required=True, help="cifar10, cifar100, digits or npz:PATH")
    parser.add_argument("--data-dir", default=None, help="folder holding the CIFAR data (default ./data)")
    parser.add_argument("--model-dir", default="./models", help="RobustBench model folder (./models)")
    parser.add_argument("--threat-model", default=None,
                        help="RobustBench threat model: Linf, L2, corruptions (default: the one the model's name is "
                             "filed under; Linf when it is filed under several)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (cpu)")
    parser.add_argument("--n-samples", type=_arg_type(_integer, "--n-samples", _AT_LEAST_ONE), default=None,
                        help="use only the first N images")
    parser.add_argument("--batch-size", type=_arg_type(_integer, "--batch-size", _AT_LEAST_ONE),
                        default=DEFAULT_RECIPE.batch_size,
                        help=f"inputs per forward/backward pass ({DEFAULT_RECIPE.batch_size}); finetune: the "
                             "mini-batch that shares one budget; under torchrun, per rank")
    parser.add_argument("--p", type=_arg_type(parse_number, "--p", _ORDER), default=2.0,
                        help="Wasserstein order p in [1, inf] (2)")
    parser.add_argument("--norm", type=_arg_type(_norm, "--norm"), default=math.inf,
                        help="ground norm: inf, 2 or 1 (inf)")
    parser.add_argument("--max-iter", type=_arg_type(_integer, "--max-iter", _AT_LEAST_ONE), default=None,
                        help=f"attack iterations (evaluate: 20; finetune: inner steps, {DEFAULT_RECIPE.max_iter})")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast for the gradient passes (evaluate: W-PGD and W-PGD-Budget, also inside "
                             "W-AutoAttack, budgets exact and accuracies counted in float32; finetune: the "
                             "trainer's passes, CUDA only)")
    # With the model because the check needs its input box; evaluate and finetune take both.
    parser.add_argument("--allow-large-eps", action="store_true",
                        help="accept a budget beyond the input box's scale (by default 8 is refused where 8/255 "
                             "was probably meant)")


def _add_demo(sub: Any) -> argparse.ArgumentParser:
    demo = sub.add_parser("demo", help="the offline main job: TRADES on digits, evaluate, W-TRADES fine-tune, "
                                       "evaluate again, before/after table",
                          description="Offline demo on scikit-learn's digits; writes report.json, report.md, "
                                      "curve.png and knapsack_curve.png.")
    demo.add_argument("--out", default="art-wdat-out", help="output folder (./art-wdat-out)")
    demo.add_argument("--quick", action="store_true", help="seconds-long version with tiny settings (for tests)")
    _common(demo)
    return demo


def _add_evaluate(sub: Any) -> argparse.ArgumentParser:
    ev = sub.add_parser("evaluate", help="side-by-side evaluation: PGD, AutoAttack, W-PGD, W-PGD-Budget, "
                                         "W-AutoAttack, bounds",
                        description="Evaluate a model against pointwise and distributional attacks at each budget.")
    _model_args(ev)
    ev.add_argument("--eps", type=_arg_type(parse_budgets, "--eps"), default=None,
                    help=f"comma-separated budgets, fractions allowed (digits: {DEFAULT_BUDGETS['digits']}; "
                         f"otherwise {DEFAULT_IMAGE_BUDGETS})")
    ev.add_argument("--attacks", default=DEFAULT_ATTACKS,
                    help=f"comma-separated subset of {ALL_ATTACKS} ({DEFAULT_ATTACKS})")
    ev.add_argument("--autoattack-version", choices=("standard", "custom"), default="custom",
                    help="AutoAttack from the autoattack package: standard (APGD-CE, APGD-T, FAB-T, Square: "
                         "RobustBench's protocol) or custom (APGD-CE + APGD-T, cheaper; the default)")
    ev.add_argument("--aa-iter", type=_arg_type(_integer, "--aa-iter", _AT_LEAST_ONE), default=None,
                    help="iterations of each APGD and FAB run in AutoAttack (default: the package's 100)")
    ev.add_argument("--apgd-iter", type=_arg_type(_integer, "--apgd-iter", _AT_LEAST_ONE), default=None,
                    help="iterations of each APGD run of the apgd-art attack (default: --max-iter)")
    # --aa-restarts: its name from when the AutoAttack row was ART's APGD runs.
    ev.add_argument("--apgd-restarts", "--aa-restarts", dest="apgd_restarts",
                    type=_arg_type(_integer, "--apgd-restarts", _AT_LEAST_ONE), default=1,
                    help="random restarts of each APGD run of the apgd-art attack (1; alias --aa-restarts)")
    ev.add_argument("--out", default=None, help="also write report.json, report.md, curve.png and (when W-AutoAttack "
                                                "runs) knapsack_curve.png to this folder")
    _common(ev)
    return ev


def _add_finetune(sub: Any) -> argparse.ArgumentParser:
    ft = sub.add_parser("finetune", help="W-TRADES fine-tuning; writes a checkpoint that evaluate reads",
                        description="Fine-tune a model with W-TRADES on the training split of the dataset "
                                    "(npz: x_train/y_train).")
    _model_args(ft)
    ft.add_argument("--out", required=True, help="checkpoint file to write")
    ft.add_argument("--eps", type=_arg_type(parse_number, "--eps", _NON_NEGATIVE), default=None,
                    help="training budget δ, fractions allowed (digits: 0.1; otherwise 8/255)")
    ft.add_argument("--beta", type=_arg_type(parse_number, "--beta", _NON_NEGATIVE), default=6.0,
                    help="KL weight β (6)")
    recipe = DEFAULT_RECIPE
    ft.add_argument("--optimizer", choices=OPTIMIZERS, default=recipe.optimizer,
                    help=f"optimizer: sgd (momentum {recipe.momentum:g}) or adam ({recipe.optimizer})")
    ft.add_argument("--lr", type=_arg_type(parse_number, "--lr", _NON_NEGATIVE), default=recipe.lr,
                    help=f"learning rate ({recipe.lr:g})")
    ft.add_argument("--schedule", choices=DECAYS, default=recipe.schedule,
                    help=f"learning-rate decay over the epochs ({recipe.schedule})")
    ft.add_argument("--epochs", type=_arg_type(_integer, "--epochs", _AT_LEAST_ONE), default=recipe.epochs,
                    help=f"epochs; with a validation split each is a candidate ({recipe.epochs})")
    ft.add_argument("--val-split", type=_arg_type(parse_number, "--val-split", _NON_NEGATIVE), default=None,
                    help=f"held-out images taken from the training data (a count, or a fraction below 1) that "
                         f"choose the epoch kept; never trained on; 0 turns selection off (default: "
                         f"{VAL_SPLIT_MAX} or {100 * VAL_SPLIT_FRACTION:g}%%, whichever is smaller)")
    ft.add_argument("--clean-tolerance", type=_arg_type(parse_number, "--clean-tolerance", _NON_NEGATIVE),
                    default=1.5, help="points of held-out clean accuracy an epoch may lose against the start and "
                                      "still be kept (1.5)")
    ft.add_argument("--pointwise-tolerance", type=_arg_type(parse_number, "--pointwise-tolerance", _NON_NEGATIVE),
                    default=1.0, help="points of held-out pointwise accuracy at ε an epoch may lose (1.0)")
    ft.add_argument("--val-iter", type=_arg_type(_integer, "--val-iter", _AT_LEAST_ONE), default=20,
                    help="iterations of each held-out attack run: W-AutoAttack's W-PGD (and with --val-pointwise "
                         "autoattack, APGD-CE and APGD-T) (20)")
    ft.add_argument("--val-every", type=_arg_type(_integer, "--val-every", _AT_LEAST_ONE), default=1,
                    help="measure the held-out split after every N-th epoch and after the last (1); only measured "
                         "epochs can be kept")
    ft.add_argument("--select-p", type=_arg_type(parse_number, "--select-p", _ORDER), default=None,
                    help="Wasserstein order of the held-out W-AutoAttack that ranks the epochs, in [1, inf] "
                         "(default: --p); e.g. --p inf --select-p 2 trains TRADES and keeps the epoch best under W_2")
    ft.add_argument("--val-pointwise", choices=("min-norm", "autoattack"), default="min-norm",
                    help="held-out pointwise accuracy at ε: min-norm (from W-AutoAttack's minimum-norm flip costs, "
                         "no extra attack) or autoattack (APGD-CE + APGD-T of the autoattack package; images in "
                         "[0, 1]) (min-norm)")
    ft.add_argument("--method", choices=("wpgd", "budget", "knapsack"), default=None,
                    help="inner solver (default: the trainer's)")
    ft.add_argument("--inner-loss", choices=("kl", "rekl", "redlr"), default=None,
                    help="loss the inner maximisation ascends (default: the trainer's)")
    ft.add_argument("--outer-loss", choices=("trades", "ce"), default=None,
                    help="trades: CE + β·KL; ce: cross-entropy at the adversary (default: the trainer's)")
    ft.add_argument("--pointwise-beta", type=_arg_type(parse_number, "--pointwise-beta", _NON_NEGATIVE),
                    default=None, help="weight of the joint objective's pointwise TRADES term (default: the trainer's)")
    ft.add_argument("--pointwise-eps", type=_arg_type(parse_number, "--pointwise-eps", _NON_NEGATIVE), default=None,
                    help="ε of that term, fractions allowed (default: --eps)")
    ft.add_argument("--cheapness-weight", type=_arg_type(parse_number, "--cheapness-weight", _NON_NEGATIVE),
                    default=None, help="λ: weigh each input's KL by 1 + λ·exp(-flip cost/eps), cheap inputs more "
                    "(default: the trainer's, 0)")
    ft.add_argument("--finetune-mode", choices=("none", "reinit_last", "perturb"), default="none",
                    help="kick the model out of its minimum first (none)")
    ft.add_argument("--weight-noise", type=_arg_type(parse_number, "--weight-noise", _NON_NEGATIVE), default=0.01,
                    help="relative weight noise of --finetune-mode perturb (0.01)")
    _common(ft)
    return ft


def build_parser() -> argparse.ArgumentParser:
    """The ``art-wdat`` argument parser; each command's namespace holds its name as ``command``.

    The parser knows no handler (:data:`art_wdat.cli.COMMANDS` maps names to them), so the commands may import
    this module's argument types and defaults without a circle.
    """
    from art_wdat import __version__

    parser = _Parser(prog=PROG, description="Wasserstein distributional robustness for ART's PyTorch classifiers.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,evaluate,finetune}", parser_class=_Parser)
    sub.required = True
    _add_demo(sub)
    _add_evaluate(sub)
    _add_finetune(sub)
    return parser
