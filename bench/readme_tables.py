"""The README's tables from one command each, with the machine, thread count and versions that produced them.

    python bench/readme_tables.py demo                 # the main job's before/after table (about 3 min, 1 thread)
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
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def provenance(device: str | None = None, threads: int | None = None) -> str:
    """One line naming the machine, the torch threads and the versions."""
    import os

    import art
    import numpy
    import torch

    where = device or f"{cpu_model()}, {os.cpu_count()} logical cores"
    versions = (f"Python {platform.python_version()}, torch {torch.__version__}, ART {art.__version__}, "
                f"numpy {numpy.__version__}")
    return f"Machine: {where}; torch threads {threads or torch.get_num_threads()}; {versions}."


def demo_table(quick: bool = False, seed: int = 0) -> str:
    """Run the main job (one torch thread, as ``art-wdat demo`` does) and return its table under the provenance line."""
    import torch

    from art_wdat.cli.demo import run_demo

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        report = run_demo(out, seed=seed, quick=quick, verbose=False)
    return f"{provenance(threads=1)}\n\n{report.to_markdown()}"


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
    demo = sub.add_parser("demo", help="the main job's before/after table")
    demo.add_argument("--quick", action="store_true", help="seconds-long settings (for tests)")
    strength = sub.add_parser("strength", help="the side-by-side on the shared robust models")
    strength.add_argument("results", type=Path, help="a bench/strength.py --out JSON file")
    perf = sub.add_parser("perf", help="the Performance table from bench/run.py result files")
    perf.add_argument("results", type=Path, nargs="+", help="bench/results/<date>-<device>.json files of bench/run.py")
    args = parser.parse_args(argv)
    if args.table == "demo":
        text = demo_table(args.quick)
    else:
        text = strength_table(args.results) if args.table == "strength" else perf_table(args.results)
    print(text)
    return text


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
