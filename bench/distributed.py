"""Cost of the cross-rank reductions of one W-PGD iteration, on gloo (CPU), two processes.

    python bench/distributed.py [--iters 10] [--world 2]

Counts the all_reduce calls and bytes per iteration of a real attack (each rank holds a shard), times
a scalar all_reduce on this machine, and prints both, so the per-iteration cost of treating every
rank's inputs as one distribution can be set beside the forward/backward work it rides on. Also counts
the reductions of one W-TRADES step (inner W-PGD plus the gradient all-reduce DDP would do) and the
fixed overhead of a distributed ``evaluate`` on top of its attacks' iterations.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_tables import provenance  # noqa: E402  (bench/readme_tables.py: machine, threads and versions)


def _worker(rank: int, world: int, rendezvous: str, iters: int, out: str) -> None:
    import torch.distributed as dist

    from art_wdat import WassersteinDistributionalAttack
    from art_wdat.core import reduce
    from art_wdat.zoo import SmallCNN, make_classifier

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    calls = {"n": 0, "bytes": 0}
    for name in ("sum", "max"):
        original = getattr(reduce.GroupReducer, name)

        def counted(self, t, _original=original):
            calls["n"] += 1
            calls["bytes"] += t.numel() * t.element_size()
            return _original(self, t)

        setattr(reduce.GroupReducer, name, counted)
    torch.manual_seed(0)
    clf = make_classifier(SmallCNN(3, 10, 32, width=8), (3, 32, 32), 10)
    x = np.random.default_rng(rank).random((64, 3, 32, 32), dtype=np.float32)
    counts = {}
    for method in ("wpgd", "budget"):
        for t in (iters, 2 * iters):
            calls.update(n=0, bytes=0)
            WassersteinDistributionalAttack(clf, eps=8 / 255, p=2, method=method, max_iter=t, batch_size=64,
                                            verbose=False).generate(x)
            counts[method, t] = dict(calls)
    extra = _trainer_and_evaluate(clf, x, iters, calls)
    scalar = torch.zeros((), dtype=torch.float64)
    for _ in range(50):
        dist.all_reduce(scalar)
    t0 = time.perf_counter()
    for _ in range(1000):
        dist.all_reduce(scalar)
    us = (time.perf_counter() - t0) * 1e3
    if rank == 0:
        per_iter = {m: {k: (counts[m, 2 * iters][k] - counts[m, iters][k]) / iters for k in ("n", "bytes")}
                    for m in ("wpgd", "budget")}
        extra["evaluate_overhead"] = {k: extra["evaluate"][k] - iters * per_iter["wpgd"][k] for k in ("n", "bytes")}
        with open(out, "w") as f:
            json.dump({"per_iteration": per_iter, "us_per_scalar_all_reduce": us, "world": world, **extra}, f)
    dist.destroy_process_group()


def _trainer_and_evaluate(clf, x: np.ndarray, iters: int, calls: dict) -> dict:
    """Reductions of one W-TRADES step on a global batch and of one distributed ``evaluate`` (W-PGD only)."""
    from art_wdat import WassersteinTRADESTrainer
    from art_wdat.evaluation import EvaluationSettings, evaluate

    y = np.arange(len(x)) % 10
    out = {"param_bytes": sum(p.numel() * p.element_size() for p in clf.model.parameters())}
    trainer = WassersteinTRADESTrainer(clf, eps=8 / 255, p=2, max_iter=iters, method="wpgd", inner_loss="rekl",
                                       pointwise_beta=0.0)  # the configuration of the README's scale-out numbers
    calls.update(n=0, bytes=0)
    trainer.fit(x, y, batch_size=len(x), nb_epochs=1, seed=0, verbose=False)  # one step: one global batch
    out["trainer_step"] = dict(calls)
    calls.update(n=0, bytes=0)
    settings = EvaluationSettings(max_iter=iters, batch_size=len(x))
    evaluate(clf, x, y, [8 / 255], p=2, attacks=("wpgd",), settings=settings)
    out["evaluate"] = dict(calls)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--world", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(r, args.world, f"{tmp}/rdv", args.iters, f"{tmp}/out.json"))
                 for r in range(args.world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        with open(f"{tmp}/out.json") as f:
            result = json.load(f)
    us = result["us_per_scalar_all_reduce"]
    print(provenance(threads=torch.get_num_threads()))
    print(f"gloo, {args.world} processes on this machine: {us:.1f} µs per scalar all_reduce")
    print("| method | all_reduce calls / iteration | bytes / iteration | gloo µs / iteration (est.) |")
    print("|---|---|---|---|")
    for method, v in result["per_iteration"].items():
        print(f"| {method} | {v['n']:.1f} | {v['bytes']:.0f} | {v['n'] * us:.0f} |")
    step, over = result["trainer_step"], result["evaluate_overhead"]
    print(f"W-TRADES step ({args.iters} inner iterations, plain module): {step['n']} all_reduces, "
          f"{step['bytes']} bytes "
          f"(of which the gradients: {result['param_bytes']} bytes, as DDP would all-reduce them)")
    print(f"evaluate (W-PGD only, one budget) beyond the attack's iterations: {over['n']:.0f} all_reduces, "
          f"{over['bytes']:.0f} bytes")
    return result


if __name__ == "__main__":
    main()
