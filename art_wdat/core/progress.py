"""Progress bars that draw on a terminal only.

A bar redrawn into a log file or a pipe leaves one line per refresh: hundreds of lines of carriage returns for one
evaluation. Every bar of the attacks, the evaluation and the engine comes from :func:`progress_bar`, which asks
tqdm to disable itself when its stream (stderr) is not a TTY; ``verbose=False`` disables it everywhere. Each phase
shows one bar (``leave=False``: it is erased when the phase ends), so nested phases never stack up in the output.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from tqdm.auto import tqdm

#: The bar type, for signatures.
Bar: TypeAlias = tqdm


def progress_bar(total: int, desc: str, verbose: bool, **kwargs: Any) -> Bar:
    """A tqdm bar over ``total`` steps, drawn only if ``verbose`` and stderr is a terminal.

    :param kwargs: More tqdm keywords (``unit``, ...).
    """
    # disable=None is tqdm's "off unless the stream is a TTY".
    return tqdm(total=total, desc=desc, disable=None if verbose else True, leave=False, **kwargs)
