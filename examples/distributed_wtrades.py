"""W-TRADES across processes: a DistributedDataParallel model, a DistributedSampler, one budget per global batch.

One node with several GPUs (NCCL)::

    torchrun --standalone --nproc_per_node=4 examples/distributed_wtrades.py --epochs 5

CPU only (gloo)::

    torchrun --standalone --nproc_per_node=2 examples/distributed_wtrades.py

Each rank reads its own micro-batches (``--batch-size`` of them) through a ``DistributedSampler``; the
micro-batches of all ranks at one step form the global batch, which is the distribution of the inner
maximisation (one W_2 budget shared across ranks) and of the gradient that DDP averages. Without torchrun
the script trains one process on the plain model. Rank 0 prints the history and writes the checkpoint.
The same evaluation and fine-tuning run from the command line::

    torchrun --standalone --nproc_per_node=4 -m art_wdat evaluate --model rb:Carmon2019Unlabeled \\
        --dataset cifar10 --device cuda --out report
    torchrun --standalone --nproc_per_node=4 -m art_wdat finetune --model rb:Carmon2019Unlabeled \\
        --dataset cifar10 --device cuda --out tuned.pt
"""

from __future__ import annotations

import argparse

import torch
from art.data_generators import PyTorchDataGenerator
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from art_wdat import WassersteinTRADESTrainer, distributed
from art_wdat.cli.threads import add_threads_argument, set_threads
from art_wdat.zoo import SmallCNN, make_classifier
from art_wdat.zoo.data import load_digits_split


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32, help="micro-batch per rank")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--out", default=None, help="checkpoint folder (rank 0 writes)")
    parser.add_argument("--quick", action="store_true")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with distributed.launched(distributed.backend_for(device)) as (world, rank):
        x, y, _, _ = load_digits_split()
        if args.quick:
            x, y = x[:96], y[:96]
        torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        module = SmallCNN(1, 10, 8, width=8).to(device)
        model = module if world == 1 else torch.nn.parallel.DistributedDataParallel(module)
        clf = make_classifier(model, (1, 8, 8), 10, device=device,
                              optimizer=torch.optim.Adam(model.parameters(), lr=3e-3))
        dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)
        trainer = WassersteinTRADESTrainer(clf, eps=args.eps, p=2, max_iter=2 if args.quick else 10)
        history = trainer.fit_generator(PyTorchDataGenerator(loader, size=len(sampler), batch_size=args.batch_size),
                                        nb_epochs=1 if args.quick else args.epochs, seed=0,
                                        checkpoint_dir=args.out, verbose=rank == 0)
        if rank == 0:
            for record in history:
                print(f"{world} rank(s), epoch {record['epoch']}: loss {record['loss']:.4f}, "
                      f"train clean {record['train_clean_acc']:.3f}, train W-PGD {record['train_robust_acc']:.3f}")
    return history


if __name__ == "__main__":
    main()
