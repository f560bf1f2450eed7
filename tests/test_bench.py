"""Smoke test of the benchmark: it runs end to end on tiny inputs and writes its JSON. Correctness only:
timings are never asserted in tests (see bench/run.py for the ratios and their targets)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_on_tiny_inputs(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    result = bench.main(["--quick", "--n", "16", "--batch-size", "8", "--max-iter", "2", "--repeats", "1",
                         "--trades-steps", "1", "--skip", "memory,scaling", "--out", str(tmp_path)])
    names = [row["name"] for row in result["rows"]]
    assert any("ART PGD" in n for n in names) and any("floor" in n for n in names)
    assert all(row["median"] > 0 for row in result["rows"])
    written = json.loads(next(tmp_path.glob("*-cpu.json")).read_text())
    assert written["rows"] == json.loads(json.dumps(result["rows"], default=str))
