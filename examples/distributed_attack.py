"""One distributional budget across processes: every rank attacks its shard, the budget spans the union.

One node with several GPUs (NCCL)::

    torchrun --standalone --nproc_per_node=4 examples/distributed_attack.py --n-samples 10000

CPU only (gloo), e.g. to try it on a laptop::

    torchrun --standalone --nproc_per_node=2 examples/distributed_attack.py --n-samples 400

Without torchrun it runs as a single process, and gives the same x_adv as the ranks together:
Υ, the transport cost, the shrink factor, the budget allocation and the best-iterate decision are
all-reduced across ranks (5 scalar all_reduces per W-PGD iteration, 1 per W-PGD-Budget iteration),
so sharding does not weaken the threat. Rank 0 prints the global accuracy and cost.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from art_wdat import WassersteinDistributionalAttack, distributed
from art_wdat.zoo import SmallCNN, make_classifier


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=400, help="inputs in total, over all ranks")
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    joined = distributed.init_from_env()
    rank = distributed.rank()
    world = torch.distributed.get_world_size() if joined else 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)  # the same weights on every rank
    clf = make_classifier(SmallCNN(3, 10, 32, width=16), (3, 32, 32), 10, device=device)
    n = 32 if args.quick else args.n_samples
    x = np.random.default_rng(0).random((n, 3, 32, 32), dtype=np.float32)
    shard = np.array_split(np.arange(n), world)[rank]  # shards may differ in size
    attack = WassersteinDistributionalAttack(clf, eps=args.eps, p=2, max_iter=2 if args.quick else args.max_iter,
                                             verbose=rank == 0)
    x_adv = attack.generate(x[shard])
    res = attack.last_result_
    if distributed.is_main_process():
        print(f"{world} rank(s), {n} inputs: accuracy {res.accuracy[0]:.3f} -> {res.accuracy[res.best_iteration]:.3f} "
              f"(w.r.t. clean predictions), cost {res.cost:.5f} <= eps {args.eps:.5f}")
    distributed.shutdown()
    return {"shape": x_adv.shape, "cost": res.cost}


if __name__ == "__main__":
    main()
