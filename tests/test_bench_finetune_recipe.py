"""Smoke test of bench/finetune_recipe.py (issue 19's check) in its quick mode: the command line fine-tunes a shared
model with its held-out selection, the start and the result are judged on test images, and the kept epoch and the
held-out table come back from the checkpoint. Skips when ../shared is absent; the check itself is not run here.
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


def test_quick_recipe_check_runs_the_cli_and_judges_on_test_images(tmp_path, capsys):
    bench = load_bench("finetune_recipe.py", "bench_finetune_recipe")
    results = tmp_path / "rows.jsonl"
    rows = bench.main(["--quick", "--model", "cnn_a_adv", "--work", str(tmp_path), "--results", str(results)])
    out = capsys.readouterr().out
    assert len(rows) == 1 and "held-out split (30 images)" in out and "evaluate it on the test split" in out
    row = rows[0]
    sel = row["validation"]
    # The start was measured, one epoch offered; the kept epoch is the start or that epoch, and never one that broke
    # the tolerances.
    assert len(sel["epochs"]) == 1 and row["kept_epoch"] in (0, 1)
    if row["kept_epoch"] == 1:
        kept, start = sel["epochs"][0], sel["start"]
        assert kept["val_clean_acc"] >= start["val_clean_acc"] - 0.015 - 1e-9
        assert kept["val_wauto_acc"] > start["val_wauto_acc"]
    else:  # the start weights: the test numbers before and after are the same model's
        assert row["after"] == row["start"]
    assert row["recipe"]["optimizer"] == "sgd" and row["recipe"]["epochs"] == 1
    for judged in (row["start"], row["after"]):
        assert 0 <= judged["wauto@4"] <= judged["wauto@2"] <= judged["wauto@1"] <= judged["clean"] <= 1
    assert not results.exists()  # a smoke run writes no result row
