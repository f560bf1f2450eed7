"""The frontier of W-TRADES against pointwise TRADES: W-AutoAttack accuracy at equal clean (and AutoAttack) accuracy.

    python bench/frontier.py                       # table and plots from bench/results/wtrades_study.jsonl
    python bench/frontier.py --split test --seeds 0,1
    python bench/frontier.py --by-data 12           # limited data: both methods at total KL weight 12 per n_train

Reads the rows of ``bench/finetune_study.py`` that share one schedule (``--n-train``, ``--epochs``, ``--lr``) and one
split, and draws each method as a line over its strength knob, the total KL weight: pointwise TRADES (the study's
``control``, β) and the joint W-TRADES objective (``joint-knapsack`` with β = β_pt, total β + β_pt). Points are
means over the seeds present. Two figures in ``docs/experiments/``: clean accuracy against W-AutoAttack at 2/255,
and AutoAttack at 2/255 against W-AutoAttack at 2/255, one panel per model, the start model as a star.

The runs themselves, e.g. for one model on the validation split (total KL weight B)::

    python bench/finetune_study.py --model resnet2b --split val --n-train 9000 --epochs 4 --lr 0.001 \\
        --beta B --variant joint-knapsack --set beta=B/2 pointwise_beta=B/2 --auto-iter 20 --aa-iter 25
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The methods on the frontier: the study's variant name, a label, and the knob (total KL weight) of a row.
METHODS = {
    "control": ("pointwise TRADES", lambda r: r["trainer_kwargs"]["beta"]),
    "joint-knapsack": ("W-TRADES (joint, knapsack)",
                       lambda r: r["trainer_kwargs"]["beta"] + r["trainer_kwargs"].get("pointwise_beta", 6.0)),
}
METRICS = ("clean", "autoattack@2", "wauto@2")


def frontier(rows: list[dict], split: str, n_train: int, epochs: int, lr: float,
             seeds: list[int] | None) -> dict[str, dict]:
    """Per model: the start's metrics and, per method, ``{knob: mean metrics over the seeds}``."""
    out: dict[str, dict] = {}
    runs: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["split"] != split:
            continue
        if r["kind"] == "start":
            out.setdefault(r["model"], {"methods": {}})["start"] = r["metrics"]
            continue
        s = r["schedule"]
        if (s["n_train"], s["epochs"], s["lr"]) != (n_train, epochs, lr) or r["variant"] not in METHODS:
            continue
        if seeds is not None and r["seed"] not in seeds:
            continue
        runs[(r["model"], r["variant"], METHODS[r["variant"]][1](r))].append(r)
    for (model, variant, knob), rs in runs.items():
        entry = out.setdefault(model, {"methods": {}})
        mean = {m: float(np.mean([r["metrics"][m] for r in rs])) for m in METRICS}
        mean["seeds"] = sorted(r["seed"] for r in rs)
        entry["methods"].setdefault(variant, {})[knob] = mean
    return {m: e for m, e in out.items() if e["methods"]}


def markdown(data: dict[str, dict]) -> str:
    lines = ["| model | method | total KL weight | seeds | clean | AutoAttack @2/255 | W-AutoAttack @2/255 |",
             "|---|---|---|---|---|---|---|"]
    for model, entry in data.items():
        start = entry.get("start")
        if start:
            lines.append(f"| {model} | start | – | – | " + " | ".join(f"{start[m]:.3f}" for m in METRICS) + " |")
        for variant, points in entry["methods"].items():
            for knob in sorted(points):
                p = points[knob]
                lines.append(f"| {model} | {METHODS[variant][0]} | {knob:g} | {','.join(map(str, p['seeds']))} | "
                             + " | ".join(f"{p[m]:.3f}" for m in METRICS) + " |")
    return "\n".join(lines)


def data_table(rows: list[dict], split: str, epochs: int, lr: float, total: float) -> str:
    """Limited data: both methods at total KL weight ``total`` for every training-set size present, W-AutoAttack
    @2/255 of W-TRADES minus TRADES' beside (one row per size; means over the seeds present)."""
    sizes = sorted({r["schedule"]["n_train"] for r in rows if r["kind"] == "finetune" and r["split"] == split})
    lines = ["| model | training images | TRADES: clean / AA@2 / W-AA@2 | W-TRADES: clean / AA@2 / W-AA@2 "
             "| W-AA@2, W-TRADES − TRADES (points) |", "|---|---|---|---|---|"]
    for n in sizes:
        data = frontier(rows, split, n, epochs, lr, None)
        for model, entry in data.items():
            pair = [entry["methods"].get(v, {}).get(total) for v in METHODS]
            if any(p is None for p in pair):
                continue
            cells = [" / ".join(f"{p[m]:.3f}" for m in METRICS) for p in pair]
            gap = 100 * (pair[1]["wauto@2"] - pair[0]["wauto@2"])
            lines.append(f"| {model} | {n} | {cells[0]} | {cells[1]} | {gap:+.1f} |")
    return "\n".join(lines)


def plot(data: dict[str, dict], x_metric: str, path: Path, title: str) -> Path:
    """One panel per model: ``x_metric`` against W-AutoAttack at 2/255, a line per method over its knob."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"clean": "clean accuracy", "autoattack@2": "AutoAttack accuracy @2/255"}
    fig, axes = plt.subplots(1, len(data), figsize=(5.2 * len(data), 4.2), squeeze=False)
    for ax, (model, entry) in zip(axes[0], data.items()):
        for variant, points in entry["methods"].items():
            knobs = sorted(points)
            xs, ys = [points[k][x_metric] for k in knobs], [points[k]["wauto@2"] for k in knobs]
            ax.plot(xs, ys, marker="o", label=METHODS[variant][0])
            for k, x, y in zip(knobs, xs, ys):
                ax.annotate(f"{k:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if entry.get("start"):
            ax.plot(entry["start"][x_metric], entry["start"]["wauto@2"], marker="*", markersize=12, color="black",
                    linestyle="none", label="start")
        ax.set_xlabel(names[x_metric])
        ax.set_ylabel("W-AutoAttack accuracy @2/255 (p = 2, ℓ∞)")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "wtrades_study.jsonl")
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--n-train", type=int, default=9000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--seeds", default=None, help="comma-separated (default: every seed present)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "experiments")
    ap.add_argument("--by-data", type=float, default=None, metavar="TOTAL",
                    help="print the limited-data table at this total KL weight and exit")
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    if args.by_data is not None:
        print(data_table(rows, args.split, args.epochs, args.lr, args.by_data))
        return {}
    seeds = None if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    data = frontier(rows, args.split, args.n_train, args.epochs, args.lr, seeds)
    print(markdown(data))
    if data:
        what = (f"{args.split} split; {args.n_train} training images, {args.epochs} epochs, SGD lr {args.lr:g} cosine; "
                "labels: total KL weight")
        for metric, name in (("clean", "frontier_clean"), ("autoattack@2", "frontier_autoattack")):
            print(f"Wrote {plot(data, metric, args.out / f'{name}_{args.split}.png', what)}")
    return data


if __name__ == "__main__":
    main()
