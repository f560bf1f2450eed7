"""Smoke test of the benchmark: it runs end to end on tiny inputs and writes its JSON. Correctness only:
timings are never asserted in tests (see bench/run.py for the ratios and their targets)."""

from __future__ import annotations

import json

from tests.benchmarks import load_bench


def test_bench_runs_on_tiny_inputs(tmp_path):
    bench = load_bench("run.py", "bench_run")
    result = bench.main(["--quick", "--n", "16", "--batch-size", "8", "--max-iter", "2", "--repeats", "1",
                         "--trades-steps", "1", "--skip", "memory,scaling", "--out", str(tmp_path)])
    names = [row["name"] for row in result["rows"]]
    assert any("ART PGD" in n for n in names) and any("floor" in n for n in names)
    assert all(row["median"] > 0 for row in result["rows"])
    written = json.loads(next(tmp_path.glob("*-cpu.json")).read_text())
    assert written["rows"] == json.loads(json.dumps(result["rows"], default=str))
