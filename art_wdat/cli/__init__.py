"""The ``art-wdat`` command line (also ``python -m art_wdat``): demo, evaluate, finetune.

The parser is in :mod:`~art_wdat.cli.parser`, the commands in :mod:`~art_wdat.cli.commands`, the checks that
run before any download or training in :mod:`~art_wdat.cli.checks`, model and data loading in
:mod:`~art_wdat.cli.loading`, the demo pipeline in :mod:`~art_wdat.cli.demo` and its reference ranges in
:mod:`~art_wdat.cli.ranges`. Heavy imports (torch, ART, robustbench, matplotlib) happen inside the commands, so
``--help`` is instant and importing this package loads none of them. Errors a user can cause (unknown model,
missing file, no internet, bad numbers, a data set that does not fit the model) end as one line on stderr and exit
status 2; ``--debug`` re-raises.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from art_wdat.cli.commands import cmd_demo, cmd_evaluate, cmd_finetune
from art_wdat.cli.loading import (
    DEMO_MODEL,
    LoadedModel,
    check_compatible,
    check_model_spec,
    load_data,
    load_model,
    shard,
)
from art_wdat.cli.parser import EXIT_USAGE, PROG, build_parser, parse_budgets, parse_number
from art_wdat.validation import error_line

__all__ = ["COMMANDS", "DEMO_MODEL", "EXIT_USAGE", "PROG", "USER_ERRORS", "LoadedModel", "build_parser",
           "check_compatible", "check_model_spec", "cmd_demo", "cmd_evaluate", "cmd_finetune", "load_data",
           "load_model", "main", "parse_budgets", "parse_number", "shard"]

#: The handler of each command (the parser names the command; the handlers import the parser's types).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"demo": cmd_demo, "evaluate": cmd_evaluate,
                                                            "finetune": cmd_finetune}

#: Exceptions reported as one line (anything else is a bug: traceback).
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError, ImportError)


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("art_wdat").setLevel(level)
    if not verbose:
        # ART logs every attack and training call at INFO; keep the terminal for our own output.
        logging.getLogger("art").setLevel(logging.WARNING)


def _torch_threads() -> int | None:
    """torch's thread count if torch is already loaded (in-process callers get it back after main)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _restore_threads(threads: int | None) -> None:
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


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
        return int(COMMANDS[args.command](args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"{PROG} {args.command}: error: {error_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        _restore_threads(threads)
