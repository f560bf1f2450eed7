"""Smoke test of the benchmark: it runs end to end on tiny inputs and writes its JSON. Correctness only:
timings are never asserted in tests (see bench/run.py for the ratios and their targets)."""

from __future__ import annotations

import json

import pytest

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


def test_bench_wrn_28_10_at_fp32_and_bf16(tmp_path):
    """The GPU precision path (RobustBench's WideResNet-28-10, ``--amp``) on a CPU with the tiniest flags."""
    bench = load_bench("run.py", "bench_run")
    result = bench.main(["--models", "wrn-28-10", "--n", "2", "--batch-size", "2", "--iters", "1", "--repeats", "1",
                         "--amp", "--threads", "1", "--skip", "trades,memory,scaling,pgd,budget", "--out",
                         str(tmp_path)])
    rows = {(row["precision"], row["name"]): row for row in result["rows"]}
    assert set(rows) == {("fp32", "W-PGD throughput / fwd+bwd floor"), ("bf16", "W-PGD throughput / fwd+bwd floor "
                         "(bf16)"), ("bf16/fp32", "W-PGD bf16 time / fp32 time"),
                         ("bf16/fp32", "fwd+bwd floor bf16 time / fp32 time")}
    assert all(row["median"] > 0 for row in result["rows"]) and result["precisions"] == ["fp32", "bf16"]
    assert sum(p.numel() for p in bench.make_model("wrn-28-10").parameters()) == 36_479_194


def test_bench_refuses_unknown_models_and_parts():
    bench = load_bench("run.py", "bench_run")
    for argv in (["--models", "wrn-99"], ["--skip", "everything"]):
        with pytest.raises(SystemExit):
            bench.parse(argv)


def test_strength_pgd_column_runs_what_its_docstring_says():
    """ART PGD: 50 iterations of step δ/4 (not W-PGD's 100 iterations); W-PGD and W-PGD-Budget: 100."""
    strength = load_bench("strength.py", "bench_strength")
    args = strength.parse_args([])
    pgd = strength.settings_for(args, "pgd")
    assert pgd.max_iter == 50 and pgd.pgd_step_ratio * 1.0 / pgd.max_iter == pytest.approx(1 / 4)
    for key in ("wpgd", "budget"):
        assert strength.settings_for(args, key).max_iter == 100
    quick = strength.settings_for(strength.parse_args(["--quick"]), "pgd")
    assert quick.max_iter == 5 and quick.pgd_step_ratio / quick.max_iter == pytest.approx(1 / 4)
