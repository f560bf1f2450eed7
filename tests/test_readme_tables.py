"""bench/readme_tables.py: the README's tables come with the machine, threads and versions that produced them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks import load_bench

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "2026-11-26-cuda-h200-strength.json"


def _script():
    return load_bench("readme_tables.py", "readme_tables")


def test_strength_table_is_the_results_file_under_its_machine():
    text = _script().main(["strength", str(RESULTS)])
    data = json.loads(RESULTS.read_text())
    assert text.startswith("Machine: NVIDIA H200 (cuda); torch threads 16;")
    rows = [line for line in text.splitlines() if "/255 |" in line]
    expected = [(delta, cells["auto"]["accuracy"]) for res in data["models"]
                for delta, cells in sorted(res["cells"].items(), key=lambda kv: float(kv[0]))]
    assert len(rows) == len(expected)
    for row, (delta, auto) in zip(rows, expected):
        assert f"| {delta}/255 |" in row and row.endswith(f"| {auto:.3f} |")


def test_demo_table_names_one_thread_and_the_versions():
    text = _script().main(["demo", "--quick"])
    first = text.splitlines()[0]
    assert first.startswith("Machine: ") and "torch threads 1;" in first and "ART " in first
    assert "| budget δ | quantity |" in text and "W-AutoAttack" in text


def test_perf_table_is_the_run_files_under_their_machine():
    files = sorted((ROOT / "bench" / "results").glob("2026-11-25-cpu-*.json"))
    text = _script().main(["perf", *map(str, files)])
    heads = [line for line in text.splitlines() if line.startswith("Machine: ")]
    assert len(heads) == len(files) and all("torch threads 1" in h for h in heads)
    for path in files:
        for row in json.loads(path.read_text())["rows"]:
            assert f"| {row['model']} | {row['name']} | {row['median']:.2f} |" in text
