"""``art-wdat finetune`` as a user runs it, judged on test images it never saw (issue 19's check).

    python bench/finetune_recipe.py --model resnet2b,cnn_a_adv            # the check: 10,000 images, defaults
    python bench/finetune_recipe.py --model resnet2b --extra --epochs 6   # any finetune flag after --extra
    python bench/finetune_recipe.py --table                               # the results file as Markdown
    python bench/finetune_recipe.py --quick                               # smoke run (tests)

For each shared model (``SHARED/models/zoo.py``) it writes an npz of the first ``--n-train`` (10,000) images of the
JPEG CIFAR-10 training set shuffled with ``default_rng(0)`` (the study's fine-tuning set; the command line holds out
1,000 of them to choose the epoch) and the first ``--n-eval`` (1,000) of ``default_rng(0).permutation(10000)`` of the
test set, runs ``art-wdat finetune --model zoo.py:load:NAME --dataset npz:... --eps 2/255 --p 2`` with nothing else
but the ``--extra`` flags, then evaluates the start and the fine-tuned weights on the test images with the study's
full plan (``bench/finetune_study.py``: clean; AutoAttack, custom version, 100 iterations, at ε = 2/255; W-AutoAttack
at δ = 1, 2, 4 /255, p = 2, ℓ∞; W-PGD too). One JSON line per run goes to ``--results``, with the fine-tune's wall
time, its kept epoch and held-out table, and the machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import finetune_study as study  # noqa: E402
import readme_tables  # noqa: E402

from art_wdat import cli  # noqa: E402

#: Issue 19's targets on the test images, in points against the start: (metric, least change).
TARGETS = (("wauto@2", 2.0), ("clean", -1.5), ("autoattack@2", -1.0))


def machine() -> str:
    """The provenance line of bench/readme_tables.py (CPU model or GPU, torch threads, versions)."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return readme_tables.provenance(gpu).removeprefix("Machine: ").rstrip(".")


def write_npz(shared: Path, path: Path, n_train: int, n_eval: int) -> None:
    """The fine-tuning set (uint8, as a user's npz would hold it) and the test images."""
    data = np.load(shared / "data" / "cifar10_jpeg.npz")
    train = np.random.default_rng(0).permutation(len(data["y_train"]))[:n_train]
    test = np.random.default_rng(0).permutation(len(data["y_test"]))[:n_eval]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=data["x_train"][train], y_train=data["y_train"][train], x_test=data["x_test"][test],
             y_test=data["y_test"][test])


def finetune(shared: Path, name: str, npz: Path, out: Path, extra: list[str], threads: int) -> float:
    """Run ``art-wdat finetune`` in this process; its wall time."""
    argv = ["finetune", "--model", f"{shared / 'models' / 'zoo.py'}:load:{name}", "--dataset", f"npz:{npz}",
            "--eps", "2/255", "--p", "2", "--out", str(out), "--threads", str(threads), *extra]
    print("$ art-wdat " + " ".join(map(shlex.quote, argv)), flush=True)
    start = time.perf_counter()
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"art-wdat finetune exited with {code}")
    return time.perf_counter() - start


def tuned_model(shared: Path, name: str, checkpoint: Path) -> torch.nn.Module:
    """The zoo's model with the fine-tuned state dict."""
    model = study.load_model(shared, name)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    return model.eval()


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    plan = study.EvalPlan(n=args.n_eval, deltas=study.DELTAS, wpgd=not args.quick, auto_iter=args.auto_iter,
                          aa_iter=args.aa_iter)
    rows = []
    for name in args.model.split(","):
        npz = args.work / f"jpeg_train{args.n_train}_test{args.n_eval}.npz"
        if not npz.is_file():
            write_npz(args.shared, npz, args.n_train, args.n_eval)
        with np.load(npz) as data:
            x_test, y_test = data["x_test"].astype(np.float32) / 255, data["y_test"].astype(np.int64)
        out = args.work / name / "finetuned.pt"
        seconds = finetune(args.shared, name, npz, out, args.extra, args.threads)
        start = study.evaluate_model(study.load_model(args.shared, name), x_test, y_test, plan, "cpu")
        after = study.evaluate_model(tuned_model(args.shared, name, out), x_test, y_test, plan, "cpu")
        # A model file's fine-tune is its state dict plus meta (a checkpoint cannot rebuild code it does not hold).
        extra = torch.load(out, map_location="cpu", weights_only=True)["meta"]["extra"]
        row = {"model": name, "flags": args.extra, "n_train": args.n_train, "n_eval": args.n_eval,
               "recipe": extra["recipe"], "kept_epoch": extra["kept_epoch"], "validation": extra["validation"],
               "finetune_seconds": seconds, "start": start, "after": after, "machine": machine(),
               "plan": {"aa_iter": args.aa_iter, "auto_iter": args.auto_iter}}
        if not args.quick:
            with args.results.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        print(table([row]), flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """Before/after on the test images, change in points, the targets met or not."""
    out = ["| model | flags | kept epoch | fine-tune time | clean | AutoAttack @2/255 | W-AA @1/255 | W-AA @2/255 "
           "| W-AA @4/255 | targets met |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, a = r["start"], r["after"]
        cells = [f"{s[k]:.3f} → {a[k]:.3f} ({100 * (a[k] - s[k]):+.1f})"
                 for k in ("clean", "autoattack@2", "wauto@1", "wauto@2", "wauto@4")]
        met = all(100 * (a[k] - s[k]) >= least - 1e-9 for k, least in TARGETS)
        out.append(f"| {r['model']} | {' '.join(r['flags']) or '(defaults)'} | {r['kept_epoch']} | "
                   f"{r['finetune_seconds'] / 60:.1f} min | " + " | ".join(cells) + f" | {'yes' if met else 'no'} |")
    machines = sorted({r["machine"] for r in rows})
    return "Machine: " + "; ".join(machines) + "\n\n" + "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="folder with models/ and data/")
    ap.add_argument("--model", default="resnet2b,cnn_a_adv")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--aa-iter", type=int, default=None, help="AutoAttack iterations on test (default 100)")
    ap.add_argument("--auto-iter", type=int, default=100, help="W-AutoAttack's W-PGD iterations on test")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "finetune_recipe")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "finetune_recipe.jsonl")
    ap.add_argument("--quick", action="store_true", help="smoke run: 300 images, 50 judged, 1 epoch, few steps")
    ap.add_argument("--table", action="store_true", help="print the results file as Markdown and exit")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more art-wdat finetune flags")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_train, args.n_eval, args.aa_iter, args.auto_iter = 300, 50, 3, 3
        args.extra = [*args.extra, "--epochs", "1", "--max-iter", "1", "--val-iter", "2", "-q"]
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.table:
        rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
        print(table(rows))
        return rows
    if not (args.shared / "models" / "zoo.py").is_file():
        print(f"{args.shared} is absent: nothing to do.")
        return []
    return run(args)


if __name__ == "__main__":
    main()
