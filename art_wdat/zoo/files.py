"""Reading weight files without running code from them, and the error raised when weights cannot be had."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from art_wdat.validation import error_line


class ModelUnavailableError(OSError, RuntimeError):
    """A model's weights could not be obtained (no internet, unreadable checkpoint).

    Both an :class:`OSError` and a :class:`RuntimeError`, so callers catching either see it. The message
    is one line and says where to put the checkpoint file to run offline.
    """


#: Terminal colour codes, which torch puts in some messages (e.g. a refused pickle) and a one-line error must not.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (at most 300 characters, no colour codes), for one-line errors."""
    return ANSI_ESCAPE.sub("", error_line(err, first_line_only=True, limit=300))


def typed_first_line(err: BaseException) -> str:
    """``"<type>: <first line>"`` for errors of any type, the type named once.

    :func:`~art_wdat.validation.error_line` already names the type of a KeyError with a message (its
    message alone is just the quoted key), so it is not named a second time.
    """
    line = first_line(err)
    if isinstance(err, KeyError) and str(err).strip():
        return line
    return f"{type(err).__name__}: {line}"


def load_plain_file(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``, errors turned into :class:`ModelUnavailableError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure means the same thing to the user
        raise ModelUnavailableError(
            f"cannot read checkpoint {path} ({typed_first_line(err)}); "
            "it must be a file written by torch.save holding only tensors and plain python values"
        ) from err
