"""Smoke test of bench/finetune_study.py (the W-TRADES study of issue 14) in its quick mode: the start model, the
pointwise-TRADES control and a variant are evaluated on the same inputs, rows are appended, a second run resumes
without recomputing, and the splits never overlap. Skips when ../shared is absent; the study itself is not run here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.benchmarks import load_bench

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
pytestmark = pytest.mark.skipif(
    not (SHARED / "models" / "zoo.py").is_file() or not (SHARED / "data" / "cifar10_jpeg.npz").is_file(),
    reason="../shared/models and ../shared/data/cifar10_jpeg.npz are absent")


@pytest.fixture(scope="module")
def study():
    return load_bench("finetune_study.py", "bench_finetune_study")


def test_quick_study_appends_rows_and_resumes(study, tmp_path, capsys):
    results, work = tmp_path / "rows.jsonl", tmp_path / "work"
    argv = ["--quick", "--quiet", "--variant", "knapsack-kl", "--results", str(results), "--work", str(work)]
    assert study.main(argv) == 0
    rows = [r for r in study.Results(results).rows]
    assert [(r["kind"], r["variant"]) for r in rows] == [("start", "start"), ("finetune", "control"),
                                                         ("finetune", "knapsack-kl")]
    metrics = {"clean", "autoattack@2", "wauto@1", "wauto@2", "wauto@4", "wpgd@1", "wpgd@2", "wpgd@4"}
    for row in rows:
        m = row["metrics"]
        assert set(m) == metrics
        assert 0.0 <= m["wauto@4"] <= m["wauto@2"] <= m["wauto@1"] <= m["clean"] <= 1.0  # a larger budget: lower
        assert m["wauto@2"] <= m["wpgd@2"] + 1e-9  # W-AutoAttack includes W-PGD
    control, variant = rows[1]["trainer_kwargs"], rows[2]["trainer_kwargs"]
    assert control["p"] == float("inf") and variant["method"] == "knapsack" and "p" not in variant
    assert rows[1]["schedule"] == rows[2]["schedule"]
    assert "knapsack-kl seed 0" in capsys.readouterr().out
    # A second run finds every row and appends nothing.
    assert study.main(argv) == 0
    assert len(study.Results(results).rows) == 3
    assert study.main(["--table", "--results", str(results)]) == 0
    table = capsys.readouterr().out
    assert "| control | 0 |" in table and "| knapsack-kl | 0 |" in table
    assert study.main(["--check", "knapsack-kl", "--results", str(results)]) == 0
    check = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| resnet2b |")]
    assert len(check) == 1 and check[0].rstrip(" |").endswith(("yes", "no"))


def test_splits_are_disjoint(study):
    data = np.load(SHARED / "data" / "cifar10_jpeg.npz")
    order = np.random.default_rng(0).permutation(len(data["y_train"]))
    x_tr, _, x_val, _ = study.load_data(SHARED, 49000, 1000, "val", 1000)
    assert len(x_tr) == 49000 and len(x_val) == 1000
    # Validation images are the last 1,000 of the order, training the first 49,000: no index in both.
    assert np.array_equal(x_val[0], data["x_train"][order[49000]] / np.float32(255))
    assert np.array_equal(x_tr[-1], data["x_train"][order[48999]] / np.float32(255))
    with pytest.raises(ValueError, match="--n-train"):
        study.load_data(SHARED, 49500, 1000, "val", 10)


def test_unknown_variant_is_refused(study):
    with pytest.raises(SystemExit):
        study.parse_args(["--variant", "nope"])
