"""Per-epoch trajectory of a fine-tuning schedule on the study's validation split: how the recipe was chosen.

    python bench/recipe_trajectory.py --model resnet2b --epochs 4 --lr 0.002 --tag default4
    python bench/recipe_trajectory.py --model resnet2b --epochs 4 --lr 0.001 --tag lr1e3 --set beta=12
    python bench/recipe_trajectory.py --table

Fine-tunes a shared model (``SHARED/models/zoo.py``) on the first ``--n-train`` (9,000: what ``art-wdat finetune``
trains on when given 10,000 images) of the JPEG CIFAR-10 training set shuffled with ``default_rng(0)``, with SGD
(momentum 0.9) at ``--lr`` and cosine decay over ``--epochs``, batch 128, 5 inner steps and the trainer's defaults
(``--set key=value`` changes a trainer keyword), and measures the start and every epoch on the study's validation
split (the last 1,000 images of that order, never trained on, never a test image) with ``bench/finetune_study.py``'s
light plan: clean, AutoAttack (custom, 20 iterations) at 2/255, W-AutoAttack (20 W-PGD iterations) at δ = 2/255,
p = 2, ℓ∞. One JSON line per epoch goes to ``--results``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import finetune_study as study  # noqa: E402

#: The trainer keywords every run starts from (the table shows only what a run changed; budgets in /255).
DEFAULTS = {"eps": 2 / 255, "beta": 6.0, "max_iter": 5}


def trajectory(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    x_tr, y_tr, x_val, y_val = study.load_data(args.shared, args.n_train, 1000, "val", 1000)
    plan = study.EvalPlan(n=1000, deltas=(2 / 255,), wpgd=False, auto_iter=20, aa_iter=20)
    model = study.load_model(args.shared, args.model)
    kwargs = {**DEFAULTS, **study.parse_set(args.set)}
    rows: list[dict] = []

    def log(epoch: int, seconds: dict) -> None:
        start = time.perf_counter()
        metrics = study.evaluate_model(model, x_val, y_val, plan, "cpu")
        row = {"model": args.model, "tag": args.tag, "epoch": epoch, "epochs": args.epochs, "lr": args.lr,
               "n_train": args.n_train, "trainer_kwargs": kwargs, **metrics, **seconds,
               "eval_s": time.perf_counter() - start, "machine": study.machine(), "threads": torch.get_num_threads()}
        rows.append(row)
        with args.results.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print({k: row[k] for k in ("epoch", "clean", "autoattack@2", "wauto@2")}, flush=True)

    log(0, {})
    study.seed_everything(0)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    trainer = study.WassersteinTRADESTrainer(study.classifier_of(model, "cpu", opt), **kwargs)
    trainer.fit(x_tr, y_tr, batch_size=128, nb_epochs=args.epochs, scheduler=sched, seed=0, verbose=False,
                callback=lambda epoch, rec: log(epoch + 1, {"train_s": rec["time_s"]}))
    return rows


def table(path: Path) -> str:
    """Each run's epochs as changes from its start, in points."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs: dict[tuple, list[dict]] = {}
    for r in rows:
        runs.setdefault((r["model"], r["tag"]), []).append(r)
    out = ["| model | run | lr, epochs | trainer keywords | epoch: W-AA@2 / AA@2 / clean, change from the start |",
           "|---|---|---|---|---|"]
    for (model, tag), rs in runs.items():
        start = next(r for r in rs if r["epoch"] == 0)
        kw = {k: round(v * 255, 3) if "eps" in k else v for k, v in rs[-1]["trainer_kwargs"].items()
              if k not in DEFAULTS or not np.isclose(v, DEFAULTS[k])}
        cells = "; ".join(f"{r['epoch']}: {100 * (r['wauto@2'] - start['wauto@2']):+.1f} / "
                          f"{100 * (r['autoattack@2'] - start['autoattack@2']):+.1f} / "
                          f"{100 * (r['clean'] - start['clean']):+.1f}" for r in rs if r["epoch"] > 0)
        out.append(f"| {model} | {tag} | {rs[-1]['lr']}, {rs[-1]['epochs']} | {kw} | {cells} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--model", default="resnet2b")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--n-train", type=int, default=9000)
    ap.add_argument("--set", nargs="*", default=[], help="trainer keyword overrides key=value (JSON values)")
    ap.add_argument("--tag", default="run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "recipe_trajectories.jsonl")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.results))
        return []
    return trajectory(args)


if __name__ == "__main__":
    main()
