"""Flip costs against exact answers (issue 26, items 2-3): predict-only solvers, and gradient solvers in any box.

    python bench/decision_solvers.py --n 500 --hsj-n 100

On scikit-learn's digits (64 features in [0, 1]; the last 500 of a fixed permutation held out), a logistic
regression is seen three ways, each against the exact minimum-norm flip of the linear model in the box
(tests/linear_exact.py):

* predict-only (its probabilities): the decision-based chains at ``--max-queries`` per input, ℓ∞ (RayS, RayS per
  class, the refinement), ℓ2 and ℓ1 (the boundary walks); median and 90th percentile of cost / exact, the W_2
  knapsack accuracy (ground ℓ∞) at δ = 0.02 and 0.05 against the exact one, queries per input and seconds;
* with gradients (a torch linear layer with its weights): the default gradient chain in the unit box, and the
  per-feature default in a box of uneven per-feature bounds;
* a random forest (predict-only): the default ℓ∞ chain against ART's HopSkipJump (ℓ∞) on the first ``--hsj-n``
  inputs, as robust accuracies at ε = δ (pointwise) and the W_2 knapsack accuracy at δ.

One torch thread. Prints Markdown tables and writes ``bench/results/decision_solvers.json``.
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
sys.path.insert(0, str(ROOT))

from art_wdat.attacks.flip_costs import default_min_norm, min_norm_costs  # noqa: E402
from art_wdat.core.knapsack import robust_accuracy_curve  # noqa: E402
from tests.linear_exact import exact_costs, logistic_scores  # noqa: E402

DELTAS = (0.02, 0.05)
NORMS = {"inf": math.inf, "2": 2.0, "1": 1.0}


def machine() -> str:
    """CPU model, torch threads and version."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{cpu}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"


def digits(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1]: all but the last n of a fixed permutation to fit, the last n to attack."""
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    x, y = (d.data / 16.0).astype(np.float32)[perm], d.target.astype(np.int64)[perm]
    return x[:-n], y[:-n], x[-n:], y[-n:]


def predict_only(model: object):
    """The model as a predict-only forward: its probabilities."""
    def forward(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(model.predict_proba(t.reshape(t.shape[0], -1).numpy()))  # type: ignore[attr-defined]

    return forward


def accuracy(costs: np.ndarray, correct: np.ndarray, delta: float, p: float = 2.0) -> float:
    """The W_p knapsack accuracy at δ from costs."""
    return float(robust_accuracy_curve(torch.from_numpy(costs), p, [delta], torch.from_numpy(correct))[0])


def compare(costs: np.ndarray, exact: np.ndarray, correct: np.ndarray) -> dict:
    """Ratios to the exact minimum over the flipped inputs, and the knapsack accuracies at DELTAS (ground ℓ∞)."""
    found = correct & np.isfinite(costs) & (costs > 0)
    ratio = costs[found] / exact[found]
    return {"median": float(np.median(ratio)), "p90": float(np.quantile(ratio, 0.9)), "max": float(ratio.max()),
            "below_exact": int((ratio < 1 - 1e-9).sum()), "not_found": int((correct & ~np.isfinite(costs)).sum()),
            "accuracy": [accuracy(costs, correct, d) for d in DELTAS],
            "exact_accuracy": [accuracy(exact, correct, d) for d in DELTAS]}


def run(forward, x: np.ndarray, y: np.ndarray, norm: float, method: str, **kwargs) -> tuple[np.ndarray, np.ndarray,
                                                                                            dict]:
    """Costs, correctness and timing of one chain."""
    start = time.perf_counter()
    fc = min_norm_costs(forward, torch.from_numpy(x), torch.from_numpy(y), norm=norm, method=method,  # type: ignore
                        **kwargs)
    info = {"method": method, "seconds": time.perf_counter() - start}
    if fc.queries is not None:
        info |= {"queries_mean": float(fc.queries.double().mean()), "queries_max": int(fc.queries.max())}
    return fc.costs.numpy(), fc.correct.numpy(), info


def linear_rows(args: argparse.Namespace, data: tuple) -> list[dict]:
    """The logistic regression: predict-only chains per norm, gradient chains in the unit and a per-feature box."""
    from sklearn.linear_model import LogisticRegression

    x_fit, y_fit, x, y = data
    lr = LogisticRegression(max_iter=5000).fit(x_fit, y_fit)
    w, b = logistic_scores(lr)
    layer = torch.nn.Linear(64, 10)
    layer.weight.data, layer.bias.data = torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    for p in layer.parameters():
        p.requires_grad_(False)
    rows = []
    for name in args.norms.split(","):
        norm = NORMS[name]
        exact = exact_costs(w, b, x, y, norm)
        for method in [default_min_norm(norm, gradients=False)] + (["rays"] if norm == math.inf else []):
            costs, correct, info = run(predict_only(lr), x, y, norm, method, max_queries=args.max_queries)
            rows.append({"model": "logistic (predict only)", "norm": name, "box": "unit", **info,
                         **compare(costs, exact, correct)})
        costs, correct, info = run(layer, x, y, norm, default_min_norm(norm))
        rows.append({"model": "logistic (gradients)", "norm": name, "box": "unit", **info,
                     **compare(costs, exact, correct)})
        g = np.random.default_rng(1)
        lo = (-g.uniform(0.0, 0.3, 64)).astype(np.float32)
        hi = (1 + g.uniform(0.0, 1.0, 64)).astype(np.float32)
        exact_box = exact_costs(w, b, x, y, norm, lo, hi)
        for method in (default_min_norm(norm), "fab+fmn+apgd" if norm != 1.0 else "fab+fmn"):
            costs, correct, info = run(layer, x, y, norm, method, clip=(lo, hi))
            rows.append({"model": "logistic (gradients)", "norm": name, "box": "per-feature", **info,
                         **compare(costs, exact_box, correct)})
    return rows


def hopskipjump_costs(forest: object, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray,
                                                                                                         float, float]:
    """ART's HopSkipJump (ℓ∞) on the forest: its ℓ∞ costs (inf where it failed), queries per input, seconds."""
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import SklearnClassifier

    clf = SklearnClassifier(forest, clip_values=(0.0, 1.0))
    calls = [0]
    predict = clf.predict

    def counted(batch: np.ndarray, **kwargs: object) -> np.ndarray:
        calls[0] += len(batch)
        return predict(batch, **kwargs)

    clf.predict = counted  # type: ignore[method-assign]
    start = time.perf_counter()
    np.random.seed(0)
    adv = HopSkipJump(clf, norm=np.inf, max_iter=args.hsj_iter, max_eval=args.hsj_eval,
                      init_eval=min(100, args.hsj_eval), verbose=False).generate(x)
    seconds = time.perf_counter() - start
    correct = forest.predict(x) == y  # type: ignore[attr-defined]
    flipped = forest.predict(adv) != y  # type: ignore[attr-defined]
    dist = np.abs(adv.astype(np.float64) - x).max(axis=1)
    return np.where(correct, np.where(flipped, dist, np.inf), 0.0), calls[0] / len(x), seconds


def forest_rows(args: argparse.Namespace, data: tuple) -> list[dict]:
    """The random forest: our default ℓ∞ chain against HopSkipJump on the first ``--hsj-n`` inputs."""
    from sklearn.ensemble import RandomForestClassifier

    x_fit, y_fit, x, y = data
    x, y = x[:args.hsj_n], y[:args.hsj_n]
    forest = RandomForestClassifier(n_estimators=args.trees, random_state=0).fit(x_fit, y_fit)
    costs, correct, info = run(predict_only(forest), x, y, math.inf, default_min_norm(math.inf, gradients=False),
                               max_queries=args.max_queries)
    rows = [{"model": "random forest", "attack": info["method"], **info,
             "pointwise": [float(((costs > d) & correct).mean()) for d in DELTAS],
             "w2": [accuracy(costs, correct, d) for d in DELTAS]}]
    if args.hsj_iter > 0:
        hsj, queries, seconds = hopskipjump_costs(forest, x, y, args)
        rows.append({"model": "random forest", "attack": "ART HopSkipJump (ℓ∞)", "seconds": seconds,
                     "queries_mean": queries, "pointwise": [float(((hsj > d) & correct).mean()) for d in DELTAS],
                     "w2": [accuracy(hsj, correct, d) for d in DELTAS]})
    return rows


def tables(linear: list[dict], forest: list[dict], n: int) -> str:
    """Markdown tables of both parts."""
    out = [f"Logistic regression on digits, n = {n}; cost / exact minimum over flipped inputs; W_2 knapsack accuracy "
           "(ground ℓ∞ costs only) against exact.", "",
           "| model | norm | box | method | median | p90 | max | not found | acc δ=0.02 (exact) | acc δ=0.05 (exact) "
           "| queries mean / max | seconds |", "|" + " --- |" * 12]
    for r in linear:
        accs = " | ".join(f"{100 * a:.1f}% ({100 * e:.1f}%)" if r["norm"] == "inf" else "—"
                          for a, e in zip(r["accuracy"], r["exact_accuracy"], strict=True))
        queries = f"{r['queries_mean']:.0f} / {r['queries_max']}" if "queries_mean" in r else "—"
        out.append(f"| {r['model']} | ℓ{r['norm'].replace('inf', '∞')} | {r['box']} | {r['method']} | "
                   f"{r['median']:.4f} | {r['p90']:.4f} | {r['max']:.3f} | {r['not_found']} | {accs} | {queries} | "
                   f"{r['seconds']:.1f} |")
    out += ["", "Random forest on digits, ℓ∞: robust accuracy at ε = δ (pointwise) and W_2 knapsack "
            "accuracy at δ.", "", "| attack | pointwise δ=0.02 | pointwise δ=0.05 | W_2 δ=0.02 | W_2 δ=0.05 "
            "| queries / input | seconds |", "|" + " --- |" * 7]
    for r in forest:
        out.append(f"| {r['attack']} | " + " | ".join(f"{100 * a:.1f}%" for a in r["pointwise"] + r["w2"])
                   + f" | {r['queries_mean']:.0f} | {r['seconds']:.1f} |")
    return "\n".join(out)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--norms", default="inf,2,1")
    parser.add_argument("--max-queries", type=int, default=5000)
    parser.add_argument("--trees", type=int, default=100, help="trees of the random forest")
    parser.add_argument("--hsj-n", type=int, default=100, help="inputs of the random-forest comparison")
    parser.add_argument("--hsj-iter", type=int, default=20, help="HopSkipJump iterations (0: skip it)")
    parser.add_argument("--hsj-eval", type=int, default=1000, help="HopSkipJump's max_eval")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decision_solvers.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    data = digits(args.n)
    linear, forest = linear_rows(args, data), forest_rows(args, data)
    print(f"Machine: {machine()}\n")
    print(tables(linear, forest, args.n))
    result = {"machine": machine(), "command": " ".join(sys.argv), "n": args.n, "max_queries": args.max_queries,
              "deltas": DELTAS, "linear": linear, "forest": forest}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
