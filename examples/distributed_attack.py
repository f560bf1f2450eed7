"""One distributional budget across processes: every rank attacks its shard, the budget spans the union.

One node with several GPUs (NCCL)::

    torchrun --standalone --nproc_per_node=4 examples/distributed_attack.py

CPU only (gloo), e.g. to try it on a laptop::

    torchrun --standalone --nproc_per_node=2 examples/distributed_attack.py --threads 1

Without torchrun it runs as a single process, and gives the same x_adv as the ranks together:
Υ, the transport cost, the shrink factor, the budget allocation and the best-iterate decision are
all-reduced across ranks (5 scalar all_reduces per W-PGD iteration, 1 per W-PGD-Budget iteration),
so sharding does not weaken the threat. Every rank trains the same small CNN on scikit-learn's digits (offline,
seeded), and attacks its shard of the test digits; rank 0 prints the global accuracy and cost.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from art_wdat import WassersteinDistributionalAttack, distributed
from art_wdat.cli.threads import add_threads_argument, set_threads
from art_wdat.zoo import SmallCNN, make_classifier
from art_wdat.zoo.data import load_digits_split


def trained_classifier(device: str, epochs: int):
    """A SmallCNN trained plainly on the digits' training split, seeded: the same weights on every rank.

    An untrained model predicts one class with wide margins, and no small budget changes that ("accuracy 1.000 ->
    1.000"); a trained one has inputs near its decision boundaries, so the attack has something to do.
    """
    x_train, y_train, _, _ = load_digits_split()
    torch.manual_seed(0)
    np.random.seed(0)  # ART's fit shuffles with numpy
    clf = make_classifier(SmallCNN(1, 10, 8, width=16), (1, 8, 8), 10, device=device, lr=3e-3)
    clf.fit(x_train, y_train, batch_size=64, nb_epochs=epochs, verbose=False)
    return clf


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=400, help="test digits in total, over all ranks")
    parser.add_argument("--eps", type=float, default=0.1, help="W_2 budget over the ground ℓ∞ norm")
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10, help="plain training epochs of the attacked model")
    parser.add_argument("--quick", action="store_true", help="64 inputs, 3 epochs, 3 iterations (for tests)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    joined = distributed.init_from_env()
    rank = distributed.rank()
    world = torch.distributed.get_world_size() if joined else 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    clf = trained_classifier(device, 3 if args.quick else args.epochs)
    _, _, x, y = load_digits_split()
    n = min(64 if args.quick else args.n_samples, len(x))
    x, y = x[:n], y[:n]
    shard = np.array_split(np.arange(n), world)[rank]  # shards may differ in size
    attack = WassersteinDistributionalAttack(clf, eps=args.eps, p=2, max_iter=3 if args.quick else args.max_iter,
                                             verbose=rank == 0)
    x_adv = attack.generate(x[shard], y[shard])
    res = attack.last_result_
    if distributed.is_main_process():
        print(f"{world} rank(s), {n} test digits: accuracy {res.accuracy[0]:.3f} -> "
              f"{res.accuracy[res.best_iteration]:.3f}, cost {res.cost:.5f} <= eps {args.eps:.5f}")
    distributed.shutdown()
    return {"shape": x_adv.shape, "cost": res.cost, "clean": float(res.accuracy[0]),
            "robust": float(res.accuracy[res.best_iteration])}


if __name__ == "__main__":
    main()
