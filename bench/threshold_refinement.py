"""What extra solver effort near the knapsack's threshold costs and buys (issue 26, "the last lost cell").

    python bench/threshold_refinement.py --n 200 --models resnet2b,cnn_a_adv

For each model (``SHARED/models/zoo.py``) on the first N test images of ``SHARED/data/cifar10_subset.npz``, ground
ℓ∞: the default flip costs (:func:`art_wdat.attacks.flip_costs.min_norm_costs`), then
:func:`art_wdat.attacks.threshold.refine_near_threshold` for the W_2 budgets δ = 1, 2, 4, 8 /255 asked together:
how many inputs it refines, its seconds against the first pass's, the knapsack accuracy (p = 2) before and after
at each δ, and how many refined costs came down. One torch thread. Prints a Markdown table and writes
``bench/results/threshold_refinement.json``.
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
from art_wdat.attacks.threshold import decisive_inputs, refine_near_threshold  # noqa: E402
from art_wdat.core.knapsack import robust_accuracy_curve  # noqa: E402

DELTAS = (1.0, 2.0, 4.0, 8.0)


def machine() -> str:
    """CPU model, torch threads and version."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{cpu}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"


def load_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test images of the shared CIFAR-10 subset, in [0, 1]."""
    with np.load(SHARED / "data" / "cifar10_subset.npz") as f:
        return torch.from_numpy(f["x_test"][:n]).float() / 255, torch.from_numpy(f["y_test"][:n]).long()


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """First pass, refinement, and the accuracies before and after."""
    budgets = [(d / 255, 2.0) for d in DELTAS]
    start = time.perf_counter()
    first = min_norm_costs(model, x, y, norm=math.inf)
    first_seconds = time.perf_counter() - start
    start = time.perf_counter()
    refined = refine_near_threshold(model, x, y, first, budgets, norm=math.inf)
    refine_seconds = time.perf_counter() - start
    near = decisive_inputs(first.costs, first.correct, budgets)
    deltas = [d / 255 for d in DELTAS]
    before = robust_accuracy_curve(first.costs, 2.0, deltas, first.correct).tolist()
    after = robust_accuracy_curve(refined.costs, 2.0, deltas, refined.correct).tolist()
    return {"first_seconds": first_seconds, "refine_seconds": refine_seconds, "refined_inputs": int(near.sum()),
            "cheaper": int((refined.costs < first.costs * (1 - 1e-6)).sum()),
            "median_gain": float((refined.costs[near] / first.costs[near]).median()) if near.any() else 1.0,
            "before": before, "after": after}


def table(results: dict[str, dict], n: int) -> str:
    """The Markdown table."""
    head = ("| model | inputs refined | costs lowered | median new/old | first pass s | refinement s | "
            + " | ".join(f"acc δ={d:g}/255 before → after" for d in DELTAS) + " |")
    lines = [head, "|" + " --- |" * (6 + len(DELTAS))]
    for name, r in results.items():
        accs = " | ".join(f"{100 * b:.1f}% → {100 * a:.1f}%" for b, a in zip(r["before"], r["after"], strict=True))
        lines.append(f"| {name} (n={n}) | {r['refined_inputs']} | {r['cheaper']} | {r['median_gain']:.4f} | "
                     f"{r['first_seconds']:.1f} | {r['refine_seconds']:.1f} | {accs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--models", default="resnet2b,cnn_a_adv")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "threshold_refinement.json")
    args = parser.parse_args(argv)
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
        results[name] = measure(model, x, y)
    print(f"Machine: {machine()}\n")
    print(table(results, args.n))
    out = {"machine": machine(), "command": " ".join(sys.argv), "n": args.n, "deltas_over_255": DELTAS, "p": 2,
           "norm": "inf", "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
