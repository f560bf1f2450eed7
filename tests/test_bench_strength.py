"""Smoke test of bench/strength.py on the real robust models: every column is printed, every cost is feasible,
and W-AutoAttack is at or below every other column at each budget. Skips when ../shared is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import load_bench

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
pytestmark = pytest.mark.skipif(
    not (SHARED / "models" / "zoo.py").is_file() or not (SHARED / "data" / "cifar10_jpeg.npz").is_file(),
    reason="../shared/models and ../shared/data/cifar10_jpeg.npz are absent")


def strength_script():
    return load_bench("strength.py", "bench_strength")


def test_quick_strength_table(tmp_path, capsys):
    bench = strength_script()
    out = tmp_path / "strength.json"
    result = bench.main(["--quick", "--threads", "1", "--out", str(out)])
    table = capsys.readouterr().out
    headers = [line for line in table.splitlines() if line.startswith("| δ |")]
    assert len(headers) == len(result["models"]) == 2
    for header in headers:
        assert [h.strip() for h in header.strip("|").split("|")][1:] == [bench.HEADINGS[k] for k in bench.COLUMNS]
    for res in result["models"]:
        assert res["columns"] == list(bench.COLUMNS)
        assert set(res["cells"]) == {"2", "8"}
        for delta, row in res["cells"].items():
            assert all(cell["feasible"] for cell in row.values()), (res["model"], delta, row)
            auto = row["auto"]["accuracy"]
            assert all(auto <= cell["accuracy"] for cell in row.values()), (res["model"], delta, row)
    assert "VIOLATION" not in table
    written = json.loads(out.read_text())
    assert written["machine"]["threads"] == 1 and written["models"][0]["model"] == "resnet2b"


def test_missing_shared_folder_is_a_clear_error(tmp_path):
    bench = strength_script()
    with pytest.raises(SystemExit, match="must hold models/zoo.py"):
        bench.main(["--quick", "--shared", str(tmp_path)])
