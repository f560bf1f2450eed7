"""The frontier of W-TRADES and issue 20's methods against pointwise TRADES: W-AutoAttack at equal clean accuracy.

    python bench/frontier.py                           # validation: table, gaps to TRADES, plots
    python bench/frontier.py --split test              # test images, means over the seeds present
    python bench/frontier.py --split test --costs      # also the flip-cost distributions, before and after
    python bench/frontier.py --by-data 12              # limited data: both methods at total KL weight 12 per n_train

Reads the rows of ``bench/finetune_study.py`` that share one schedule (``--n-train``, ``--epochs``, ``--lr``) and one
split, and draws each method as a line over its own strength knob (:data:`METHODS`). Points are means over the
seeds present. Each point is also compared with pointwise TRADES *at equal clean accuracy*: the best W-AutoAttack
(and AutoAttack) accuracy TRADES reaches at that clean accuracy or higher, linear between the points of its upper
envelope, within TRADES' own clean range (:func:`trades_at`); issue 20's target is a W-AutoAttack gap of at least 1
point with an AutoAttack gap of at least 0. Figures in ``docs/experiments/``: clean and AutoAttack at 2/255 against
W-AutoAttack at 2/255, one panel per model, the start model as a star; with ``--costs``, the distribution of the
verified ℓ∞ flip costs (W-AutoAttack's, saved by the study) of the start and of one point per method, and the
knapsack's threshold t*: W-AutoAttack at δ flips every input whose flip cost is below it.

The runs, e.g. pointwise TRADES and W-TRADES for one model on the validation split (total KL weight B)::

    python bench/finetune_study.py --model resnet2b --split val --n-train 9000 --epochs 4 --lr 0.001 \\
        --beta B --variant joint-knapsack --set beta=B/2 pointwise_beta=B/2 --auto-iter 20 --aa-iter 25

and the hypotheses (``--no-control``; ``--split test --no-wpgd --seeds 0,1`` on test images)::

    ... --beta 6 --variant cheap-kl --set cheapness_weight=L             # L = 1, 4, 16
    ... --beta 6 --variant mma --set eps=D                               # D = 2/255, 4/255, 8/255
    ... --beta 6 --variant joint-knapsack-large --set beta=B pointwise_beta=B    # B = 1.5, 3, 6
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _total_kl(r: dict) -> float:
    return r["trainer_kwargs"]["beta"] + r["trainer_kwargs"].get("pointwise_beta", 6.0)


class Method(NamedTuple):
    """A line of the frontier: its label, its knob's name, the knob of a row, and the knob its flip costs are
    drawn at (``--costs``)."""

    label: str
    knob: str
    knob_of: Callable[[dict], float]
    costs_at: float


CONTROL = "control"
#: The methods on the frontier, by the study's variant name.
METHODS: dict[str, Method] = {
    CONTROL: Method("pointwise TRADES", "β", lambda r: r["trainer_kwargs"]["beta"], 12.0),
    "joint-knapsack": Method("W-TRADES (joint, knapsack)", "β + β_pt", _total_kl, 12.0),
    "cheap-kl": Method("W-TRADES, KL weighted by cheapness", "λ", lambda r: r["trainer_kwargs"]["cheapness_weight"],
                       4.0),
    "mma": Method("MMA-style CE at the knapsack's points + TRADES", "δ·255",
                  lambda r: round(r["trainer_kwargs"]["eps"] * 255, 6), 4.0),
    "joint-knapsack-large": Method("W-TRADES, δ = 4/255", "β + β_pt", _total_kl, 6.0),
    "trades-eps4": Method("pointwise TRADES, ε = 4/255", "β", lambda r: r["trainer_kwargs"]["beta"], 6.0),
}
METRICS = ("clean", "autoattack@2", "wauto@2")
#: Reported when present (test images): W-AutoAttack at the other budgets.
EXTRA = ("wauto@1", "wauto@4")
#: Issue 20's target against TRADES at equal clean accuracy, in points: W-AutoAttack @2/255 and AutoAttack @2/255.
TARGET_WAUTO, TARGET_AA = 1.0, 0.0


def _plan_key(r: dict) -> str:
    return json.dumps(r.get("plan", {}), sort_keys=True)


def frontier(rows: list[dict], split: str, n_train: int, epochs: int, lr: float,
             seeds: list[int] | None) -> dict[str, dict]:
    """Per model: the start's metrics (evaluated with the runs' plan) and, per method, ``{knob: mean metrics}``."""
    starts: dict[tuple, dict] = {}
    runs: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["split"] != split:
            continue
        if r["kind"] == "start":
            starts[(r["model"], _plan_key(r))] = r
            continue
        s = r["schedule"]
        if (s["n_train"], s["epochs"], s["lr"]) != (n_train, epochs, lr) or r["variant"] not in METHODS:
            continue
        if seeds is not None and r["seed"] not in seeds:
            continue
        runs[(r["model"], r["variant"], METHODS[r["variant"]].knob_of(r))].append(r)
    out: dict[str, dict] = {}
    for (model, variant, knob), rs in runs.items():
        entry = out.setdefault(model, {"methods": {}, "costs": {}})
        start = starts.get((model, _plan_key(rs[0])))
        if start is not None:
            entry["start"] = start["metrics"]
            entry["costs"]["start"] = [start["costs"]] if start.get("costs") else []
        present = [m for m in (*METRICS, *EXTRA) if all(m in r["metrics"] for r in rs)]
        mean: dict = {m: float(np.mean([r["metrics"][m] for r in rs])) for m in present}
        mean["seeds"] = sorted(r["seed"] for r in rs)
        entry["methods"].setdefault(variant, {})[knob] = mean
        entry["costs"][(variant, knob)] = [r["costs"] for r in rs if r.get("costs")]
    return out


def trades_at(points: dict[float, dict], clean: float, metric: str) -> float | None:
    """The best ``metric`` TRADES reaches at clean accuracy ``clean`` or higher: its upper envelope (the points no
    other TRADES point beats on both), linear between envelope points; None outside TRADES' clean range.

    The envelope, not TRADES' points in knob order: a larger β need not cost clean accuracy on a 1,000-image split,
    and a line through points that go back and forth in clean accuracy would credit noise as a gap.
    """
    pts = sorted((p["clean"], p[metric]) for p in points.values())
    if len(pts) < 2 or not pts[0][0] - 1e-12 <= clean <= pts[-1][0] + 1e-12:
        return None
    envelope = [pt for pt in pts if not any(o[0] >= pt[0] and o[1] > pt[1] for o in pts)]
    xs, ys = [pt[0] for pt in envelope], [pt[1] for pt in envelope]
    return float(np.interp(clean, xs, ys))  # flat beyond the envelope's ends: its best at higher clean accuracy


def gaps(entry: dict, point: dict) -> tuple[float, float] | None:
    """(W-AutoAttack @2/255, AutoAttack @2/255) of ``point`` minus TRADES' at its clean accuracy, in points."""
    trades = entry["methods"].get(CONTROL)
    if not trades:
        return None
    w, a = (trades_at(trades, point["clean"], m) for m in ("wauto@2", "autoattack@2"))
    if w is None or a is None:
        return None
    return 100 * (point["wauto@2"] - w), 100 * (point["autoattack@2"] - a)


def markdown(data: dict[str, dict]) -> str:
    extra = [m for m in EXTRA if any(m in p for e in data.values() for pts in e["methods"].values()
                                     for p in pts.values())]
    names = {"clean": "clean", "autoattack@2": "AA @2", "wauto@2": "W-AA @2", "wauto@1": "W-AA @1",
             "wauto@4": "W-AA @4"}
    cols = [*METRICS, *extra]
    lines = ["| model | method | knob | seeds | " + " | ".join(names[m] for m in cols)
             + " | W-AA @2 − TRADES at equal clean | AA @2 − TRADES at equal clean |",
             "|---|---|---|---|" + "---|" * (len(cols) + 2)]
    for model, entry in data.items():
        start = entry.get("start")
        if start:
            lines.append(f"| {model} | start | – | – | " + " | ".join(
                f"{start[m]:.3f}" if m in start else "" for m in cols) + " | | |")
        for variant, points in entry["methods"].items():
            method = METHODS[variant]
            for knob in sorted(points):
                p = points[knob]
                g = gaps(entry, p) if variant != CONTROL else None
                blank = ["", ""] if variant == CONTROL else ["out of range"] * 2
                gap_cells = [f"{v:+.1f}" for v in g] if g else blank
                lines.append(f"| {model} | {method.label} | {method.knob} = {knob:g} | {','.join(map(str, p['seeds']))}"
                             " | " + " | ".join(f"{p[m]:.3f}" if m in p else "" for m in cols) + " | "
                             + " | ".join(gap_cells) + " |")
    return "\n".join(lines)


def target_table(data: dict[str, dict]) -> str:
    """Per model and method: its best W-AutoAttack gap to TRADES at equal clean accuracy among its points whose
    AutoAttack gap is ≥ 0, and whether issue 20's target (≥ 1 point) is met."""
    lines = ["| model | method | best W-AA @2 gap with AA gap ≥ 0 (points) | at knob | AA @2 gap there | "
             "target (≥ +1) |", "|---|---|---|---|---|---|"]
    for model, entry in data.items():
        for variant, points in entry["methods"].items():
            if variant == CONTROL:
                continue
            best: tuple[float, float, float] | None = None
            for knob, p in points.items():
                g = gaps(entry, p)
                if g is not None and g[1] >= TARGET_AA - 1e-9 and (best is None or g[0] > best[0]):
                    best = (g[0], knob, g[1])
            label = METHODS[variant].label
            if best is None:
                lines.append(f"| {model} | {label} | none in TRADES' clean range with AA gap ≥ 0 | | | no |")
                continue
            met = "yes" if best[0] >= TARGET_WAUTO - 1e-9 else "no"
            lines.append(f"| {model} | {label} | {best[0]:+.1f} | {METHODS[variant].knob} = {best[1]:g} | "
                         f"{best[2]:+.1f} | {met} |")
    return "\n".join(lines)


def data_table(rows: list[dict], split: str, epochs: int, lr: float, total: float) -> str:
    """Limited data: TRADES and W-TRADES at total KL weight ``total`` for every training-set size present,
    W-AutoAttack @2/255 of W-TRADES minus TRADES' beside (one row per size; means over the seeds present)."""
    sizes = sorted({r["schedule"]["n_train"] for r in rows if r["kind"] == "finetune" and r["split"] == split})
    lines = ["| model | training images | TRADES: clean / AA@2 / W-AA@2 | W-TRADES: clean / AA@2 / W-AA@2 "
             "| W-AA@2, W-TRADES − TRADES (points) |", "|---|---|---|---|---|"]
    for n in sizes:
        data = frontier(rows, split, n, epochs, lr, None)
        for model, entry in data.items():
            pair = [entry["methods"].get(v, {}).get(total) for v in (CONTROL, "joint-knapsack")]
            if any(p is None for p in pair):
                continue
            cells = [" / ".join(f"{p[m]:.3f}" for m in METRICS) for p in pair]
            gap = 100 * (pair[1]["wauto@2"] - pair[0]["wauto@2"])
            lines.append(f"| {model} | {n} | {cells[0]} | {cells[1]} | {gap:+.1f} |")
    return "\n".join(lines)


def _figure(n_panels: int):  # noqa: ANN202 - matplotlib's types
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(5.6 * n_panels, 4.4), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: Path, title: str) -> Path:  # noqa: ANN001
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(data: dict[str, dict], x_metric: str, path: Path, title: str) -> Path:
    """One panel per model: ``x_metric`` against W-AutoAttack at 2/255, a line per method over its knob."""
    names = {"clean": "clean accuracy", "autoattack@2": "AutoAttack accuracy @2/255"}
    plt, fig, axes = _figure(len(data))
    for ax, (model, entry) in zip(axes, data.items()):
        for variant, points in entry["methods"].items():
            knobs = sorted(points)
            xs, ys = [points[k][x_metric] for k in knobs], [points[k]["wauto@2"] for k in knobs]
            ax.plot(xs, ys, marker="o", label=f"{METHODS[variant].label} ({METHODS[variant].knob})")
            for k, x, y in zip(knobs, xs, ys):
                ax.annotate(f"{k:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if entry.get("start"):
            ax.plot(entry["start"][x_metric], entry["start"]["wauto@2"], marker="*", markersize=12, color="black",
                    linestyle="none", label="start")
        ax.set_xlabel(names[x_metric])
        ax.set_ylabel("W-AutoAttack accuracy @2/255 (p = 2, ℓ∞)")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, framealpha=0.5)
    return _save(plt, fig, path, title)


def cost_curves(entry: dict, results_dir: Path) -> dict[str, np.ndarray]:
    """Per label: the pooled flip costs (×255) of the start and of each method at its ``costs_at`` knob."""
    out: dict[str, np.ndarray] = {}
    wanted = [("start", "start")] + [(m.label + f" ({m.knob} = {m.costs_at:g})", (v, m.costs_at))
                                     for v, m in METHODS.items()]
    for label, key in wanted:
        files = [results_dir / f for f in entry["costs"].get(key, [])]
        if files and all(f.is_file() for f in files):
            out[label] = np.concatenate([np.load(f) for f in files]).astype(np.float64) * 255
    return out


def knapsack_threshold(costs: np.ndarray, delta: float, p: float = 2.0) -> tuple[float, float]:
    """(accuracy, t*) of the knapsack at W_p budget ``delta`` over these flip costs: it flips every input cheaper
    than t*, so its accuracy is the fraction of inputs whose flip cost exceeds t* (same units as ``costs``)."""
    import torch

    from art_wdat.core.knapsack import affordable_count

    c = torch.sort(torch.as_tensor(costs, dtype=torch.float64)).values
    k = int(affordable_count(c, p, torch.tensor(float(delta), dtype=torch.float64), c.numel()))
    return (c.numel() - k) / max(c.numel(), 1), float(c[k - 1]) if k else 0.0


def threshold_table(data: dict[str, dict], results_dir: Path, delta: float = 2.0) -> str:
    """Per model and curve of :func:`cost_curves`: clean accuracy, the knapsack's accuracy at W_2 budget ``delta``
    (/255) and its threshold t*: W-AutoAttack at δ counts the inputs whose ℓ∞ flip cost exceeds t*."""
    lines = [f"| model | model state | clean | accuracy at W_2 δ = {delta:g}/255 | threshold t* (/255) |",
             "|---|---|---|---|---|"]
    for model, entry in data.items():
        for label, costs in cost_curves(entry, results_dir).items():
            acc, t = knapsack_threshold(costs, delta)
            lines.append(f"| {model} | {label} | {(costs > 0).mean():.3f} | {acc:.3f} | {t:.2f} |")
    return "\n".join(lines)


def plot_costs(data: dict[str, dict], results_dir: Path, path: Path, title: str) -> Path | None:
    """One panel per model: the fraction of inputs whose verified ℓ∞ flip cost is ≤ t (misclassified: 0), which a
    pointwise attack of radius t would win; a W_p budget buys the low tail of it."""
    curves = {model: cost_curves(entry, results_dir) for model, entry in data.items()}
    curves = {m: c for m, c in curves.items() if len(c) > 1}
    if not curves:
        return None
    plt, fig, axes = _figure(len(curves))
    grid = np.linspace(0, 10, 201)
    for ax, (model, by_label) in zip(axes, curves.items()):
        for label, costs in by_label.items():
            finite = np.where(np.isfinite(costs), costs, math.inf)
            ax.plot(grid, [(finite <= t).mean() for t in grid], label=label,
                    color="black" if label == "start" else None, linewidth=2 if label == "start" else 1.2)
        ax.axvline(2, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("ℓ∞ flip cost t (×1/255)")
        ax.set_ylabel("fraction of inputs with flip cost ≤ t")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, framealpha=0.5)
    return _save(plt, fig, path, title)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "wtrades_study.jsonl")
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--n-train", type=int, default=9000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--seeds", default=None, help="comma-separated (default: every seed present)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "experiments")
    ap.add_argument("--costs", action="store_true", help="also plot the flip-cost distributions")
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
    print()
    print(target_table(data))
    if data:
        what = (f"{args.split} split; {args.n_train} training images, {args.epochs} epochs, SGD lr {args.lr:g} cosine; "
                "means over seeds; labels: each method's knob")
        for metric, name in (("clean", "frontier_clean"), ("autoattack@2", "frontier_autoattack")):
            print(f"Wrote {plot(data, metric, args.out / f'{name}_{args.split}.png', what)}")
        if args.costs:
            print(threshold_table(data, args.results.parent))
            written = plot_costs(data, args.results.parent, args.out / f"flip_costs_{args.split}.png",
                                 f"{args.split} split: W-AutoAttack's verified ℓ∞ flip costs, pooled over seeds")
            print(f"Wrote {written}" if written else "No flip costs saved for these runs.")
    return data


if __name__ == "__main__":
    main()
