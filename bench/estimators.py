"""W-AutoAttack on every kind of ART estimator, against the exact answer of a linear model (issue 26).

    python bench/estimators.py [--n 500] [--deltas 0.02,0.05] [--max-queries 5000] [--no-tensorflow]

scikit-learn's digits (64 features in [0, 1]), a multinomial logistic regression fitted on 1,297 images, the other 500
held out (shuffled with ``np.random.default_rng(0)``). Its box-constrained ℓ∞ flip costs are exact in closed form
(tests/linear_exact.py), and so is the W_2 robust accuracy at every δ (the knapsack over the exact costs). The same
weights are attacked through each estimator kind:

* ``PyTorchClassifier`` (a torch ``Linear``): the torch path;
* ``SklearnClassifier`` (``ScikitlearnLogisticRegression``): ``predict`` and ``class_gradient`` through the bridge;
* ``TensorFlowV2Classifier`` (a Keras ``Dense`` layer), unless ``--no-tensorflow``;
* ``BlackBoxClassifier`` (``predict_proba`` only): decision-based flip costs, at most ``--max-queries`` per input;

and a scikit-learn random forest (predict-only; no exact answer), next to ART's HopSkipJump at ε = δ.

For each: W-AutoAttack's W_2 accuracy at each δ (p = 2, ground ℓ∞) and its distance to the exact one (it can never be
below: every point is verified), the flip costs' ratio to the exact ones (median, 90th percentile), the queries per
input, and the seconds per 1,000 inputs of the first budget (flip costs included; the other budgets reuse the costs
where the cache may). One torch thread. Prints a Markdown table; writes ``bench/results/estimators.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._dynamo  # noqa: E402,F401  (before TensorFlow: the other order segfaults with torch 2.14)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from art_wdat import WassersteinDistributionalAttack  # noqa: E402
from art_wdat.attacks.auto import FlipCostCache  # noqa: E402
from art_wdat.core.knapsack import robust_accuracy_curve  # noqa: E402
from bench.readme_tables import cpu_model  # noqa: E402
from tests.linear_exact import exact_linf_flip_costs, logistic_scores  # noqa: E402


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    x, y = (d.data / 16.0).astype(np.float32)[perm], d.target[perm].astype(np.int64)
    return x[:-500], y[:-500], x[-500:], y[-500:]


def estimators(model, tensorflow: bool) -> dict:
    """The logistic regression's weights behind each estimator kind."""
    from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier, SklearnClassifier

    w, b = logistic_scores(model)
    linear = torch.nn.Linear(64, w.shape[0])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w))
        linear.bias.copy_(torch.from_numpy(b))
    out = {"PyTorchClassifier": PyTorchClassifier(linear, torch.nn.CrossEntropyLoss(), input_shape=(64,),
                                                  nb_classes=w.shape[0], clip_values=(0.0, 1.0)),
           "SklearnClassifier": SklearnClassifier(model, clip_values=(0, 1))}
    if tensorflow:
        import keras
        from art.estimators.classification import TensorFlowV2Classifier

        dense = keras.Sequential([keras.Input((64,)), keras.layers.Dense(w.shape[0])])
        dense.set_weights([w.T.astype(np.float32), b.astype(np.float32)])
        out["TensorFlowV2Classifier"] = TensorFlowV2Classifier(
            dense, nb_classes=w.shape[0], input_shape=(64,), clip_values=(0.0, 1.0),
            loss_object=keras.losses.CategoricalCrossentropy(from_logits=True))
    out["BlackBoxClassifier"] = BlackBoxClassifier(model.predict_proba, input_shape=(64,), nb_classes=w.shape[0],
                                                   clip_values=(0, 1))
    return out


def attack_all(clf, x: np.ndarray, y: np.ndarray, deltas: list[float], max_queries: int, predict) -> dict:
    """W-AutoAttack at every δ (one flip-cost cache): accuracies, the first budget's seconds, costs and queries."""
    cache, accuracy, seconds, costs, queries = FlipCostCache(), [], [], None, None
    for delta in deltas:
        attack = WassersteinDistributionalAttack(clf, eps=delta, p=2, norm=np.inf, method="auto", max_iter=20,
                                                 batch_size=128, max_queries=max_queries, verbose=False,
                                                 flip_cost_cache=cache)
        start = time.perf_counter()
        x_adv = attack.generate(x, y)
        seconds.append(time.perf_counter() - start)
        accuracy.append(float((predict(x_adv) == y).mean()))
        result = attack.last_result_
        costs = result.flip_costs if costs is None else costs
        if result.flip_cost_queries is not None and queries is None:
            queries = result.flip_cost_queries
    return {"accuracy": accuracy, "seconds": seconds, "costs": costs, "queries": queries}


def forest_row(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, deltas: list[float],
               max_queries: int, n_hsj: int) -> dict:
    """A random forest (predict-only): W-AutoAttack, its pointwise knapsack, and ART's HopSkipJump at ε = δ."""
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import SklearnClassifier
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y)
    clf = SklearnClassifier(forest, clip_values=(0, 1))
    row = attack_all(clf, x_test, y_test, deltas, max_queries, forest.predict)
    correct = forest.predict(x_test) == y_test
    row["pointwise"] = [float(robust_accuracy_curve(torch.from_numpy(row["costs"]), np.inf, [d],
                                                    correct=torch.from_numpy(correct))[0]) for d in deltas]
    np.random.seed(0)
    xs, ys = x_test[:n_hsj], y_test[:n_hsj]
    start = time.perf_counter()
    hsj = HopSkipJump(clf, norm=np.inf, verbose=False).generate(xs)
    row["hsj_seconds_per_1000"] = (time.perf_counter() - start) * 1000 / n_hsj
    norms = np.where(forest.predict(hsj) != ys, np.abs(hsj - xs).max(axis=1), np.inf)
    ours = row["costs"][:n_hsj]
    row["hsj"] = [float(np.mean(correct[:n_hsj] & (norms > d))) for d in deltas]
    row["ours_pointwise_on_hsj_inputs"] = [float(np.mean(correct[:n_hsj] & (ours > d))) for d in deltas]
    row["clean"] = float(correct.mean())
    row["seconds_per_1000"] = row["seconds"][0] * 1000 / len(x_test)
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--deltas", default="0.02,0.05")
    parser.add_argument("--max-queries", type=int, default=5000)
    parser.add_argument("--hsj", type=int, default=20, help="inputs of the forest attacked by HopSkipJump")
    parser.add_argument("--no-tensorflow", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "estimators.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from sklearn.linear_model import LogisticRegression

    deltas = [float(d) for d in args.deltas.split(",")]
    x, y, x_test, y_test = digits()
    x_test, y_test = x_test[:args.n], y_test[:args.n]
    model = LogisticRegression(max_iter=5000).fit(x, y)
    exact_costs = exact_linf_flip_costs(*logistic_scores(model), x_test, y_test)
    correct = torch.from_numpy(model.predict(x_test) == y_test)
    exact = [float(robust_accuracy_curve(torch.from_numpy(exact_costs), 2.0, [d], correct=correct)[0])
             for d in deltas]
    rows = {}
    positive = np.isfinite(exact_costs) & (exact_costs > 0)
    for kind, clf in estimators(model, not args.no_tensorflow).items():
        row = attack_all(clf, x_test, y_test, deltas, args.max_queries, model.predict)
        ratio = row["costs"][positive] / exact_costs[positive]
        row.update(ratio_median=float(np.median(ratio)), ratio_p90=float(np.quantile(ratio, 0.9)),
                   ratio_min=float(ratio.min()), seconds_per_1000=row["seconds"][0] * 1000 / args.n,
                   below_exact=[a < e for a, e in zip(row["accuracy"], exact)])
        rows[kind] = row
    forest = forest_row(x, y, x_test, y_test, deltas, args.max_queries, args.hsj)
    report = {"n": args.n, "deltas": deltas, "exact": exact, "clean": float(correct.double().mean()),
              "machine": f"{cpu_model()}, {os.cpu_count()} logical cores, 1 torch thread",
              "estimators": {k: {key: v for key, v in r.items() if key not in ("costs", "queries")} |
                             ({"queries_mean": float(r["queries"].mean()), "queries_max": int(r["queries"].max())}
                              if r["queries"] is not None else {}) for k, r in rows.items()},
              "forest": {k: v for k, v in forest.items() if k not in ("costs", "queries")} |
              ({"queries_mean": float(forest["queries"].mean()), "queries_max": int(forest["queries"].max())}
               if forest["queries"] is not None else {})}
    print(table(report))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return report


def table(report: dict) -> str:
    """The Markdown tables of :func:`main`'s report."""
    deltas = report["deltas"]
    head = ["estimator", *(f"δ = {d:g}: acc (− exact)" for d in deltas), "cost / exact (median, p90)",
            "queries per input (mean, max)", "s per 1,000 inputs"]
    lines = [f"Digits, logistic regression, {report['n']} inputs, p = 2, ground ℓ∞; exact W_2 accuracy "
             + ", ".join(f"{e:.3f} at δ = {d:g}" for d, e in zip(deltas, report["exact"]))
             + f" (clean {report['clean']:.3f}); {report['machine']}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, r in report["estimators"].items():
        accs = [f"{a:.3f} ({a - e:+.3f})" for a, e in zip(r["accuracy"], report["exact"])]
        queries = f"{r['queries_mean']:.0f}, {r['queries_max']}" if "queries_mean" in r else "–"
        lines.append(f"| {kind} | {' | '.join(accs)} | {r['ratio_median']:.4f}, {r['ratio_p90']:.4f} | {queries} | "
                     f"{r['seconds_per_1000']:.1f} |")
    f = report["forest"]
    lines += ["", f"Random forest (100 trees, predict-only), clean {f['clean']:.3f}: W-AutoAttack (W_2) "
              + ", ".join(f"{a:.3f}" for a in f["accuracy"]) + "; its pointwise knapsack (W_∞) "
              + ", ".join(f"{a:.3f}" for a in f["pointwise"]) + " at δ = " + ", ".join(f"{d:g}" for d in deltas)
              + f"; {f['seconds_per_1000']:.1f} s per 1,000 inputs"
              + (f", queries per input mean {f['queries_mean']:.0f}, max {f['queries_max']}" if "queries_mean" in f
                 else "") + ".",
              "On the first inputs, robust accuracy at ε = δ by ART's HopSkipJump (norm = inf, defaults): "
              + ", ".join(f"{a:.3f}" for a in f["hsj"]) + "; by our verified flip costs: "
              + ", ".join(f"{a:.3f}" for a in f["ours_pointwise_on_hsj_inputs"])
              + f" (HopSkipJump: {f['hsj_seconds_per_1000']:.0f} s per 1,000 inputs)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
