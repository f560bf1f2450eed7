"""The demo's reference ranges: where a run of ``art-wdat demo`` falls against the runs the README reports.

``python bench/readme_tables.py demo`` runs the demo for several seeds and torch thread counts (a stand-in for
other machines, whose float reductions differ the same way) and writes, in one run, the README's table of
medians and ranges, its figure, and ``demo_ranges.json`` beside this module: every run's value of every cell of
the before/after table. The demo reads that file and says which of its own cells fall outside the range.

Nothing here imports torch: the values are read from :class:`~art_wdat.evaluation.EvaluationResult` objects.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from art_wdat.evaluation import EvaluationResult

#: The reference ranges shipped with the package (written by ``bench/readme_tables.py demo``).
RANGES_FILE = Path(__file__).with_name("demo_ranges.json")
#: Columns of the before/after table.
COLUMNS = ("TRADES", "W-TRADES fine-tune", "change")
#: Configuration keys that may differ between runs of one reference (they are what the ranges span).
VARYING = ("seed", "torch_threads")
#: Slack for float noise in the JSON round trip; accuracies are multiples of 1/N, far coarser.
TOLERANCE = 1e-9


def table_rows(before: EvaluationResult, after: EvaluationResult) -> list[dict[str, Any]]:
    """The cells of the demo's before/after table (:func:`~art_wdat.evaluation.report.compare_cells`): one dict per
    row with ``budget`` (None for the rows without one), ``quantity`` and a value for each of :data:`COLUMNS`."""
    from art_wdat.evaluation.report import compare_cells

    return [{"budget": budget, "quantity": quantity, COLUMNS[0]: v0, COLUMNS[1]: v1, COLUMNS[2]: v1 - v0}
            for budget, quantity, v0, v1 in compare_cells(before, after)]


def reference_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A demo configuration without what the reference runs vary (seed, torch threads)."""
    return {k: v for k, v in config.items() if k not in VARYING}


def load_reference(settings: str, config: Mapping[str, Any], path: Path | None = None) -> dict[str, Any] | None:
    """The reference of ``settings`` ("default", "quick") if its configuration is ``config``'s, else None.

    :param path: The ranges file (default :data:`RANGES_FILE`).
    """
    try:
        data = json.loads((path or RANGES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    reference = data.get("settings", {}).get(settings)
    if reference is None or reference.get("config") != _plain(reference_config(config)):
        return None
    return dict(reference)


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists)."""
    return json.loads(json.dumps(value))


@dataclass
class Placement:
    """Where a run's cells fall against a reference.

    :ivar inside: Cells inside their range.
    :ivar outside: One line per cell outside its range (the row, the column, the value and the range).
    :ivar runs: Runs behind the ranges.
    :ivar spanned: What the reference runs vary, in words.
    :ivar machine: The machine they ran on.
    """

    inside: int
    outside: list[str] = field(default_factory=list)
    runs: int = 0
    spanned: str = ""
    machine: str = ""

    @property
    def total(self) -> int:
        """Cells compared."""
        return self.inside + len(self.outside)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"inside": self.inside, "outside": list(self.outside), "runs": self.runs, "spanned": self.spanned,
                "machine": self.machine}

    def summary(self) -> str:
        """A few lines for the terminal and report.md."""
        head = (f"Against the README's ranges ({self.runs} run{'s' if self.runs != 1 else ''}: {self.spanned}; "
                f"{self.machine}): "
                f"{self.inside} of {self.total} cells inside.")
        if not self.outside:
            return head
        return "\n".join([head, "Outside:", *(f"  {line}" for line in self.outside)])


def cell_ranges(reference: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The reference's rows with (min, median, max) in place of each column's list of run values."""
    out = []
    for row in reference["rows"]:
        cells = {c: _span(row[c]) for c in COLUMNS}
        out.append({"budget": row["budget"], "quantity": row["quantity"], **cells})
    return out


def _span(values: Sequence[float | None]) -> tuple[float, float, float]:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return (math.nan, math.nan, math.nan)
    return (min(finite), statistics.median(finite), max(finite))


def _key(budget: float | None, quantity: str) -> tuple[str, str]:
    return ("–" if budget is None else f"{budget:g}", quantity)


def place(before: EvaluationResult, after: EvaluationResult, reference: Mapping[str, Any]) -> Placement:
    """Count the cells of this run inside the reference's ranges; name those outside."""
    ranges = {_key(r["budget"], r["quantity"]): r for r in cell_ranges(reference)}
    placement = Placement(inside=0, runs=len(reference.get("runs", [])), spanned=spanned(reference),
                          machine=reference.get("machine", ""))
    for row in table_rows(before, after):
        known = ranges.get(_key(row["budget"], row["quantity"]))
        for column in COLUMNS:
            value = row[column]
            if known is None or not math.isfinite(value) or math.isnan(known[column][0]):
                continue
            low, _, high = known[column]
            if low - TOLERANCE <= value <= high + TOLERANCE:
                placement.inside += 1
            else:
                where = "–" if row["budget"] is None else f"δ = {row['budget']:g}"
                placement.outside.append(f"{where}, {row['quantity']}, {column}: {value:.4f} "
                                         f"({'below' if value < low else 'above'} [{low:.4f}, {high:.4f}])")
    return placement


def spanned(reference: Mapping[str, Any]) -> str:
    """What the reference runs vary, e.g. "seeds 0–4 at 1 and 2 torch threads" or "seeds 0–4 at 1 torch thread,
    seeds 0, 1 at 2 torch threads"."""
    seeds_at: dict[int, set[int]] = {}
    for run in reference.get("runs", []):
        seeds_at.setdefault(int(run["threads"]), set()).add(int(run["seed"]))
    threads_for: dict[tuple[int, ...], list[int]] = {}
    for threads, seeds in sorted(seeds_at.items()):
        threads_for.setdefault(tuple(sorted(seeds)), []).append(threads)
    return ", ".join(f"{_listing('seed', list(seeds))} at {' and '.join(map(str, threads))} torch "
                     f"thread{'s' if threads != [1] else ''}" for seeds, threads in threads_for.items())


def _listing(name: str, values: list[int]) -> str:
    """"seeds 0–4" for three or more consecutive values, else "seeds 0, 2" or "seed 0"."""
    name += "s" if len(values) > 1 else ""
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{name} {values[0]}–{values[-1]}"
    return f"{name} {', '.join(map(str, values))}"
