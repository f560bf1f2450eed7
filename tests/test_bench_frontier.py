"""bench/frontier.py: the frontier's points are the means over seeds of the rows of one schedule and split, each
method on its own knob (total KL weight), and the plots are written."""

from __future__ import annotations

import json

from tests.benchmarks import load_bench


def row(kind: str, model: str, variant: str, seed, split: str, lr: float, kwargs: dict, metrics: dict,
        n_train: int = 9000) -> dict:
    return {"kind": kind, "model": model, "variant": variant, "seed": seed, "split": split,
            "schedule": {"n_train": n_train, "epochs": 4, "lr": lr}, "trainer_kwargs": kwargs, "metrics": metrics}


def metrics(clean: float, aa: float, wauto: float) -> dict:
    return {"clean": clean, "autoattack@2": aa, "wauto@2": wauto}


def test_frontier_means_seeds_per_knob_and_plots(tmp_path, capsys):
    frontier = load_bench("frontier.py", "bench_frontier")
    rows = [row("start", "m", "start", None, "val", 0.0, {}, metrics(0.7, 0.5, 0.3)),
            row("finetune", "m", "control", 0, "val", 0.001, {"beta": 6.0}, metrics(0.70, 0.55, 0.32)),
            row("finetune", "m", "control", 1, "val", 0.001, {"beta": 6.0}, metrics(0.72, 0.57, 0.34)),
            row("finetune", "m", "joint-knapsack", 0, "val", 0.001, {"beta": 3.0, "pointwise_beta": 3.0},
                metrics(0.69, 0.54, 0.33)),
            # Another schedule, another split: not on this frontier.
            row("finetune", "m", "control", 0, "val", 0.002, {"beta": 6.0}, metrics(0.1, 0.1, 0.1)),
            row("finetune", "m", "control", 0, "test", 0.001, {"beta": 6.0}, metrics(0.1, 0.1, 0.1))]
    results = tmp_path / "rows.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in rows))
    data = frontier.main(["--results", str(results), "--out", str(tmp_path)])
    trades, joint = data["m"]["methods"]["control"], data["m"]["methods"]["joint-knapsack"]
    assert set(trades) == {6.0} and set(joint) == {6.0}  # both at a total KL weight of 6
    assert abs(trades[6.0]["clean"] - 0.71) < 1e-9 and trades[6.0]["seeds"] == [0, 1]
    assert joint[6.0]["wauto@2"] == 0.33 and data["m"]["start"]["clean"] == 0.7
    for name in ("frontier_clean_val.png", "frontier_autoattack_val.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "pointwise TRADES" in capsys.readouterr().out


def test_limited_data_table_pairs_the_methods_per_training_set_size(tmp_path):
    frontier = load_bench("frontier.py", "bench_frontier")
    rows = [row("finetune", "m", "control", 0, "val", 0.001, {"beta": 12.0}, metrics(0.70, 0.55, 0.30), 1000),
            row("finetune", "m", "joint-knapsack", 0, "val", 0.001, {"beta": 6.0, "pointwise_beta": 6.0},
                metrics(0.69, 0.54, 0.32), 1000),
            row("finetune", "m", "control", 0, "val", 0.001, {"beta": 12.0}, metrics(0.70, 0.55, 0.30), 2000)]
    table = frontier.data_table(rows, "val", 4, 0.001, 12.0)
    assert "| m | 1000 |" in table and "+2.0 |" in table
    assert "| m | 2000 |" not in table  # one method only at 2000: no pair, no row
