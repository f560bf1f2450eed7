"""Smoke test of bench/heldout_cost.py (issue 25's timing check) in its quick mode: one fine-tune, its start and epoch
measured by the judge before issue 25 and after, each judge's cost and kept epoch. Skips when ../shared is absent; the
check itself is not run here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import load_bench

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
pytestmark = pytest.mark.skipif(
    not (SHARED / "models" / "zoo.py").is_file() or not (SHARED / "data" / "cifar10_jpeg.npz").is_file(),
    reason="../shared/models and ../shared/data/cifar10_jpeg.npz are absent")


def test_quick_heldout_cost_compares_the_judges_on_one_run(tmp_path, capsys):
    bench = load_bench("heldout_cost.py", "bench_heldout_cost")
    results = tmp_path / "rows.jsonl"
    row = bench.main(["--quick", "--work", str(tmp_path), "--results", str(results)])
    judges = {j["judge"]: j for j in row["judges"]}
    assert set(judges) == {"old", "min-norm", "fmn"}
    # The same weights for every judge (start and one epoch); the old judge's pointwise row is AutoAttack's, the new
    # one's the minimum-norm row from W-AutoAttack's flip costs, and neither is above clean accuracy.
    for name, key in (("old", "val_autoattack_acc"), ("min-norm", "val_min_norm_acc")):
        records = judges[name]["records"]
        assert len(records) == 2 and all(key in r and 0 <= r["val_wauto_acc"] <= r[key] <= r["val_clean_acc"]
                                         for r in records)
        assert judges[name]["kept_epoch"] in (0, 1)
    assert [k for k in judges["fmn"]["records"][0] if k.startswith("val_wauto_acc@")] == ["val_wauto_acc@0.00784314"]
    assert all(0 < j["heldout_cpu_share"] < 1 for j in judges.values())
    assert "held-out share of the fine-tune" in capsys.readouterr().out
    assert not results.exists()  # a smoke run writes no result row
