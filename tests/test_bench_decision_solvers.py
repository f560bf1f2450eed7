"""Smoke test of bench/decision_solvers.py: it runs end to end on tiny inputs and writes its JSON (no numbers
asserted beyond what the maths fixes: no verified cost below the exact minimum)."""

from __future__ import annotations

import json

from tests.benchmarks import load_bench


def test_decision_bench_runs_on_tiny_inputs(tmp_path):
    bench = load_bench("decision_solvers.py", "bench_decision_solvers")
    out = tmp_path / "ds.json"
    result = bench.main(["--n", "12", "--norms", "inf", "--hsj-n", "4", "--hsj-iter", "0", "--max-queries", "300",
                         "--trees", "5", "--out", str(out)])
    assert json.loads(out.read_text())["n"] == 12
    assert {r["box"] for r in result["linear"]} == {"unit", "per-feature"}
    assert all(r["below_exact"] == 0 for r in result["linear"])
    assert [r["attack"] for r in result["forest"]] == ["rays+rays-t+refine"]
    assert all(r["queries_max"] <= 300 for r in result["linear"] if "queries_max" in r)
