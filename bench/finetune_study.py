"""W-TRADES fine-tuning study on the shared real robust models (issue 14): variant against pointwise-TRADES control.

    python bench/finetune_study.py --model resnet2b --variant default --seeds 0,1          # report on test images
    python bench/finetune_study.py --model cnn_a_adv --variant ce-outer --split val        # choose on validation
    python bench/finetune_study.py --list                                                  # the named variants
    python bench/finetune_study.py --quick                                                 # smoke run (CI)

Data: ``SHARED/data/cifar10_jpeg.npz``. The 50,000 training images are shuffled with
``default_rng(0)``; the last ``--n-val`` (1,000) of that order are the validation split, never trained on, used
to choose settings; the first ``--n-train`` are the fine-tuning set. Test inputs are the first ``--n-eval`` of
``default_rng(0).permutation(10000)`` of the test set (the subset of ``bench/strength.py``); nothing is chosen on
them. Models: ``SHARED/models/zoo.py`` (``resnet2b``, ``cnn_a_adv``).

For each (model, variant, seed) it evaluates the starting model (once, cached), fine-tunes with the variant,
fine-tunes the pointwise-TRADES control with the same schedule and seed (once per schedule, cached), evaluates
both on the same inputs and appends one row per run to ``--results`` (JSON lines). Evaluation: clean accuracy;
AutoAttack from the ``autoattack`` package (custom version, APGD-CE + APGD-T, 100 iterations) at ε = 2/255 ℓ∞;
W-AutoAttack (``method="auto"``) and W-PGD (ReDLR) at δ ∈ {1, 2, 4}/255, p = 2, ground ℓ∞. On the validation
split only clean, AutoAttack and W-AutoAttack at 2/255 run. Runs already in the results file are skipped, and a
fine-tune interrupted between epochs resumes from its checkpoint in ``--work``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from art_wdat import WassersteinDistributionalAttack, WassersteinTRADESTrainer  # noqa: E402
from art_wdat.evaluation.autoattack import PackageAutoAttack  # noqa: E402
from art_wdat.training.checkpoint import seed_everything  # noqa: E402
from art_wdat.zoo import make_classifier  # noqa: E402

EPS = 2 / 255  # the pointwise ε of AutoAttack and of the control, and the δ the claim is judged at
DELTAS = (1 / 255, 2 / 255, 4 / 255)
CONTROL = "control"

#: Named variants: trainer keywords on top of the schedule (a variant may also change the schedule's lr/epochs/beta).
VARIANTS: dict[str, dict[str, Any]] = {
    CONTROL: {"p": float("inf"), "inner_loss": "kl"},  # pointwise TRADES at ε = 2/255: the control
    "default": {},  # WassersteinTRADESTrainer's defaults (joint-knapsack since issue 14)
    # The W-TRADES loss alone (no pointwise term), by inner solver and inner loss; "wpgd-rekl" was the default before.
    "wpgd-rekl": {"method": "wpgd", "inner_loss": "rekl", "pointwise_beta": 0.0},
    "wpgd-kl": {"method": "wpgd", "inner_loss": "kl", "pointwise_beta": 0.0},
    "budget-rekl": {"method": "budget", "inner_loss": "rekl", "budget_rounds": 2, "pointwise_beta": 0.0},
    "knapsack-kl": {"method": "knapsack", "inner_loss": "kl", "pointwise_beta": 0.0},
    "knapsack-rekl": {"method": "knapsack", "inner_loss": "rekl", "pointwise_beta": 0.0},
    # Cross-entropy at the distributional adversary (outer_loss="ce").
    "wpgd-redlr-ce": {"method": "wpgd", "inner_loss": "redlr", "outer_loss": "ce", "pointwise_beta": 0.0},
    "knapsack-redlr-ce": {"method": "knapsack", "inner_loss": "redlr", "outer_loss": "ce", "pointwise_beta": 0.0},
    # The joint objective: the distributional term plus a pointwise TRADES term at ε.
    "joint-wpgd": {"method": "wpgd", "inner_loss": "rekl", "pointwise_beta": 6.0},
    "joint-knapsack": {"method": "knapsack", "inner_loss": "kl", "pointwise_beta": 6.0},
    # The joint objective with the control's total KL weight: β = 3 distributional + 3 pointwise.
    "joint-knapsack-split": {"method": "knapsack", "inner_loss": "kl", "beta": 3.0, "pointwise_beta": 3.0},
    # Pointwise TRADES (β_pt = 6, the control's KL weight) plus CE at the knapsack's label-aware (ReDLR) adversary.
    "joint-knapsack-ce": {"method": "knapsack", "inner_loss": "redlr", "outer_loss": "ce", "pointwise_beta": 6.0},
    # Is the joint objective's gain only its doubled KL weight? Pointwise TRADES with β = 12.
    "trades-beta12": {"p": float("inf"), "inner_loss": "kl", "beta": 12.0},
    # Issue 20's hypotheses, each on top of the joint objective (β = β_pt = 6 unless --set).
    # Weigh by cheapness: the KL terms weighted by 1 + λ·exp(−c_i/δ), c_i the first-order flip cost (knob λ).
    "cheap-kl": {"method": "knapsack", "inner_loss": "kl", "pointwise_beta": 6.0, "cheapness_weight": 4.0},
    # MMA-style: CE at the knapsack's points (budgets ∝ the first-order flip costs of the inputs it flips, ReDLR
    # ascent, which stops just past the boundary) plus the pointwise TRADES term at ε (knob: the W budget δ).
    "mma": {"method": "knapsack", "inner_loss": "redlr", "outer_loss": "ce", "pointwise_beta": 6.0,
            "pointwise_eps": EPS},
    # A larger training budget δ = 4/255 for the distributional term, the pointwise term at ε (knob: β = β_pt).
    "joint-knapsack-large": {"method": "knapsack", "inner_loss": "kl", "pointwise_beta": 6.0, "eps": 4 / 255,
                             "pointwise_eps": EPS},
    # Its pointwise control: TRADES at ε = 4/255 (knob: β from --beta).
    "trades-eps4": {"p": float("inf"), "inner_loss": "kl", "eps": 4 / 255},
    "sensitivity": {"method": "wpgd", "inner_loss": "rekl", "sensitivity_weight": 1.0, "pointwise_beta": 0.0},
    "reinit-last": {"finetune": "reinit_last"},
    "perturb": {"finetune": "perturb"},
}


@dataclass
class Schedule:
    """What the variant and its control share: the fine-tuning set, optimiser, epochs, inner steps, β, seed."""

    n_train: int = 10000
    epochs: int = 2
    lr: float = 0.002
    batch_size: int = 128
    beta: float = 6.0
    max_iter: int = 5
    eps: float = EPS

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class EvalPlan:
    """Which attacks run and how hard: the full plan on test images, a light one on the validation split."""

    n: int
    deltas: tuple[float, ...]
    wpgd: bool
    auto_iter: int = 100
    aa_iter: int | None = None  # None: the package's 100
    batch_size: int = 500


def machine() -> str:
    """The host and processor every result row records."""
    return f"{platform.node()} {platform.processor() or platform.machine()}"


@dataclass
class Row:
    """One line of the results file."""

    kind: str  # "start", "finetune"
    model: str
    variant: str
    seed: int | None
    split: str
    n_eval: int
    schedule: dict
    trainer_kwargs: dict
    plan: dict
    metrics: dict
    seconds: float
    machine: str = field(default_factory=lambda: machine())
    threads: int = field(default_factory=torch.get_num_threads)
    torch: str = torch.__version__
    costs: str | None = None  # W-AutoAttack's flip costs, relative to the results file's folder


# -- data and models ----------------------------------------------------------------------------------------
def load_data(shared: Path, n_train: int, n_val: int, split: str, n_eval: int) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_eval, y_eval): the fine-tuning set and the evaluation inputs of ``split``."""
    data = np.load(shared / "data" / "cifar10_jpeg.npz")
    order = np.random.default_rng(0).permutation(data["x_train"].shape[0])
    if n_train + n_val > order.size:
        raise ValueError(f"--n-train {n_train} + --n-val {n_val} exceed the {order.size} training images")
    train, val = order[:n_train], order[order.size - n_val:]
    if split == "val":
        xe, ye = data["x_train"][val[:n_eval]], data["y_train"][val[:n_eval]]
    else:
        test = np.random.default_rng(0).permutation(data["x_test"].shape[0])[:n_eval]
        xe, ye = data["x_test"][test], data["y_test"][test]
    as_float = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
    return (as_float(data["x_train"][train]), data["y_train"][train].astype(np.int64), as_float(xe),
            ye.astype(np.int64))


def load_model(shared: Path, name: str) -> torch.nn.Module:
    sys.path.insert(0, str(shared / "models"))
    import zoo  # type: ignore[import-not-found]  # SHARED/models/zoo.py, not a package

    return zoo.load(name).eval()


def classifier_of(model: torch.nn.Module, device: str, optimizer: torch.optim.Optimizer | None = None) -> Any:
    return make_classifier(model, (3, 32, 32), 10, clip_values=(0.0, 1.0), device=device, optimizer=optimizer)


# -- evaluation ---------------------------------------------------------------------------------------------
def accuracy(clf: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(clf.predict(x, batch_size=500).argmax(axis=1) == y))


def evaluate_model(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, plan: EvalPlan, device: str,
                   costs_to: Path | None = None) -> dict:
    """Clean, AutoAttack at ε, W-AutoAttack (and W-PGD) at each δ; every attack seeded with 0.

    :param costs_to: Save W-AutoAttack's verified flip costs (one per input, ℓ∞) there as ``.npy``: where the
                     robustness went (``bench/frontier.py --costs``).
    """
    clf = classifier_of(model, device)
    out: dict[str, float] = {"clean": accuracy(clf, x, y)}
    seed_everything(0)
    aa = PackageAutoAttack(clf, eps=EPS, norm=np.inf, version="custom", max_iter=plan.aa_iter,
                           batch_size=plan.batch_size, seed=0)
    out["autoattack@2"] = accuracy(clf, aa.generate(x, y), y)
    wauto = WassersteinDistributionalAttack(clf, eps=plan.deltas[0], p=2, norm=np.inf, method="auto",
                                            max_iter=plan.auto_iter, loss="redlr", batch_size=plan.batch_size,
                                            verbose=False)
    for d in plan.deltas:  # flip costs are computed once and reused for every δ
        wauto.set_params(eps=d)
        seed_everything(0)
        out[f"wauto@{d * 255:g}"] = accuracy(clf, wauto.generate(x, y), y)
        if costs_to is not None and wauto.last_result_ is not None:
            costs_to.parent.mkdir(parents=True, exist_ok=True)
            np.save(costs_to, wauto.last_result_.flip_costs.astype(np.float32))
        if plan.wpgd:
            wpgd = WassersteinDistributionalAttack(clf, eps=d, p=2, norm=np.inf, method="wpgd", max_iter=100,
                                                   loss="redlr", batch_size=plan.batch_size, verbose=False)
            seed_everything(0)
            out[f"wpgd@{d * 255:g}"] = accuracy(clf, wpgd.generate(x, y), y)
    return out


# -- fine-tuning --------------------------------------------------------------------------------------------
def trainer_kwargs(variant: str, overrides: dict[str, Any], schedule: Schedule) -> dict[str, Any]:
    """The trainer's keywords of a run: the schedule's, the named variant's, then the command line's overrides."""
    kwargs: dict[str, Any] = {"eps": schedule.eps, "beta": schedule.beta, "max_iter": schedule.max_iter}
    kwargs.update(VARIANTS[variant])
    kwargs.update(overrides)
    return kwargs


def finetune(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, kwargs: dict[str, Any], schedule: Schedule,
             seed: int, device: str, work: Path, verbose: bool) -> torch.nn.Module:
    """Fine-tune ``model`` in place with W-TRADES (``kwargs``) under ``schedule``; resumes from ``work``."""
    model.to(device)
    seed_everything(seed)
    opt = torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, schedule.epochs))
    clf = classifier_of(model, device, opt)
    trainer = WassersteinTRADESTrainer(clf, **kwargs)
    trainer.fit(x, y, batch_size=schedule.batch_size, nb_epochs=schedule.epochs, scheduler=sched,
                checkpoint_dir=work, resume=True, seed=seed, verbose=verbose)
    return model.eval()


def run_key(row: dict) -> tuple:
    return (row["kind"], row["model"], row["variant"], row["seed"], row["split"], row["n_eval"],
            json.dumps(row["plan"], sort_keys=True), json.dumps(row["schedule"], sort_keys=True),
            json.dumps(row["trainer_kwargs"], sort_keys=True))


class Results:
    """The JSON-lines results file: rows already there are found by their key and not run again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
            if path.is_file() else []

    def find(self, key: tuple) -> dict | None:
        return next((r for r in self.rows if run_key(r) == key), None)

    def append(self, row: Row) -> dict:
        record = asdict(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        self.rows.append(record)
        return record


def costs_path(results_file: Path, row: Row) -> Path:
    """Where a run's flip costs go (and sets ``row.costs``): ``flip_costs/<model>/<run key hash>.npy`` beside the
    results file."""
    digest = hashlib.sha1(json.dumps(run_key(asdict(row))).encode()).hexdigest()[:12]
    row.costs = f"flip_costs/{row.model}/{row.split}-{digest}.npy"
    return results_file.parent / row.costs


def cached_run(results: Results, row: Row, compute: Any) -> dict:
    """The row from the results file if present, else ``compute()`` (metrics) timed and appended."""
    found = results.find(run_key(asdict(row)))
    if found is not None:
        return found
    start = time.perf_counter()
    row.metrics = compute()
    row.seconds = time.perf_counter() - start
    return results.append(row)


def study(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    schedule = Schedule(n_train=args.n_train, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                        beta=args.beta, max_iter=args.max_iter)
    plan = EvalPlan(n=args.n_eval, deltas=(2 / 255,) if args.split == "val" else DELTAS,
                    wpgd=args.split == "test" and not args.no_wpgd,
                    auto_iter=args.auto_iter, aa_iter=args.aa_iter)
    x_tr, y_tr, x_ev, y_ev = load_data(args.shared, args.n_train, args.n_val, args.split, args.n_eval)
    results = Results(args.results)
    out = []
    for name in args.model.split(","):
        start = Row("start", name, "start", None, args.split, args.n_eval, {}, {}, asdict(plan), {}, 0.0)
        start_costs = costs_path(results.path, start)
        base = cached_run(results, start, lambda name=name, to=start_costs: evaluate_model(
            load_model(args.shared, name), x_ev, y_ev, plan, args.device, to))
        # Seed by seed, the control first: each finished seed is a complete comparison.
        runs = [(v, s) for s in args.seeds for v in [CONTROL, *args.variant.split(",")]]
        for variant, seed in tqdm(runs, desc=f"{name} fine-tunes", disable=args.quiet):
            if variant == CONTROL and args.no_control:
                continue
            kwargs = trainer_kwargs(variant, {} if variant == CONTROL else args.set, schedule)
            row = Row("finetune", name, variant, seed, args.split, args.n_eval, asdict(schedule), kwargs, asdict(plan),
                      {}, 0.0)
            # One checkpoint folder per fine-tune (not per evaluation split): what it trains, not what judges it.
            work = args.work / name / hashlib.sha1(json.dumps([variant, seed, row.schedule, kwargs],
                                                              sort_keys=True).encode()).hexdigest()[:12]

            costs = costs_path(results.path, row)

            def compute(kwargs: dict = kwargs, seed: int = seed, work: Path = work, name: str = name,
                        costs: Path = costs) -> dict:
                model = finetune(load_model(args.shared, name), x_tr, y_tr, kwargs, schedule, seed, args.device,
                                 work, not args.quiet)
                return evaluate_model(model, x_ev, y_ev, plan, args.device, costs)

            record = cached_run(results, row, compute)
            out.append(record)
            print(summary_line(name, variant, seed, base["metrics"], record["metrics"]), flush=True)
    return out


def markdown_table(rows: list[dict]) -> str:
    """The results file as Markdown: per (model, split, plan, schedule) the start, the control and each variant
    (mean over seeds, seeds listed), every metric with its change from the start; W-AutoAttack at 2/255 also
    against the control."""
    groups: dict[tuple, list[dict]] = {}
    starts = {(r["model"], r["split"], r["n_eval"], json.dumps(r["plan"], sort_keys=True)): r
              for r in rows if r["kind"] == "start"}
    for r in rows:
        if r["kind"] == "finetune":
            key = (r["model"], r["split"], r["n_eval"], json.dumps(r["plan"], sort_keys=True),
                   json.dumps(r["schedule"], sort_keys=True))
            groups.setdefault(key, []).append(r)
    out = []
    for key, runs in groups.items():
        start = starts.get(key[:4])
        if start is None:
            continue
        schedule = json.loads(key[4])
        metrics = list(start["metrics"])
        out.append(f"\n**{key[0]}**, {key[1]} split ({key[2]} images); schedule: {schedule['n_train']} training "
                   f"images, {schedule['epochs']} epoch(s), lr {schedule['lr']}, β {schedule['beta']}, "
                   f"{schedule['max_iter']} inner steps, δ = ε = {schedule['eps'] * 255:g}/255\n")
        out.append("| variant | seeds | " + " | ".join(metrics) + " | W-AA@2 vs control |")
        out.append("|---|---|" + "---|" * (len(metrics) + 1))
        out.append("| start | - | " + " | ".join(f"{start['metrics'][m]:.3f}" for m in metrics) + " | |")
        by_variant: dict[str, list[dict]] = {}
        for r in runs:  # a variant with --set overrides is its own row, named with them
            plain = trainer_kwargs(r["variant"], {}, Schedule(**schedule))
            overrides = {k: v for k, v in r["trainer_kwargs"].items() if plain.get(k, object()) != v}
            by_variant.setdefault(r["variant"] + (f" {overrides}" if overrides else ""), []).append(r)
        control = by_variant.get(CONTROL)
        for name, vr in sorted(by_variant.items(), key=lambda kv: (kv[0] != CONTROL, kv[0])):
            seeds = sorted(r["seed"] for r in vr)
            mean = {m: float(np.mean([r["metrics"][m] for r in vr])) for m in metrics}
            cells = [f"{mean[m]:.3f} ({100 * (mean[m] - start['metrics'][m]):+.1f})" for m in metrics]
            versus = ""
            paired = [r for r in control or [] if r["seed"] in seeds]
            if paired and name != CONTROL:
                ctrl = float(np.mean([r["metrics"]["wauto@2"] for r in paired]))
                versus = f"{100 * (mean['wauto@2'] - ctrl):+.1f}"
            notes = sorted({r["note"] for r in vr if r.get("note")})
            label = name + "".join(f" ({note})" for note in notes)
            out.append(f"| {label} | {','.join(map(str, seeds))} | " + " | ".join(cells) + f" | {versus} |")
    return "\n".join(out)


#: Issue 14's targets, in points against the start model or the control: (metric, against, least change).
TARGETS = (("wauto@2", "start", 2.0), ("wauto@2", CONTROL, 1.0), ("autoattack@2", "start", -1.0),
           ("clean", "start", -1.5))


def claim_check(rows: list[dict], variant: str) -> str:
    """Issue 14's targets for ``variant`` on the test images, per model and schedule: mean over the seeds it shares
    with the control, each change in points, and whether it is met."""
    out = ["| model | training images | seeds | " + " | ".join(f"{m} vs {a} (≥ {t:+g})" for m, a, t in TARGETS)
           + " | all met |", "|---|---|---|" + "---|" * (len(TARGETS) + 1)]
    test = [r for r in rows if r["split"] == "test"]
    for start in (r for r in test if r["kind"] == "start"):
        model = start["model"]
        runs = [r for r in test if r["kind"] == "finetune" and r["model"] == model and r["plan"] == start["plan"]]
        by_schedule: dict[str, list[dict]] = {}
        for r in runs:
            by_schedule.setdefault(json.dumps(r["schedule"], sort_keys=True), []).append(r)
        for schedule, same in by_schedule.items():
            mine = [r for r in same if r["variant"] == variant]
            ctrl = {r["seed"]: r for r in same if r["variant"] == CONTROL}
            seeds = sorted(r["seed"] for r in mine if r["seed"] in ctrl)
            if not seeds:
                continue
            cells, met = [], True
            for metric, against, least in TARGETS:
                ours = np.mean([r["metrics"][metric] for r in mine if r["seed"] in seeds])
                ref = start["metrics"][metric] if against == "start" else np.mean(
                    [ctrl[s]["metrics"][metric] for s in seeds])
                change = 100 * (ours - ref)
                met &= bool(change >= least - 1e-9)
                # Two decimals: a mean change of 0.95 is not a 1-point margin, though it prints as +1.0.
                cells.append(f"{change:+.2f} {'yes' if change >= least - 1e-9 else 'no'}")
            n_train = json.loads(schedule)["n_train"]
            out.append(f"| {model} | {n_train} | {','.join(map(str, seeds))} | " + " | ".join(cells)
                       + f" | {'yes' if met else 'no'} |")
    return "\n".join(out)


def summary_line(model: str, variant: str, seed: int, before: dict, after: dict) -> str:
    cells = " ".join(f"{k} {before[k]:.3f}->{after[k]:.3f}" for k in after)
    return f"{model} {variant} seed {seed}: {cells}"


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs, values parsed as JSON where they can be (numbers, null, true)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--set takes key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="folder with models/ and data/")
    ap.add_argument("--model", default="resnet2b", help="resnet2b, cnn_a_adv, or both comma-separated")
    ap.add_argument("--variant", default="default", help=f"comma-separated, from: {', '.join(VARIANTS)}")
    ap.add_argument("--set", nargs="*", default=[], help="trainer keyword overrides key=value (JSON values)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--split", choices=("val", "test"), default="test")
    ap.add_argument("--n-train", type=int, default=None, help="fine-tuning images (default 10000)")
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--n-eval", type=int, default=None, help="evaluation images (default 1000)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--beta", type=float, default=6.0)
    ap.add_argument("--max-iter", type=int, default=None, help="inner steps (default 5)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--auto-iter", type=int, default=None, help="W-AutoAttack's W-PGD iterations (default 100)")
    ap.add_argument("--aa-iter", type=int, default=None, help="AutoAttack iterations (default the package's 100)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-control", action="store_true", help="skip the pointwise-TRADES control")
    ap.add_argument("--no-wpgd", action="store_true", help="on test images, W-AutoAttack only (no W-PGD runs)")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "wtrades_study.jsonl")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "finetune_study", help="fine-tune checkpoints")
    ap.add_argument("--quick", action="store_true", help="smoke run: 256 images, 64 evaluated, 1 epoch, few steps")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--list", action="store_true", help="print the named variants and exit")
    ap.add_argument("--table", action="store_true", help="print the results file as Markdown tables and exit")
    ap.add_argument("--check", metavar="VARIANT", default=None,
                    help="print issue 14's targets for VARIANT on the test images (mean over seeds) and exit")
    args = ap.parse_args(argv)
    unknown = set(args.variant.split(",")) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown --variant {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    args.set = parse_set(args.set)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    quick = args.quick
    args.n_train = args.n_train or (256 if quick else 10000)
    args.n_eval = args.n_eval or (64 if quick else 1000)
    args.n_val = min(args.n_val, 64) if quick else args.n_val
    args.epochs = args.epochs or (1 if quick else 2)
    args.max_iter = args.max_iter or (2 if quick else 5)
    args.auto_iter = args.auto_iter or (5 if quick else 100)
    args.aa_iter = args.aa_iter or (5 if quick else None)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, kw in VARIANTS.items():
            print(f"{name:20s} {kw}")
        return 0
    if args.table:
        print(markdown_table(Results(args.results).rows))
        return 0
    if args.check:
        print(claim_check(Results(args.results).rows, args.check))
        return 0
    study(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
