"""Attack strength on real robust models: W-AutoAttack against every attack we compare (issue 13, "Done when").

    python bench/strength.py                               # resnet2b and cnn_a_adv, 1000 test images, CPU
    python bench/strength.py --quick                       # 32 images, 2 budgets, few iterations
    python bench/strength.py --device cuda --out bench/results/strength-cuda.json

For each model (``SHARED/models/zoo.py``) on N CIFAR-10 test images of ``SHARED/data/cifar10_jpeg.npz`` (the
first N of ``np.random.default_rng(0).permutation(10000)``, the subset of the WDA++ reference run), at each
δ (in 1/255), p = 2 and ground ℓ∞: accuracy after attack and wall time of ART PGD (ε = δ, step δ/4, 50 it),
ART AutoAttack (APGD-CE + APGD-DLR, 100 it each), W-PGD (ReDLR, 100 it), W-PGD-Budget (100 it), the knapsack
and W-AutoAttack (``method="auto"``). Every cost is re-checked here, independently of the attacks:
C(x_adv, x) ≤ δ (1 + 1e-6) and x_adv in [0, 1]; accuracy is the classifier's ``predict``. Then the time of
W-AutoAttack over standard AutoAttack (the ``autoattack`` package) at ε = 2/255 on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from art_wdat import WassersteinDistributionalAttack  # noqa: E402
from art_wdat.evaluation import EvaluationSettings, run_timed_attack  # noqa: E402
from art_wdat.training.checkpoint import seed_everything  # noqa: E402
from art_wdat.zoo import make_classifier  # noqa: E402

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

#: Column keys in table order, their headings, and the method of the distributional attack behind each.
COLUMNS = ("pgd", "autoattack", "wpgd", "budget", "knapsack", "auto")
HEADINGS = {"pgd": "ART PGD", "autoattack": "APGD (ART)", "wpgd": "W-PGD", "budget": "W-PGD-Budget",
            "knapsack": "knapsack", "auto": "W-AutoAttack"}
#: The registry's attack behind each column it builds ("apgd-art": ART's APGD-CE + APGD-DLR, "APGD (ART)").
REGISTRY_NAME = {"pgd": "pgd", "autoattack": "apgd-art", "wpgd": "wpgd", "budget": "wpgd-budget"}
SKIPPABLE = COLUMNS + ("aa-standard",)
P, GROUND_NORM, RATIO_DELTA, TOLERANCE = 2.0, np.inf, 2.0, 1e-6
#: ART's pointwise attacks round x ± ε to float32: up to half an ulp at 1.0 past ε (2/255 · 1e-6 is smaller).
FLOAT32_SLACK = 2.0 ** -24


@dataclass
class Cell:
    """One attack at one budget: accuracy after attack, wall seconds, the cost re-checked here."""

    accuracy: float
    seconds: float
    cost: float
    feasible: bool
    note: str = ""
    components: dict | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="folder with models/ and data/")
    ap.add_argument("--models", default="resnet2b,cnn_a_adv")
    ap.add_argument("--n", type=int, default=None, help="test images (default 1000; 32 with --quick)")
    ap.add_argument("--deltas", default=None, help="budgets in 1/255, comma-separated (default 1,2,4,8)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 1 on cpu)")
    ap.add_argument("--batch-size", type=int, default=None, help="inputs per pass (default 128 cpu, 500 cuda)")
    ap.add_argument("--aa-standard-n", type=int, default=None, help="images for standard AutoAttack (default N)")
    ap.add_argument("--skip", default="", help=f"comma-separated, from {', '.join(SKIPPABLE)}")
    ap.add_argument("--quick", action="store_true", help="tiny run: N=32, δ ∈ {2, 8}, few iterations")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    args.n = args.n or (32 if args.quick else 1000)
    args.deltas = [float(d) for d in (args.deltas or ("2,8" if args.quick else "1,2,4,8")).split(",")]
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip - set(SKIPPABLE):
        ap.error(f"unknown --skip {sorted(args.skip - set(SKIPPABLE))}; choose from {', '.join(SKIPPABLE)}")
    if args.quick and args.aa_standard_n is None:
        args.skip.add("aa-standard")  # standard AutoAttack only when asked for in a quick run
    args.aa_standard_n = min(args.aa_standard_n or args.n, args.n)
    args.threads = args.threads or (1 if args.device == "cpu" else None)
    args.batch_size = args.batch_size or (128 if args.device == "cpu" else 500)
    args.iters = {"pgd": 5, "autoattack": 5, "wpgd": 10, "budget": 10, "auto": 10} if args.quick else \
        {"pgd": 50, "autoattack": 100, "wpgd": 100, "budget": 100, "auto": 100}
    return args


def load_inputs(shared: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n of the fixed permutation of the JPEG test set, as float32 in [0, 1] and int64 labels."""
    data = np.load(shared / "data" / "cifar10_jpeg.npz")
    idx = np.random.default_rng(0).permutation(data["x_test"].shape[0])[:n]
    return data["x_test"][idx].astype(np.float32) / 255.0, data["y_test"][idx].astype(np.int64)


def load_model(shared: Path, name: str, device: str) -> torch.nn.Module:
    sys.path.insert(0, str(shared / "models"))
    import zoo  # type: ignore[import-not-found]  # SHARED/models/zoo.py, not a package

    return zoo.load(name).to(device).eval()


def check_cost(x: np.ndarray, x_adv: np.ndarray, delta: float, slack: float = 0.0) -> tuple[float, bool]:
    """C(x_adv, x) at p = 2, ground ℓ∞, in float64, and whether it is ≤ δ (1 + 1e-6) + slack, x_adv in [0, 1]."""
    dist = np.abs(x_adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1).max(axis=1)
    cost = float(np.mean(dist ** P) ** (1 / P)) if len(x) else 0.0
    in_box = bool(np.all(x_adv >= 0.0) and np.all(x_adv <= 1.0) and np.all(np.isfinite(x_adv)))
    return cost, in_box and cost <= delta * (1 + TOLERANCE) + slack


def accuracy(clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    return float(np.mean(clf.predict(x, batch_size=batch_size).argmax(axis=1) == y))


def settings_for(args: argparse.Namespace, key: str) -> EvaluationSettings:
    """The registry's settings behind the column ``key`` (one it builds: :data:`REGISTRY_NAME`).

    The registry's ``max_iter`` is shared by ART PGD, W-PGD and W-PGD-Budget, so each column gets its own: ART PGD
    runs ``iters["pgd"]`` (50) iterations with eps_step = (T/4) · δ / T = δ/4, as the module docstring says; W-PGD
    and W-PGD-Budget run theirs (100).
    """
    it = args.iters
    max_iter = it[key] if key in ("pgd", "wpgd", "budget") else it["wpgd"]
    return EvaluationSettings(max_iter=max_iter, batch_size=args.batch_size, pgd_step_ratio=max_iter / 4,
                              apgd_art_max_iter=it["autoattack"], wpgd_loss="redlr", budget_rounds=10)


class Distributional:
    """The knapsack and W-AutoAttack columns. One attack object serves both methods and every δ: its flip
    costs do not depend on either, so it computes them once per model (the first run's time includes them)."""

    def __init__(self, clf: PyTorchClassifier, args: argparse.Namespace) -> None:
        self.attack = WassersteinDistributionalAttack(clf, eps=1 / 255, p=P, norm=GROUND_NORM, method="auto",
                                                      max_iter=args.iters["auto"], loss="redlr",
                                                      batch_size=args.batch_size, verbose=False)
        self.cold = True

    def run(self, method: str, x: np.ndarray, y: np.ndarray, delta: float) -> tuple[np.ndarray, float, str, dict]:
        self.attack.set_params(eps=delta, method=method)
        seed_everything(0)
        start = time.perf_counter()
        x_adv = self.attack.generate(x, y)
        seconds = time.perf_counter() - start
        note = "flip costs computed (time includes them)" if self.cold else "flip costs reused"
        self.cold = False
        res = self.attack.last_result_
        parts = {} if res is None else {k: asdict(c) for k, c in res.components.items()}
        if method == "auto" and res is not None:
            note += f"; won by {res.method}"
        return x_adv, seconds, note, parts


def run_cell(key: str, clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray, delta: float, args: argparse.Namespace,
             dist: Distributional) -> Cell:
    if key in REGISTRY_NAME:
        x_adv, seconds = run_timed_attack(REGISTRY_NAME[key], clf, x, y, delta, p=P, norm=GROUND_NORM,
                                          settings=settings_for(args, key), seed=0)
        note, parts = "", None
    else:
        x_adv, seconds, note, parts = dist.run(key, x, y, delta)
    cost, feasible = check_cost(x, x_adv, delta, FLOAT32_SLACK if key in ("pgd", "autoattack") else 0.0)
    if not feasible:
        print(f"!!! COST VIOLATION: {HEADINGS[key]} at δ={delta * 255:g}/255: C = {cost:.6g} > δ = {delta:.6g} "
              "or outside [0, 1]", file=sys.stderr)
    return Cell(accuracy(clf, x_adv, y, args.batch_size), seconds, cost, feasible, note, parts)


def standard_autoattack(model: torch.nn.Module, clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray,
                        args: argparse.Namespace) -> Cell:
    """Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) from the ``autoattack`` package at ε = 2/255."""
    from art_wdat.zoo.robustbench_compat import ensure_autoattack_alias

    ensure_autoattack_alias()
    from autoattack import AutoAttack

    eps = RATIO_DELTA / 255
    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", device=args.device, seed=0)
    x_t, y_t = torch.from_numpy(x).to(args.device), torch.from_numpy(y).to(args.device)
    start = time.perf_counter()
    out = adversary.run_standard_evaluation(x_t, y_t, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    x_adv = (out[0] if isinstance(out, tuple) else out).detach().cpu().numpy()
    dist = np.abs(x_adv - x).reshape(len(x), -1).max(axis=1)
    feasible = bool(np.all(dist <= eps * (1 + TOLERANCE) + FLOAT32_SLACK) and np.all((x_adv >= 0) & (x_adv <= 1)))
    return Cell(accuracy(clf, x_adv, y, args.batch_size), seconds, float(dist.max()), feasible, "ℓ∞ max")


def bench_model(name: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict:
    model = load_model(args.shared, name, args.device)
    clf = make_classifier(model, (3, 32, 32), 10, clip_values=(0.0, 1.0), device=args.device)
    # One forward and backward pass first, so that no column's time includes CUDA and cuDNN start-up.
    clf.class_gradient(x[:args.batch_size], label=0)
    dist = Distributional(clf, args)
    cols = [k for k in COLUMNS if k not in args.skip]
    # W-AutoAttack before the knapsack at each δ, and the ratio's δ first: its time is then the cold one.
    order = sorted(args.deltas, key=lambda d: d != RATIO_DELTA)
    cells: dict[float, dict[str, Cell]] = {d: {} for d in args.deltas}
    for d in order:
        for key in sorted(cols, key=lambda k: k != "auto"):
            cells[d][key] = run_cell(key, clf, x, y, d / 255, args, dist)
            print(f"  {name} δ={d:g}/255 {HEADINGS[key]}: {cells[d][key].accuracy:.3f} "
                  f"({cells[d][key].seconds:.1f} s)", file=sys.stderr, flush=True)
    std = None
    if "aa-standard" not in args.skip:
        k = args.aa_standard_n
        std = standard_autoattack(model, clf, x[:k], y[:k], args)
    return {"model": name, "clean": accuracy(clf, x, y, args.batch_size), "columns": cols,
            "cells": {f"{d:g}": {k: asdict(c) for k, c in row.items()} for d, row in cells.items()},
            "aa_standard": None if std is None else asdict(std)}


def verdicts(res: dict, args: argparse.Namespace) -> list[str]:
    """Issue 13's targets: auto strongest at every δ, ≥ 5 points below W-PGD at 2/255, time ≤ 0.5× standard AA."""
    out, cells = [], res["cells"]
    if "auto" in res["columns"]:
        for d, row in cells.items():
            worst = min(c["accuracy"] for c in row.values())
            ok = row["auto"]["accuracy"] <= worst
            out.append(f"δ={d}/255: W-AutoAttack strongest: {'yes' if ok else 'NO'}")
        two = cells.get(f"{RATIO_DELTA:g}", {})
        if "wpgd" in two:
            gap = 100 * (two["wpgd"]["accuracy"] - two["auto"]["accuracy"])
            verdict = "pass" if gap >= 5 else "FAIL"
            out.append(f"δ=2/255: W-PGD − W-AutoAttack = {gap:.1f} points (target ≥ 5): {verdict}")
        std = res["aa_standard"]
        if std is not None and "2" in cells:
            scale = args.n / args.aa_standard_n  # standard AA on fewer images: scale its time to N
            ratio = cells["2"]["auto"]["seconds"] / (std["seconds"] * scale)
            res["auto_over_aa_standard"] = ratio
            out.append(f"time W-AutoAttack / standard AutoAttack at 2/255 = {ratio:.3f} (target ≤ 0.5): "
                       f"{'pass' if ratio <= 0.5 else 'FAIL'}")
    if any(not c["feasible"] for row in cells.values() for c in row.values()):
        out.append("!!! COST VIOLATIONS: see the cells marked VIOLATION")
    return out


def fmt(c: dict) -> str:
    flag = "" if c["feasible"] else f" **VIOLATION C={c['cost']:.4g}**"
    return f"{c['accuracy']:.3f} ({c['seconds']:.1f} s){flag}"


def markdown(res: dict, args: argparse.Namespace) -> str:
    cols = res["columns"]
    lines = [f"### {res['model']}: N = {args.n}, clean accuracy {res['clean']:.3f}, p = 2, ground ℓ∞",
             "", "| δ | " + " | ".join(HEADINGS[k] for k in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for d, row in res["cells"].items():
        lines.append(f"| {d}/255 | " + " | ".join(fmt(row[k]) for k in cols) + " |")
    notes = sorted({f"{HEADINGS[k]} at {d}/255: {c['note']}" for d, row in res["cells"].items()
                    for k, c in row.items() if c["note"]})
    std = res["aa_standard"]
    if std is not None:
        fewer = args.aa_standard_n < args.n
        scaled = f"; its time is scaled by {args.n}/{args.aa_standard_n} for the ratio" if fewer else ""
        notes.append(f"standard AutoAttack (autoattack package) at ε = 2/255 on {args.aa_standard_n} images: "
                     f"{fmt(std)}{scaled}")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes + verdicts(res, args)])


def machine(args: argparse.Namespace) -> dict:
    import art

    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    return {"device": args.device, "gpu": gpu, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "art": art.__version__,
            "python": platform.python_version()}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not (args.shared / "models" / "zoo.py").is_file() or not (args.shared / "data" / "cifar10_jpeg.npz").is_file():
        raise SystemExit(f"bench/strength.py: {args.shared} must hold models/zoo.py and data/cifar10_jpeg.npz "
                         "(the shared folder beside the repository; pass --shared PATH)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/strength.py: --device cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = load_inputs(args.shared, args.n)
    results = {"machine": machine(args), "n": args.n, "deltas_255": args.deltas, "iterations": args.iters,
               "models": []}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        res = bench_model(name, x, y, args)
        print(markdown(res, args) + "\n", flush=True)
        results["models"].append(res)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
