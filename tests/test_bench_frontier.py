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


def test_gaps_are_against_trades_interpolated_at_equal_clean_accuracy(tmp_path):
    frontier = load_bench("frontier.py", "bench_frontier")
    rows = [row("finetune", "m", "control", 0, "val", 0.001, {"beta": 3.0}, metrics(0.72, 0.56, 0.30)),
            row("finetune", "m", "control", 0, "val", 0.001, {"beta": 12.0}, metrics(0.68, 0.58, 0.34)),
            # Halfway in clean accuracy: TRADES there has AA 0.57 and W-AA 0.32.
            row("finetune", "m", "cheap-kl", 0, "val", 0.001, {"beta": 6.0, "pointwise_beta": 6.0,
                                                                "cheapness_weight": 4.0}, metrics(0.70, 0.575, 0.335)),
            # Above on W-AA but below on AutoAttack: does not count for the target.
            row("finetune", "m", "cheap-kl", 0, "val", 0.001, {"beta": 6.0, "pointwise_beta": 6.0,
                                                                "cheapness_weight": 16.0}, metrics(0.69, 0.56, 0.36)),
            # Outside TRADES' clean range: no gap.
            row("finetune", "m", "mma", 0, "val", 0.001, {"beta": 6.0, "eps": 4 / 255}, metrics(0.75, 0.6, 0.4))]
    data = frontier.frontier(rows, "val", 9000, 4, 0.001, None)
    entry = data["m"]
    w_gap, aa_gap = frontier.gaps(entry, entry["methods"]["cheap-kl"][4.0])
    assert abs(w_gap - 1.5) < 1e-9 and abs(aa_gap - 0.5) < 1e-9
    assert frontier.gaps(entry, entry["methods"]["mma"][4.0]) is None
    table = frontier.target_table(data)
    assert "| m | W-TRADES, KL weighted by cheapness | +1.5 | λ = 4 | +0.5 | yes |" in table
    assert "| m | MMA-style CE at the knapsack's points + TRADES | none" in table
    assert "out of range" in frontier.markdown(data)


def test_flip_cost_plot_reads_the_saved_costs(tmp_path):
    import numpy as np

    frontier = load_bench("frontier.py", "bench_frontier")
    (tmp_path / "flip_costs").mkdir()
    rows = []
    for i, (kind, variant, kwargs) in enumerate([("start", "start", {}), ("finetune", "control", {"beta": 12.0}),
                                                  ("finetune", "control", {"beta": 3.0})]):
        np.save(tmp_path / "flip_costs" / f"{i}.npy", np.array([0.0, 1 / 255, 3 / 255, np.inf], dtype=np.float32))
        r = row(kind, "m", variant, None if kind == "start" else 0, "test", 0.001, kwargs, metrics(0.7, 0.5, 0.3))
        rows.append({**r, "costs": f"flip_costs/{i}.npy"})
    data = frontier.frontier(rows, "test", 9000, 4, 0.001, None)
    curves = frontier.cost_curves(data["m"], tmp_path)
    assert set(curves) == {"start", "pointwise TRADES (β = 12)"}  # the knob --costs draws TRADES at
    np.testing.assert_allclose(curves["start"][:3], [0.0, 1.0, 3.0], rtol=1e-5)
    # Budget N·δ² = 4 at δ = 1 affords 0 + 1 (the next, 9, does not): half the inputs left, threshold 1/255.
    assert frontier.knapsack_threshold(curves["start"], 1.0) == (0.5, curves["start"][1])
    assert "| m | start | 0.750 | 0.500 | 1.00 |" in frontier.threshold_table(data, tmp_path, delta=1.0)
    out = frontier.plot_costs(data, tmp_path, tmp_path / "costs.png", "t")
    assert out is not None and out.read_bytes()[:4] == b"\x89PNG"


def test_trades_reference_is_its_upper_envelope_not_its_knob_order():
    frontier = load_bench("frontier.py", "bench_frontier")
    # β = 3 and 24 are beaten on both axes by β = 12: at clean 0.687 TRADES reaches 0.299, not a blend with 0.287.
    trades = {3.0: metrics(0.687, 0.55, 0.287), 6.0: metrics(0.690, 0.55, 0.295), 12.0: metrics(0.688, 0.55, 0.299),
              24.0: metrics(0.679, 0.53, 0.295)}
    assert frontier.trades_at(trades, 0.687, "wauto@2") == 0.299
    assert abs(frontier.trades_at(trades, 0.689, "wauto@2") - 0.297) < 1e-9  # between the envelope's two points
    assert frontier.trades_at(trades, 0.691, "wauto@2") is None and frontier.trades_at(trades, 0.67, "wauto@2") is None
