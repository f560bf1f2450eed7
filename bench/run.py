"""Side-by-side benchmark: W-PGD against ART's PGD, the forward+backward floor, W-TRADES against ART's TRADES.

    python bench/run.py --quick                  # small CNN, < 2 minutes on 2 CPU cores
    python bench/run.py                          # small CNN and ResNet-18, CPU
    python bench/run.py --device cuda            # the same on a GPU
    python bench/run.py --device cuda --models wrn-28-10 --amp --skip trades,memory,scaling
                                                 # RobustBench's WideResNet-28-10 at fp32 and bf16

``--amp`` adds the bf16 rows: W-PGD over the floor with both under bf16 autocast (``amp=True``; channels_last
inputs on CUDA), and W-PGD's and the floor's bf16 time over their fp32 time. W-PGD's bf16 time includes its
float32 re-counts (one forward+backward and up to three forwards per run), so use many iterations (the default 10
or more) for a fair bf16 ratio. The models have random weights: the
times do not depend on them. ``--models wrn-28-10 --n 2 --iters 1 --repeats 1 --batch-size 2 --amp --skip
trades,memory,scaling,pgd,budget`` runs this path on a CPU in seconds.

Every ratio is measured in one process, on the same model, data, batch size and device, with the
contenders interleaved in each repeat; medians over repeats are printed with their min–max, so a
noisy machine moves both sides and not the verdict. Data: ../shared/data/cifar10_subset.npz when
present, else random tensors of CIFAR-10 shape. Output: a Markdown table on stdout and
bench/results/<date>-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from readme_tables import cpu_model  # noqa: E402  (bench/readme_tables.py: the CPU's model name for the results)

SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10_subset.npz"
EPS = 8 / 255


@dataclass
class Row:
    """One measured ratio: median over repeats with its range, and the target it is held to."""

    model: str
    name: str
    ratios: list
    target: str = ""
    detail: dict = field(default_factory=dict)
    #: The precision of the passes measured: "fp32", "bf16", or "bf16/fp32" for a ratio of the two.
    precision: str = "fp32"

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def verdict(self) -> str:
        if not self.target:
            return "report"
        op, bound = self.target.split(" ")
        ok = self.median <= float(bound) if op == "<=" else self.median >= float(bound)
        return "pass" if ok else "FAIL"

    def markdown(self) -> str:
        spread = f"{min(self.ratios):.2f}–{max(self.ratios):.2f}"
        target = self.target or "—"
        return (f"| {self.model} | {self.precision} | {self.name} | {self.median:.2f} | {spread} | {target} | "
                f"{self.verdict()} |")


#: ``--amp``'s precisions: the name of each and whether the passes run under bf16 autocast.
PRECISIONS = {"fp32": False, "bf16": True}
#: Models: the CIFAR small CNN, ResNet-18 and RobustBench's WideResNet-28-10 (random weights).
MODELS = ("smallcnn", "resnet18", "wrn-28-10")
SKIPPABLE = ("trades", "memory", "scaling", "pgd", "budget")


# -- models and data ----------------------------------------------------------------------------------------
def make_model(name: str) -> torch.nn.Module:
    if name == "smallcnn":
        from art_wdat.zoo import SmallCNN

        return SmallCNN(3, 10, 32, width=32)
    if name == "wrn-28-10":
        return wide_resnet_28_10()
    import torchvision

    # ResNet-18 adapted to 32×32 inputs, as in the CIFAR literature: 3×3 stem, no max-pool.
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    return net


def wide_resnet_28_10() -> torch.nn.Module:
    """RobustBench's WideResNet-28-10 (the architecture of most of its CIFAR-10 ℓ∞ entries), random weights.

    From ``robustbench.model_zoo.architectures`` (no download: only the class is imported).
    """
    import warnings

    with warnings.catch_warnings():  # robustbench imports pkg_resources, deprecated by setuptools
        warnings.simplefilter("ignore")
        from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    return WideResNet(depth=28, widen_factor=10, num_classes=10)


def classifier(model: torch.nn.Module, device: str):
    from art_wdat.zoo import make_classifier

    return make_classifier(model.eval(), (3, 32, 32), 10, device=device,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))


def load_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    if SHARED_CIFAR.exists():
        with np.load(SHARED_CIFAR) as f:
            x = np.concatenate([f["x_test"], f["x_train"]])[:n].astype(np.float32) / np.float32(255.0)
            y = np.concatenate([f["y_test"], f["y_train"]])[:n].astype(np.int64)
        if len(x) == n:
            return x, y, "cifar10_subset"
    rng = np.random.default_rng(seed)
    return rng.random((n, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, n), "random"


def timed(fn, *args, sync: str = "cpu") -> float:
    if sync == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(*args)
    if sync == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


# -- the contenders ---------------------------------------------------------------------------------------
def art_pgd(clf, iters: int, batch: int):
    from art.attacks.evasion import ProjectedGradientDescent

    return ProjectedGradientDescent(clf, norm=np.inf, eps=EPS, eps_step=1.875 * EPS / iters, max_iter=iters,
                                    batch_size=batch, verbose=False)


def wpgd(clf, iters: int, batch: int, method: str = "wpgd", amp: bool = False):
    from art_wdat import WassersteinDistributionalAttack

    return WassersteinDistributionalAttack(clf, eps=EPS, p=2, norm=np.inf, method=method, max_iter=iters,
                                           batch_size=batch, verbose=False, amp=amp)


def floor_loop(clf, x: np.ndarray, y: np.ndarray, iters: int, batch: int, amp: bool = False) -> None:
    """The floor of any gradient attack: one forward and one input-gradient backward per input and iteration.

    With ``amp`` the forward runs as the attack's does (bf16 autocast, channels_last on CUDA, float32 logits).
    """
    from art_wdat.core.precision import autocast_forward

    device = torch.device(clf.device)
    model = autocast_forward(clf.model, device) if amp else clf.model
    xs = torch.from_numpy(x).to(device)
    ys = torch.from_numpy(y).to(device)
    for _ in range(iters):
        for i in range(0, len(xs), batch):
            xb = xs[i:i + batch].clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(xb), ys[i:i + batch], reduction="sum")
            torch.autograd.grad(loss, xb)


# -- measurements --------------------------------------------------------------------------------------------
def attack_rows(model_name: str, args, x, y) -> list:
    """ART PGD, W-PGD, the floor and W-PGD-Budget interleaved in each repeat; W-PGD and the floor at each precision
    of ``args.precisions`` (fp32, and bf16 with ``--amp``)."""
    clf = classifier(make_model(model_name), args.device)
    t, b, sync, skip = args.max_iter, args.batch_size, args.device, args.skip_parts
    attacks = {} if "pgd" in skip else {"pgd": art_pgd(clf, t, b)}
    contenders = {"pgd": partial(attacks["pgd"].generate, x, y)} if attacks else {}
    for name in args.precisions:  # W-PGD next to its floor at each precision
        attacks[f"wpgd-{name}"] = wpgd(clf, t, b, amp=PRECISIONS[name])
        contenders[f"wpgd-{name}"] = partial(attacks[f"wpgd-{name}"].generate, x, y)
        contenders[f"floor-{name}"] = partial(floor_loop, clf, x, y, t, b, PRECISIONS[name])
    if "budget" not in skip:
        contenders["budget"] = partial(wpgd(clf, t, b, "budget").generate, x, y)
    for attack in attacks.values():  # warm-up: allocator, kernels (each precision's), lazy imports
        timed(attack.generate, x[:b], y[:b], sync=sync)
    times: dict[str, list] = {k: [] for k in contenders}
    for _ in range(args.repeats):
        for key, run in contenders.items():
            times[key].append(timed(run, sync=sync))
    return _attack_ratios(model_name, times)


def _attack_ratios(model: str, times: dict) -> list:
    """The rows of :func:`attack_rows` from each contender's times per repeat (ratios taken repeat by repeat)."""
    def ratio(num: str, den: str) -> list:
        return [a / c for a, c in zip(times[num], times[den])]

    rows = []
    if "pgd" in times:
        rows.append(Row(model, "W-PGD time / ART PGD time", ratio("wpgd-fp32", "pgd"), "<= 1.10"))
    for name in PRECISIONS:
        if f"wpgd-{name}" in times:  # throughput ratio = inverse time ratio
            # bf16: reported, not held to the fp32 target; the attack also pays its float32 re-counts (one fwd+bwd
            # at the start, a forward of the start, the best and the last iterate), which the floor does not.
            suffix, target = ("", ">= 0.85") if name == "fp32" else (f" ({name})", "")
            rows.append(Row(model, f"W-PGD throughput / fwd+bwd floor{suffix}", ratio(f"floor-{name}", f"wpgd-{name}"),
                            target, precision=name))
    if "budget" in times:
        rows.append(Row(model, "W-PGD-Budget time / W-PGD time (same iterations)", ratio("budget", "wpgd-fp32")))
    if "wpgd-bf16" in times:
        rows += [Row(model, "W-PGD bf16 time / fp32 time", ratio("wpgd-bf16", "wpgd-fp32"), precision="bf16/fp32"),
                 Row(model, "fwd+bwd floor bf16 time / fp32 time", ratio("floor-bf16", "floor-fp32"),
                     precision="bf16/fp32")]
    return rows


def trades_row(model_name: str, args, x, y) -> list:
    try:
        from art_wdat.training.trainer import WassersteinTRADESTrainer
    except ImportError:
        logging.warning("art_wdat.trainer is not available: skipping the W-TRADES row")
        return []
    from art.defences.trainer import AdversarialTrainerTRADESPyTorch

    inner, b, ratios = args.trades_steps, args.batch_size, []
    for _ in range(args.repeats):
        torch.manual_seed(0)
        clf_art = classifier(make_model(model_name), args.device)
        art_trainer = AdversarialTrainerTRADESPyTorch(clf_art, art_pgd(clf_art, inner, b), beta=6.0)
        torch.manual_seed(0)
        clf_ours = classifier(make_model(model_name), args.device)
        # The W-TRADES loss alone, one inner maximisation like ART's TRADES (the default joint objective runs two).
        ours = WassersteinTRADESTrainer(clf_ours, eps=EPS, p=2, norm=np.inf, beta=6.0, max_iter=inner, method="wpgd",
                                        inner_loss="rekl", pointwise_beta=0.0)
        t_art = _fit_time(art_trainer, x, y, b, args)
        t_ours = _fit_time(ours, x, y, b, args)
        ratios.append(t_ours / t_art)
    return [Row(model_name, f"W-TRADES epoch / ART TRADES epoch ({inner} inner steps)", ratios, "<= 1.0")]


def _fit_time(trainer, x, y, batch: int, args) -> float:
    kwargs = {"verbose": False} if "WassersteinTRADES" in type(trainer).__name__ else {}
    return timed(lambda: trainer.fit(x, y, nb_epochs=1, batch_size=batch, **kwargs), sync=args.device)


def memory_row(model_name: str, args) -> list:
    """Peak memory of W-PGD over ART PGD's, each in a fresh process (RSS on CPU, max_memory_allocated on CUDA)."""
    peaks = {}
    for which in ("pgd", "wpgd"):
        cmd = [sys.executable, __file__, "--memory-probe", which, "--model", model_name, "--device", args.device,
               "--threads", str(torch.get_num_threads()),
               "--n", str(args.n), "--max-iter", str(args.max_iter), "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        peaks[which] = json.loads(out)
    ratio = peaks["wpgd"]["peak"] / peaks["pgd"]["peak"]
    # Growth above the process's baseline (libraries, model, data), which dominates the peak on CPU.
    growth = (peaks["wpgd"]["peak"] - peaks["wpgd"]["base"]) / max(peaks["pgd"]["peak"] - peaks["pgd"]["base"], 1)
    return [Row(model_name, "peak memory W-PGD / ART PGD", [ratio], "<= 1.5", {"growth_ratio": growth, **peaks}),
            Row(model_name, "memory growth during the attack W-PGD / ART PGD", [growth])]


class _RssSampler:
    """Peak resident memory while a block runs, sampled from /proc every 2 ms (ru_maxrss would also count setup)."""

    def __enter__(self):
        import threading

        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(args) -> None:
    x, y, _ = load_data(args.n)
    clf = classifier(make_model(args.model), args.device)
    attack = art_pgd(clf, args.max_iter, args.batch_size) if args.memory_probe == "pgd" else wpgd(
        clf, args.max_iter, args.batch_size)
    attack.generate(x[:2], y[:2])  # load everything lazily imported before taking the baseline
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        attack.generate(x, y)
        torch.cuda.synchronize()
        print(json.dumps({"base": base, "peak": torch.cuda.max_memory_allocated()}))
        return
    with _RssSampler() as rss:
        attack.generate(x, y)
    print(json.dumps({"base": rss.base, "peak": rss.peak}))


def scaling_row(model_name: str, args) -> list:
    sizes, times = args.scaling, []
    clf = classifier(make_model(model_name), args.device)
    attack = wpgd(clf, args.max_iter, args.batch_size)
    for n in sizes:
        x, y, _ = load_data(n)
        times.append(statistics.median(timed(attack.generate, x, y, sync=args.device) for _ in range(2)))
    slope = np.polyfit(np.log(sizes), np.log(times), 1)[0]
    per_input = [t / n for t, n in zip(times, sizes)]
    return [Row(model_name, f"scaling: log-log slope of W-PGD time over N={sizes}", [slope], "<= 1.10",
                {"seconds": times, "seconds_per_input": per_input})]


# -- driver ------------------------------------------------------------------------------------------------
def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="small CNN only, fewer inputs: < 2 min on 2 cores")
    parser.add_argument("--models", default=None, help=f"comma-separated, from {','.join(MODELS)}")
    parser.add_argument("--n", type=int, default=None, help="inputs attacked per run")
    parser.add_argument("--max-iter", "--iters", type=int, default=None)
    parser.add_argument("--amp", action="store_true",
                        help="also measure W-PGD and the floor under bf16 autocast, and bf16 time over fp32 time")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--trades-steps", type=int, default=5)
    parser.add_argument("--skip", default="", help=f"comma-separated parts to skip: {','.join(SKIPPABLE)}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--memory-probe", choices=("pgd", "wpgd"), help=argparse.SUPPRESS)
    parser.add_argument("--model", default="smallcnn", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.models = (args.models or ("smallcnn" if quick else "smallcnn,resnet18")).split(",")
    if set(args.models) - set(MODELS):
        parser.error(f"unknown --models {sorted(set(args.models) - set(MODELS))}; choose from {', '.join(MODELS)}")
    args.skip_parts = set(filter(None, args.skip.split(",")))
    if args.skip_parts - set(SKIPPABLE):
        parser.error(f"unknown --skip {sorted(args.skip_parts - set(SKIPPABLE))}; choose from {', '.join(SKIPPABLE)}")
    args.precisions = list(PRECISIONS) if args.amp else ["fp32"]
    # Quick: fewer inputs, not fewer iterations; the last iterate's evaluation pass weighs 1/(3T) of the work.
    args.n = args.n or (128 if quick else 512)
    args.max_iter = args.max_iter or 10
    args.repeats = args.repeats or (3 if quick else 5)
    # Whole batches only: a partial batch runs faster per input and would bend the slope.
    args.scaling = [128, 256, 512] if quick else [256, 1024, 4096]
    return args


def run(args) -> dict:
    torch.manual_seed(0)
    skip = args.skip_parts
    x, y, source = load_data(args.n)
    rows = []
    for name in args.models:
        heavy = name != "smallcnn" and args.device == "cpu"  # ResNet-18 or WRN on 2 CPU cores: fewer inputs
        xs, ys = (x[:args.batch_size], y[:args.batch_size]) if heavy else (x, y)
        rows += attack_rows(name, args, xs, ys)
        if "trades" not in skip:
            rows += trades_row(name, args, xs, ys)
        if "memory" not in skip:
            rows += memory_row(name, args)
        if "scaling" not in skip and not heavy:
            rows += scaling_row(name, args)
    return {"date": date.today().isoformat(), "device": args.device, "data": source, "n": args.n,
            "max_iter": args.max_iter, "batch_size": args.batch_size, "repeats": args.repeats,
            "precisions": args.precisions, "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "cpu": cpu_model(),
            "threads": torch.get_num_threads(), "rows": [asdict(r) | {"median": r.median, "verdict": r.verdict()}
                                                         for r in rows], "_rows": rows}


def main(argv=None) -> dict:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args)
        return {}
    result = run(args)
    rows = result.pop("_rows")
    print(f"device={result['device']} data={result['data']} N={result['n']} T={result['max_iter']} "
          f"batch={result['batch_size']} repeats={result['repeats']} torch={result['torch']}")
    print("| model | precision | measure | median | min–max | target | verdict |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.markdown())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result['date']}-{result['device']}.json"
    path.write_text(json.dumps(result, indent=2, default=_jsonable))
    print(f"written: {path}")
    return result


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return str(v)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
