"""What each flip-cost solver adds (issue 21, item 2): FAB, the APGD bisection, FMN and their per-input minimum.

    python bench/flip_cost_solvers.py --n 300 --models resnet2b,cnn_a_adv

For each model (``SHARED/models/zoo.py``) on the first N CIFAR-10 test images of
``np.random.default_rng(0).permutation(10000)`` (``SHARED/data/cifar10_jpeg.npz``), ground ℓ∞: the verified flip
costs of each ``min_norm`` method of :func:`art_wdat.attacks.flip_costs.min_norm_costs`, with the median cost
over the correctly classified inputs, the number of inputs where the method is strictly the cheapest of the
single solvers (FAB, the FAB→APGD chain, FMN), where it is strictly cheaper than the default ``"fab+apgd"``, the
knapsack accuracy (:func:`art_wdat.evaluation.accuracy_curve`, p = 2) at δ = 1, 2, 4 /255, and the seconds.
One thread.
Prints a Markdown table and writes ``bench/results/flip_cost_solvers.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from art_wdat.attacks.flip_costs import min_norm_costs  # noqa: E402
from art_wdat.evaluation import accuracy_curve  # noqa: E402

METHODS = ("fab", "fab+apgd", "fmn", "fab+apgd+fmn", "fab+fmn+apgd")
DEFAULT = "fab+apgd"
#: The single solver chains, compared input by input: "strictly cheapest" means below both others.
SOLO = ("fab", "fab+apgd", "fmn")
DELTAS = (1.0, 2.0, 4.0)


def machine() -> str:
    """CPU model, torch threads and version: the line above the table."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{cpu}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"


def load_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n images of the fixed permutation of the JPEG CIFAR-10 test set, in [0, 1]."""
    with np.load(SHARED / "data" / "cifar10_jpeg.npz") as f:
        idx = np.random.default_rng(0).permutation(10000)[:n]
        return torch.from_numpy(f["x_test"][idx]).float() / 255, torch.from_numpy(f["y_test"][idx]).long()


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fmn_steps: int) -> dict[str, dict]:
    """Costs (in 1/255) and seconds of every method on (x, y)."""
    runs = {}
    for method in METHODS:
        start = time.perf_counter()
        fc = min_norm_costs(model, x, y, norm=math.inf, method=method, fmn_steps=fmn_steps)  # type: ignore[arg-type]
        runs[method] = {"seconds": time.perf_counter() - start, "costs": fc.costs.numpy() * 255,
                        "correct": fc.correct.numpy()}
    return runs


def summarise(runs: dict[str, dict]) -> list[dict]:
    """One row per method: median cost, strict wins, knapsack accuracies, seconds."""
    costs = {m: r["costs"] for m, r in runs.items()}
    correct = runs[DEFAULT]["correct"]
    rows = []
    for method, c in costs.items():
        others = np.min([costs[m] for m in SOLO if m != method], axis=0)
        # Strictly: by more than float noise of the verification's norm. Combinations are minima: no count.
        cheaper = (c < others * (1 - 1e-6)) & correct
        rows.append({"method": method, "median": float(np.median(c[correct])),
                     "cheapest": int(cheaper.sum()) if method in SOLO else None,
                     "beats_default": int(((c < costs[DEFAULT] * (1 - 1e-6)) & correct).sum()),
                     "never_flipped": int((np.isinf(c) & correct).sum()),
                     "accuracy": accuracy_curve(c, 2, np.asarray(DELTAS), correct).tolist(),
                     "seconds": runs[method]["seconds"]})
    return rows


def table(results: dict[str, list[dict]], n: int) -> str:
    """The Markdown table of all models."""
    head = ("| model | min_norm | median c (/255) | strictly cheapest of fab, fab+apgd, fmn | cheaper than fab+apgd "
            "| never flipped | "
            + " | ".join(f"acc δ={d:g}/255" for d in DELTAS) + " | seconds |")
    lines = [head, "|" + " --- |" * (7 + len(DELTAS))]
    for model, rows in results.items():
        for r in rows:
            wins = "—" if r["cheapest"] is None else r["cheapest"]
            accs = " | ".join(f"{100 * a:.1f}%" for a in r["accuracy"])
            lines.append(f"| {model} (n={n}) | {r['method']} | {r['median']:.3f} | {wins} | "
                         f"{r['beats_default']} | {r['never_flipped']} | {accs} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--models", default="resnet2b,cnn_a_adv")
    parser.add_argument("--fmn-steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "flip_cost_solvers.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    sys.path.insert(0, str(SHARED / "models"))
    import zoo  # the shared models' loader

    x, y = load_data(args.n)
    results = {}
    for name in args.models.split(","):
        model = zoo.load(name)
        for p in model.parameters():
            p.requires_grad_(False)
        runs = measure(model, x, y, args.fmn_steps)
        # The combined method is, input by input, the minimum of its two parts.
        assert np.array_equal(runs["fab+apgd+fmn"]["costs"], np.minimum(runs["fab+apgd"]["costs"],
                                                                        runs["fmn"]["costs"]))
        results[name] = summarise(runs)
    print(f"Machine: {machine()}\n")
    print(table(results, args.n))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "n": args.n, "norm": "inf", "p": 2,
                                    "deltas_over_255": DELTAS, "fmn_steps": args.fmn_steps,
                                    "command": " ".join(sys.argv), "results": results}, indent=2))


if __name__ == "__main__":
    main()
