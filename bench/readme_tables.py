"""The README's tables from one command each, with the machine, thread count and versions that produced them.

    python bench/readme_tables.py demo                 # the demo's table of medians and ranges, its figure and the
                                                       # ranges the demo compares itself with (10 demo runs, two at
                                                       # a time: about 15 min on 2 idle cores)
    python bench/readme_tables.py strength FILE.json   # the side-by-side on the shared robust models, from a
                                                       # bench/strength.py --out file (run on any device)
    python bench/readme_tables.py perf FILE.json ...   # the Performance table, from bench/run.py result files

Every table is printed under a provenance line: CPU model and cores (or the GPU), torch threads, and the versions of
Python, torch, ART and numpy. On one machine with the same threads and versions the numbers repeat exactly; what may
move on another machine is listed in the README ("Reproducing the numbers").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Where the demo's ranges ship (package data) and where its README figure goes.
RANGES_JSON = ROOT / "art_wdat" / "cli" / "demo_ranges.json"
DEMO_FIGURE = ROOT / "examples" / "demo_curve.png"
#: The demo runs behind the ranges: (seeds)@(torch threads) groups.
DEMO_GRID = "0-4@1,2"
#: The column headings of bench/strength.py's results.
HEADINGS = {"pgd": "ART PGD", "autoattack": "APGD (ART)", "wpgd": "W-PGD", "budget": "W-PGD-Budget",
            "knapsack": "knapsack", "auto": "W-AutoAttack"}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> str:
    """The versions of Python, torch, ART and numpy."""
    import art
    import numpy
    import torch

    return (f"Python {platform.python_version()}, torch {torch.__version__}, ART {art.__version__}, "
            f"numpy {numpy.__version__}")


def provenance(device: str | None = None, threads: int | str | None = None) -> str:
    """One line naming the machine, the torch threads and the versions."""
    import torch

    where = device or f"{cpu_model()}, {os.cpu_count()} logical cores"
    return f"Machine: {where}; torch threads {threads or torch.get_num_threads()}; {versions()}."


# --------------------------------------------------------------------------------------------------
# the demo: runs over seeds and torch threads -> table of medians and ranges, figure, the ranges the demo reads
# --------------------------------------------------------------------------------------------------


def parse_ints(text: str) -> list[int]:
    """ "0-4" or "1,2" (or both, "0-2,5") as a list of integers."""
    values: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        values += list(range(int(low), int(high) + 1)) if high else [int(low)]
    return values


def parse_grid(text: str) -> list[tuple[int, int]]:
    """ "SEEDS@THREADS ..." as (seed, threads) pairs: "0-4@1 0-1@2" is seeds 0-4 at 1 thread, 0 and 1 at 2."""
    grid: list[tuple[int, int]] = []
    for group in text.split():
        seeds, _, threads = group.partition("@")
        grid += [(s, n) for n in parse_ints(threads or "1") for s in parse_ints(seeds)]
    if not grid:
        raise argparse.ArgumentTypeError(f"no run in {text!r}")
    return list(dict.fromkeys(grid))


def demo_run(settings: str, seed: int, threads: int, work: Path) -> Path:
    """One ``art-wdat demo`` in its own process with ``threads`` torch threads; the path of its report.json.

    A report already in ``work`` is reused (an interrupted measurement resumes). Beside it, source.json records the
    code the run started from (:func:`source_state`) and when.
    """
    out = work / settings / f"seed{seed}-threads{threads}"
    report = out / "report.json"
    if report.is_file():
        return report
    out.mkdir(parents=True, exist_ok=True)
    (out / "source.json").write_text(json.dumps({"source": source_state(),
                                                 "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))
    command = [sys.executable, "-m", "art_wdat", "demo", "--seed", str(seed), "--threads", str(threads),
               "--out", str(out), "-q", *(["--quick"] if settings == "quick" else [])]
    # PASSIVE: OpenMP threads that wait sleep instead of spinning. The numbers do not change (the work is split by
    # the thread count alone), but on a machine that other jobs keep busy, spinning threads made a 2-thread run of
    # this small model up to 60 times slower (shared 2-core machine: 300 training steps 254 s against 3.8 s).
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return report


def demo_runs(settings: str, grid: list[tuple[int, int]], work: Path, jobs: int) -> list[dict]:
    """Every (seed, threads) run of the demo, ``jobs`` at a time: [{"seed", "threads", "report"}], in grid order."""
    from art_wdat.cli.demo import DemoReport

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        paths = list(pool.map(lambda run: demo_run(settings, run[0], run[1], work), grid))
    return [{"seed": seed, "threads": n, "report": DemoReport.from_json(path.read_text()), **_source(path.parent)}
            for (seed, n), path in zip(grid, paths)]


def _source(out: Path) -> dict:
    try:
        return json.loads((out / "source.json").read_text())
    except (OSError, ValueError):
        return {"source": "unknown", "started": "unknown"}


def source_state() -> str:
    """The git commit of the working tree and how many files differ from it ("unknown" without git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"git {head}" + (f" + {len(changed)} modified file(s)" if changed else "")


def reference_entry(runs: list[dict]) -> dict:
    """The ranges file's entry for one settings: the configuration, the runs, and every run's value of every cell."""
    from art_wdat import __version__
    from art_wdat.cli.ranges import COLUMNS, reference_config, table_rows
    from art_wdat.evaluation import json_safe

    configs = [reference_config(r["report"].config) for r in runs]
    if any(c != configs[0] for c in configs):
        raise ValueError("the runs of one settings differ in more than their seed and threads")
    tables = [table_rows(r["report"].before, r["report"].after) for r in runs]
    rows = [{"budget": row["budget"], "quantity": row["quantity"],
             **{c: [table[i][c] for table in tables] for c in COLUMNS}} for i, row in enumerate(tables[0])]
    return json_safe({
        "config": configs[0], "machine": f"{cpu_model()}, {os.cpu_count()} logical cores",
        "versions": versions(), "date": time.strftime("%Y-%m-%d"),
        "art_wdat": __version__, "source": "; ".join(dict.fromkeys(r["source"] for r in runs)),
        "started": f"{min(r['started'] for r in runs)} to {max(r['started'] for r in runs)}",
        "runs": [{"seed": r["seed"], "threads": r["threads"], "seconds": r["report"].seconds.get("total"),
                  "source": r["source"], "started": r["started"]} for r in runs],
        "rows": rows})


def write_ranges(entries: dict, path: Path) -> None:
    """Merge ``entries`` (settings -> entry) into the ranges file (other settings' entries are kept)."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("settings", {}).update(entries)
    data["written_by"] = "python bench/readme_tables.py demo"
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _cell(span: tuple, decimals: int, signed: bool) -> str:
    """ "median [min, max]", rounded to ``decimals`` (a value inside the range still is once rounded alike)."""
    import math

    if math.isnan(span[1]):
        return "–"
    fmt = f"{{:{'+' if signed else ''}.{decimals}f}}"
    low, median, high = (fmt.format(v) for v in span)
    return f"{median} [{low}, {high}]"


def demo_markdown(entry: dict) -> str:
    """The README's demo table: each cell's median and [min, max] over the runs of ``entry``."""
    from art_wdat.cli.ranges import COLUMNS, cell_ranges

    lines = ["| budget δ | quantity | " + " | ".join(f"{c}: median [min, max]" for c in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for row in cell_ranges(entry):
        decimals = 2 if row["quantity"].startswith("Υ") else 3
        budget = "–" if row["budget"] is None else f"{row['budget']:g}"
        cells = [_cell(row[c], decimals, signed=c == "change") for c in COLUMNS]
        lines.append(f"| {budget} | {row['quantity']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def demo_figure(entry: dict, path: Path) -> Path:
    """Accuracy against budget before and after the fine-tune: each attack's median over the runs, its range as a
    band (clean accuracy at δ = 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from art_wdat.cli.ranges import COLUMNS, cell_ranges, spanned

    rows = cell_ranges(entry)
    clean = next(r for r in rows if r["quantity"] == "clean accuracy")
    attacks = list(dict.fromkeys(r["quantity"] for r in rows if r["budget"] is not None
                                 and not r["quantity"].startswith("R^")))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, column in zip(axes, COLUMNS[:2]):
        for attack in attacks:
            points = [(0.0, clean[column])] + [(r["budget"], r[column]) for r in rows if r["quantity"] == attack]
            x = [p[0] for p in points]
            line, = ax.plot(x, [p[1][1] for p in points], marker="o", label=attack)
            ax.fill_between(x, [p[1][0] for p in points], [p[1][2] for p in points], color=line.get_color(),
                            alpha=0.2, linewidth=0)
        ax.set_title(column)
        ax.set_xlabel("budget δ (p = 2, ground ℓ∞)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="lower left", fontsize=8)
    runs = len(entry["runs"])
    fig.suptitle(f"art-wdat demo: median and range over {runs} run{'s' if runs != 1 else ''} ({spanned(entry)})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def leave_one_out(entry: dict) -> list[float]:
    """For each run, the fraction of its cells inside the ranges of the other runs: how often a run on an unseen
    machine may be expected inside (an estimate; per cell, (n - 1)/(n + 1) for n exchangeable runs)."""
    import math

    from art_wdat.cli.ranges import COLUMNS

    fractions = []
    for i in range(len(entry["runs"])):
        inside = total = 0
        for row in entry["rows"]:
            for column in COLUMNS:
                values = [v for v in row[column] if v is not None and math.isfinite(v)]
                if len(values) != len(row[column]):
                    continue
                others = values[:i] + values[i + 1:]
                total += 1
                inside += min(others) <= values[i] <= max(others)
        fractions.append(inside / total if total else math.nan)
    return fractions


def demo_table(settings: list[str], grid: list[tuple[int, int]], jobs: int = 2, work: Path | None = None,
               ranges: Path = RANGES_JSON, figure: Path = DEMO_FIGURE) -> str:
    """Run the demo for every (seed, threads) of ``grid`` for each settings ("default", "quick"); write their ranges
    to ``ranges`` and, for the first settings, the figure; return that settings' table under its provenance line."""
    from art_wdat.cli.ranges import spanned

    with tempfile.TemporaryDirectory() as scratch:
        entries = {name: reference_entry(demo_runs(name, grid, Path(work or scratch), jobs)) for name in settings}
    write_ranges(entries, ranges)
    entry = entries[settings[0]]
    demo_figure(entry, figure)
    threads = sorted({n for _, n in grid})
    times = []
    for n in threads:
        seconds = [r["seconds"] for r in entry["runs"] if r["threads"] == n and r["seconds"] is not None]
        times.append(f"{statistics.median(seconds):.0f} s at {n} thread{'s' if n > 1 else ''}")
    head = (f"{provenance(threads=' and '.join(map(str, threads)))}\n\n"
            f"{settings[0].capitalize()} settings, {len(entry['runs'])} run(s) ({spanned(entry)}), median wall time "
            f"{', '.join(times)}. Runs started {entry['started']} from art-wdat {entry['art_wdat']}, "
            f"{entry['source']}. Figure: {_shown(figure)}; ranges: {_shown(ranges)}.")
    if len(entry["runs"]) > 2:
        loo = sorted(leave_one_out(entry))
        head += (f" Each run left out in turn falls inside the other runs' ranges in {100 * loo[0]:.0f}–"
                 f"{100 * loo[-1]:.0f}% of its cells (median {100 * statistics.median(loo):.0f}%).")
    return f"{head}\n\n{demo_markdown(entry)}"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def strength_table(path: Path) -> str:
    """The README's side-by-side table from a ``bench/strength.py --out`` file, under its own provenance."""
    data = json.loads(path.read_text())
    m = data["machine"]
    where = m.get("gpu") or m.get("cpu")
    head = (f"Machine: {where} ({m['device']}); torch threads {m['threads']}; Python {m['python']}, "
            f"torch {m['torch']}, ART {m['art']}.")
    columns = data["models"][0]["columns"]
    rows = ["| model (clean) | δ | " + " | ".join(HEADINGS[k] for k in columns) + " |",
            "|---|---|" + "---|" * len(columns)]
    for res in data["models"]:
        for i, (delta, cells) in enumerate(sorted(res["cells"].items(), key=lambda kv: float(kv[0]))):
            label = f"{res['model']} ({res['clean']:.3f})" if i == 0 else ""
            values = " | ".join(f"{cells[k]['accuracy']:.3f}" for k in columns)
            rows.append(f"| {label} | {delta}/255 | {values} |")
    return head + "\n\n" + "\n".join(rows)


def perf_table(paths: list[Path]) -> str:
    """The README's Performance table from ``bench/run.py`` result files, each model's rows under the line naming
    the machine, threads, versions and sizes they were measured with."""
    blocks = []
    for path in paths:
        d = json.loads(path.read_text())
        where = d.get("cpu") or d["machine"]
        head = (f"Machine: {where} ({d['device']}), {d['date']}; torch threads {d['threads']}; torch {d['torch']}; "
                f"data {d['data']}, N = {d['n']}, T = {d['max_iter']}, batch {d['batch_size']}, {d['repeats']} "
                "repeats.")
        rows = ["| model | measure | median | min–max | target | verdict |", "|---|---|---|---|---|---|"]
        for r in d["rows"]:
            lo, hi = min(r["ratios"]), max(r["ratios"])
            rows.append(f"| {r['model']} | {r['name']} | {r['median']:.2f} | {lo:.2f}–{hi:.2f} | {r['target'] or '—'} "
                        f"| {r['verdict']} |")
        blocks.append(head + "\n\n" + "\n".join(rows))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="readme_tables.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="table", required=True)
    demo = sub.add_parser("demo", help="the demo's table of medians and ranges, its figure and its ranges file")
    demo.add_argument("--settings", default="default,quick",
                      help="demo settings to measure, the first one tabled and plotted (default,quick)")
    demo.add_argument("--grid", type=parse_grid, default=parse_grid(DEMO_GRID),
                      help=f"runs as SEEDS@THREADS groups, e.g. '0-4@1 0-1@2' ({DEMO_GRID!r}: seeds 0-4 at 1 and at 2 "
                           "torch threads)")
    demo.add_argument("--jobs", type=int, default=2, help="runs at a time (2)")
    demo.add_argument("--work", type=Path, default=None,
                      help="keep each run's report here and reuse those already there (default: a temporary folder)")
    demo.add_argument("--ranges", type=Path, default=RANGES_JSON, help="the ranges file to write (package data)")
    demo.add_argument("--figure", type=Path, default=DEMO_FIGURE, help="the figure to write")
    strength = sub.add_parser("strength", help="the side-by-side on the shared robust models")
    strength.add_argument("results", type=Path, help="a bench/strength.py --out JSON file")
    perf = sub.add_parser("perf", help="the Performance table from bench/run.py result files")
    perf.add_argument("results", type=Path, nargs="+", help="bench/results/<date>-<device>.json files of bench/run.py")
    args = parser.parse_args(argv)
    if args.table == "demo":
        text = demo_table([s for s in args.settings.split(",") if s], args.grid, args.jobs, args.work, args.ranges,
                          args.figure)
    else:
        text = strength_table(args.results) if args.table == "strength" else perf_table(args.results)
    print(text)
    return text


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
