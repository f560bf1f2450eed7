"""bench/readme_tables.py: the README's tables come with the machine, threads and versions that produced them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

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


_RUN = subprocess.run


def _fake_demo(command, **kwargs):
    """Stands for ``art-wdat demo`` in a subprocess: a quick-settings report whose accuracies follow the seed
    (other commands, git's, run)."""
    from art_wdat.cli.demo import DemoConfig, DemoReport
    from art_wdat.evaluation import EvaluationResult
    from art_wdat.evaluation.report import AttackOutcome, BudgetResult

    if "art_wdat" not in command:
        return _RUN(command, **kwargs)
    env = kwargs["env"]
    seed, threads = int(command[command.index("--seed") + 1]), int(command[command.index("--threads") + 1])
    assert "--quick" in command and env["OMP_NUM_THREADS"] == str(threads)

    def result(clean: float) -> EvaluationResult:
        budgets = [BudgetResult(b, clean, {"wauto": AttackOutcome(clean - b, 1.0, b)}, "wauto", 1 - b, 0.5)
                   for b in DemoConfig.quick().budgets]
        return EvaluationResult(2.0, float("inf"), 96, clean, 0.1, 0.1, "x", 4.0, 1.0, budgets, ["wauto"], seed, {})

    config = {**_plain_config(DemoConfig.quick(seed)), "torch_threads": threads}
    report = DemoReport(result(0.7 + seed / 100), result(0.8 + seed / 100), "", config, seconds={"total": 10.0 + seed},
                        settings="quick")
    out = Path(command[command.index("--out") + 1])
    (out / "report.json").write_text(report.to_json())  # the folder holds source.json already
    return subprocess.CompletedProcess(command, 0, "", "")


def test_demo_table_figure_and_ranges_come_from_one_run(tmp_path, monkeypatch):
    from art_wdat.cli.demo import DemoConfig
    from art_wdat.cli.ranges import reference_config

    script = _script()
    monkeypatch.setattr(script.subprocess, "run", _fake_demo)
    out = {"ranges": tmp_path / "ranges.json", "figure": tmp_path / "demo.png", "work": tmp_path / "runs"}
    text = script.main(["demo", "--settings", "quick", "--grid", "0-2@1 0@2", "--jobs", "2",
                        *(f"--{k}={v}" for k, v in out.items())])
    first = text.splitlines()[0]
    assert first.startswith("Machine: ") and "torch threads 1 and 2;" in first and "ART " in first
    assert ("4 run(s) (seeds 0–2 at 1 torch thread, seed 0 at 2 torch threads), median wall time 11 s at 1 thread, "
            "10 s at 2 threads") in text
    assert out["figure"].read_bytes().startswith(b"\x89PNG")
    # Clean accuracy 0.70, 0.71, 0.72 and 0.70: median 0.705; the change is 0.1 in every run.
    assert "| – | clean accuracy | 0.705 [0.700, 0.720] | 0.805 [0.800, 0.820] | +0.100 [+0.100, +0.100] |" in text
    entry = json.loads(out["ranges"].read_text())["settings"]["quick"]
    assert entry["config"] == reference_config(_plain_config(DemoConfig.quick()))
    assert entry["source"].startswith(("git ", "unknown")) and entry["runs"][0]["started"].endswith(" UTC")
    assert [(r["seed"], r["threads"]) for r in entry["runs"]] == [(0, 1), (1, 1), (2, 1), (0, 2)]
    assert entry["rows"][0]["TRADES"] == pytest.approx([0.70, 0.71, 0.72, 0.70])
    # A second run reuses the reports in --work (an interrupted measurement resumes).
    monkeypatch.setattr(script.subprocess, "run", lambda c, **k: _RUN(c, **k) if "art_wdat" not in c else pytest.fail())
    assert script.main(["demo", "--settings", "quick", "--grid", "0@1", *(f"--{k}={v}" for k, v in out.items())])


def _plain_config(config) -> dict:
    """A DemoConfig as report.json has it."""
    from dataclasses import asdict

    return json.loads(json.dumps({**asdict(config), "budgets": list(config.budgets)}))


def _shipped() -> dict:
    from art_wdat.cli.ranges import RANGES_FILE

    return json.loads(RANGES_FILE.read_text())["settings"]


def test_shipped_ranges_are_for_the_demo_as_it_is():
    from art_wdat.cli.demo import DemoConfig
    from art_wdat.cli.ranges import COLUMNS, reference_config

    shipped = _shipped()
    for name, config in (("default", DemoConfig()), ("quick", DemoConfig.quick())):
        entry = shipped[name]
        # Stale ranges (the demo's settings changed since) would compare a run with another demo's numbers.
        assert entry["config"] == reference_config(_plain_config(config)), name
        runs = entry["runs"]
        # Several seeds, and two of them at both 1 and 2 torch threads (a stand-in for other machines).
        assert len({r["seed"] for r in runs}) >= 5 and {r["threads"] for r in runs} == {1, 2}
        assert len({r["seed"] for r in runs if r["threads"] == 2} & {r["seed"] for r in runs if r["threads"] == 1}) >= 2
        budgets = [r["budget"] for r in entry["rows"] if r["budget"] is not None]
        assert sorted(set(budgets)) == sorted(config.budgets)
        assert all(len(row[c]) == len(runs) for row in entry["rows"] for c in COLUMNS)


def test_every_published_demo_table_is_the_shipped_ranges():
    """The README's (and the docs') demo table is what bench/readme_tables.py demo printed with these ranges."""
    table = _script().demo_markdown(_shipped()["default"]).splitlines()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = 0
    for page in pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() == table[0]:
                assert lines[i:i + len(table)] == table, f"{page.relative_to(ROOT)}:{i + 1}"
                found += 1
    assert found, "no page shows the demo's table of ranges (python bench/readme_tables.py demo prints it)"


def test_perf_table_is_the_run_files_under_their_machine():
    files = sorted((ROOT / "bench" / "results").glob("2026-11-25-cpu-*.json"))
    text = _script().main(["perf", *map(str, files)])
    heads = [line for line in text.splitlines() if line.startswith("Machine: ")]
    assert len(heads) == len(files) and all("torch threads 1" in h for h in heads)
    for path in files:
        for row in json.loads(path.read_text())["rows"]:
            assert f"| {row['model']} | {row['name']} | {row['median']:.2f} |" in text
