"""What the held-out selection of ``art-wdat finetune`` costs against its training, and the epoch it keeps (issue 25).

    python bench/heldout_cost.py --model resnet2b          # the check: 10,000 images, the CLI's defaults
    python bench/heldout_cost.py --table                   # the results file as Markdown
    python bench/heldout_cost.py --quick                   # smoke run (seconds)

One fine-tune with the defaults of ``art-wdat finetune --eps 2/255 --p 2`` (the recipe, its held-out split of 1,000
of the first ``--n-train`` shuffled JPEG CIFAR-10 training images, seed 0), trained once without measuring (the
training does not depend on the measurement: the judge puts the RNG states back), with each epoch's weights kept.
Then the start and every epoch are measured on the held-out split by each judge below, and the selection rule picks
an epoch for each; every judge sees the same weights, so the kept epochs compare judges on the same run.

* ``old``: the judge before issue 25: AutoAttack (the package's APGD-CE + APGD-T, 20 iterations) at ε, W-AutoAttack
  at δ/2, δ, 2δ with its default flip-cost solvers, not refined near the thresholds (20 W-PGD iterations);
* ``min-norm``: the default judge after: W-AutoAttack with the flip costs refined once near the thresholds of its
  budgets and of ε, and the pointwise row read from those costs;
* the judges of ``--judges`` (``name=min_norm[:delta]``, e.g. ``fmn=fmn`` or ``fmn-delta=fmn:delta``: the FMN solver
  alone, W-AutoAttack at δ only).

One JSON line per run goes to ``--results``: the training's wall time, each judge's per-epoch records and seconds,
the held-out share of a fine-tune with it, the kept epoch, and the machine. ``--test-epochs 2,3`` also judges those
epochs' weights on the first ``--n-eval`` test images of ``default_rng(0).permutation(10000)`` with the study's
W-AutoAttack (δ = 1, 2, 4 /255, p = 2, ℓ∞, 100 W-PGD iterations), to tell apart two judges that keep different
epochs (``--test-epochs kept``: the epochs the judges keep); ``--skip-judges`` runs that alone. The epochs' weights
are saved in ``--work`` (with a digest each, in the row) and reused by a later run of the same settings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import finetune_recipe  # noqa: E402
import finetune_study as study  # noqa: E402

from art_wdat.attacks.wasserstein import WassersteinDistributionalAttack  # noqa: E402
from art_wdat.training.checkpoint import seed_everything  # noqa: E402
from art_wdat.training.judge import HeldOutJudge, HeldOutPlan  # noqa: E402
from art_wdat.training.recipe import DEFAULT_RECIPE, held_out_size, split_held_out  # noqa: E402
from art_wdat.training.selection import WAUTO, Selection, Tolerances  # noqa: E402
from art_wdat.training.trainer import WassersteinTRADESTrainer  # noqa: E402
from art_wdat.zoo import make_classifier  # noqa: E402
from art_wdat.zoo.data import load_npz  # noqa: E402

EPS = 2 / 255


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, recipe, eval_iter: int) -> tuple[dict, dict]:
    """The CLI's fine-tune without measuring: ({"wall", "cpu"} seconds, {epoch: CPU weights}), epoch 0 the start.

    CPU seconds (this process's, one torch thread) are the fair measure on a machine shared with other jobs."""
    clf = make_classifier(model, (3, 32, 32), 10, clip_values=(0.0, 1.0), device="cpu", lr=recipe.lr)
    trainer = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, eval_max_iter=eval_iter)
    snapshots = {0: {k: v.detach().clone() for k, v in model.state_dict().items()}}

    def keep(epoch: int, record: dict) -> None:
        snapshots[epoch + 1] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(x, y, recipe=recipe, seed=0, verbose=False, callback=keep)  # a state dict's copy: microseconds
    return {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}, snapshots


def weights_digest(state: dict) -> str:
    """A digest of a state dict's values (two runs trained the same weights iff their digests agree)."""
    digest = hashlib.sha1()
    for value in state.values():
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def measure_all(model: torch.nn.Module, snapshots: dict, xv: np.ndarray, yv: np.ndarray, plan: HeldOutPlan
                ) -> tuple[list[dict], list[dict], list[tuple[np.ndarray | None, np.ndarray]]]:
    """Each epoch's record, seconds, and flip costs with the inputs classified correctly, under ``plan``."""
    clf = make_classifier(model, (3, 32, 32), 10, clip_values=(0.0, 1.0), device="cpu")
    judge = HeldOutJudge(clf, xv, yv, plan)
    records, seconds, costs = [], [], []
    for epoch in sorted(snapshots):
        model.load_state_dict(snapshots[epoch])
        cpu = time.process_time()
        records.append(judge.measure())
        seconds.append({**judge.last_seconds, "cpu": time.process_time() - cpu})
        costs.append((judge.last_flip_costs, clf.predict(xv, batch_size=256).argmax(axis=1) == yv))
        print(f"  epoch {epoch}: {records[-1]} in {seconds[-1]['total']:.1f} s", flush=True)
    return records, seconds, costs


def kept_epoch(records: list[dict]) -> int:
    """The selection rule on records[0] (the start) and the epochs after it, default tolerances."""
    selection = Selection(start=records[0], tolerances=Tolerances())
    for epoch, record in enumerate(records[1:], start=1):
        selection.offer(epoch, record)
    return int(selection.kept_epoch)


def summary(name: str, records: list[dict], seconds: list[dict], train_s: dict) -> dict:
    """A judge's records and cost: wall and CPU seconds, and its share of a fine-tune (training + measuring)."""
    wall, cpu = (float(sum(s[k] for s in seconds)) for k in ("total", "cpu"))
    return {"judge": name, "records": records, "seconds": seconds, "heldout_s": wall, "heldout_cpu_s": cpu,
            "heldout_share": wall / (wall + train_s["wall"]), "heldout_cpu_share": cpu / (cpu + train_s["cpu"]),
            "kept_epoch": kept_epoch(records)}


def run_judges(args: argparse.Namespace, model: torch.nn.Module, snapshots: dict, xv: np.ndarray, yv: np.ndarray,
               train_s: dict) -> list[dict]:
    """The judge before issue 25 ("old"), the default one after ("min-norm") and those of ``--judges``."""
    base = dict(eps=EPS, p=2.0, norm=float("inf"), pointwise_eps=EPS, budgets=(EPS / 2, EPS, 2 * EPS),
                aa_iter=args.val_iter, auto_iter=args.val_iter)
    # Before: AutoAttack's APGD-CE + APGD-T for the pointwise row, and W-AutoAttack's flip costs as they were then,
    # not refined near the thresholds (the refinement came with issue 26).
    plans = {"old": HeldOutPlan(**base, pointwise="autoattack", refine=False), "min-norm": HeldOutPlan(**base)}
    for spec in args.judges:
        name, _, rest = spec.partition("=")
        solver, _, budgets = rest.partition(":")
        plans[name] = HeldOutPlan(**{**base, **({"budgets": (EPS,)} if budgets == "delta" else {})},
                                  min_norm=solver or None)
    judges = []
    for name, plan in plans.items():
        print(f"judge {name}", flush=True)
        records, secs, _ = measure_all(model, snapshots, xv, yv, plan)
        judges.append(summary(name, records, secs, train_s))
    return judges


def wauto_on_test(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, plan) -> dict:
    """The study's W-AutoAttack on test images at each δ (clean too), seeded as the study seeds it."""
    clf = study.classifier_of(model, "cpu")
    out = {"clean": study.accuracy(clf, x, y)}
    wauto = WassersteinDistributionalAttack(clf, eps=plan.deltas[0], p=2, norm=np.inf, method="auto",
                                            max_iter=plan.auto_iter, loss="redlr", batch_size=plan.batch_size,
                                            verbose=False)
    for delta in plan.deltas:  # one flip-cost pass for every δ
        wauto.set_params(eps=delta)
        seed_everything(0)
        out[f"wauto@{delta * 255:g}"] = study.accuracy(clf, wauto.generate(x, y), y)
    return out


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    npz = args.work / f"jpeg_train{args.n_train}_test{args.n_eval}.npz"
    if not npz.is_file():
        finetune_recipe.write_npz(args.shared, npz, args.n_train, args.n_eval)
    x, y, _, _ = load_npz(npz)
    (x_tr, y_tr), (xv, yv) = split_held_out(x, y, held_out_size(len(x)))
    recipe = args.recipe
    model = study.load_model(args.shared, args.model)
    saved = args.work / f"{args.model}_train{args.n_train}_{'_'.join(map(str, recipe.to_dict().values()))}.pt"
    if saved.is_file() and not args.quick:
        train_s, snapshots = torch.load(saved, weights_only=True).values()
        print(f"weights of the epochs from {saved}", flush=True)
    else:
        train_s, snapshots = train(model, x_tr, y_tr, recipe, args.val_iter)
        if not args.quick:
            torch.save({"train_s": train_s, "snapshots": snapshots}, saved)
    print(f"training: {train_s} s for {recipe.epochs} epochs on {len(x_tr)} images", flush=True)
    judges = [] if args.skip_judges else run_judges(args, model, snapshots, xv, yv, train_s)
    test = {}
    epochs = sorted({j["kept_epoch"] for j in judges}) if args.test_epochs == "kept" else args.test_epochs
    if epochs:
        _, _, x_test, y_test = load_npz(npz)
        plan = study.EvalPlan(n=len(x_test), deltas=study.DELTAS, wpgd=False, auto_iter=100)
        for epoch in epochs:
            model.load_state_dict(snapshots[epoch])
            test[epoch] = wauto_on_test(model, x_test, y_test, plan)
            print(f"test, epoch {epoch}: {test[epoch]}", flush=True)
    row = {"model": args.model, "n_train": len(x_tr), "n_val": len(xv), "recipe": recipe.to_dict(),
           "train_s": train_s, "judges": judges, "test": test, "machine": finetune_recipe.machine(),
           "weights_sha1": {e: weights_digest(w) for e, w in snapshots.items()}}
    if not args.quick:
        with args.results.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    print(table([row]), flush=True)
    return row


def table(rows: list[dict]) -> str:
    out = ["| run | model | judge | training, CPU s (wall) | held-out, every measurement, CPU s (wall) | "
           "held-out share of the fine-tune, CPU (wall) | kept epoch | W-AutoAttack @δ of the kept epoch (old judge) |",
           "|---|---|---|---|---|---|---|---|"]
    for run, r in ((i, r) for i, r in enumerate(rows, 1) if r["judges"]):
        old = {j["judge"]: j for j in r["judges"]}["old"]["records"]
        t = r["train_s"]
        for j in r["judges"]:
            out.append(f"| {run} | {r['model']} | {j['judge']} | {t['cpu']:.0f} ({t['wall']:.0f}) | "
                       f"{j['heldout_cpu_s']:.0f} ({j['heldout_s']:.0f}) | {100 * j['heldout_cpu_share']:.0f}% "
                       f"({100 * j['heldout_share']:.0f}%) | {j['kept_epoch']} | {old[j['kept_epoch']][WAUTO]:.3f} |")
    tested = [(i, r, e, t) for i, r in enumerate(rows, 1) for e, t in r.get("test", {}).items()]
    if tested:
        out += ["", "| run | model | epoch | test clean | W-AutoAttack @1/255 | @2/255 | @4/255 |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {i} | {r['model']} | {e} | {t['clean']:.3f} | {t['wauto@1']:.3f} | {t['wauto@2']:.3f} | "
                f"{t['wauto@4']:.3f} |" for i, r, e, t in tested]
    return "Machine: " + "; ".join(sorted({r["machine"] for r in rows})) + "\n\n" + "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="folder with models/ and data/")
    ap.add_argument("--model", default="resnet2b")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-iter", type=int, default=20)
    ap.add_argument("--judges", default="", help="more judges, name=min_norm[:delta] (delta: W-AutoAttack at δ "
                                                  "only), comma-separated, e.g. fmn=fmn,fmn-delta=fmn:delta")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "finetune_recipe")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "heldout_cost.jsonl")
    ap.add_argument("--test-epochs", default="", help="also judge these epochs (e.g. 2,3) on test images")
    ap.add_argument("--skip-judges", action="store_true", help="no held-out judges (with --test-epochs)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 300 images, 1 epoch, few steps")
    ap.add_argument("--table", action="store_true", help="print the results file as Markdown and exit")
    args = ap.parse_args(argv)
    args.judges = [j for j in args.judges.split(",") if j]
    args.test_epochs = args.test_epochs if args.test_epochs == "kept" else [
        int(e) for e in args.test_epochs.split(",") if e]
    args.recipe = DEFAULT_RECIPE
    if args.quick:
        args.n_train, args.n_eval, args.val_iter, args.judges = 300, 50, 2, ["fmn=fmn:delta"]
        args.recipe = type(DEFAULT_RECIPE)(epochs=1, max_iter=1, batch_size=64)
    return args


def main(argv: list[str] | None = None) -> dict | list[dict]:
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
