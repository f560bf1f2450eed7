"""Smoke test of bench/finetune_shared_model.py in its quick mode: a shared robust model is fine-tuned with W-TRADES
and judged before and after. Skips when ../shared is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import load_bench

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
needs_shared = pytest.mark.skipif(
    not (SHARED / "models" / "zoo.py").is_file() or not (SHARED / "data" / "cifar10_jpeg.npz").is_file(),
    reason="../shared/models and ../shared/data/cifar10_jpeg.npz are absent")


def finetune_script():
    return load_bench("finetune_shared_model.py", "bench_finetune_shared_model")


@pytest.mark.slow
@needs_shared
def test_quick_finetune_of_a_shared_model(capsys):
    results = finetune_script().main(["--quick", "--threads", "1"])
    assert capsys.readouterr().out.strip()
    assert set(results) == {"before", "after"}
    for name in ("before", "after"):
        acc = results[name]
        assert 0.3 < acc["clean"] <= 1.0  # a real robust model, not one that predicts one class
        assert acc["W-AutoAttack"] < acc["clean"] and acc["AutoAttack"] <= acc["clean"]


def test_missing_shared_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="must hold models/zoo.py"):
        finetune_script().main(["--quick", "--shared", str(tmp_path)])
