"""The collectives of the ranks that train one model together under ``torch.distributed``.

Under ``torch.distributed`` a W-TRADES step trains on the global batch, the micro-batches of all ranks at one step
together. The ranks agree on it through the few collectives here: this rank's place in the global batch
(:meth:`RankSync.shard_of`), an equal number of steps (:meth:`RankSync.check_same_batch_count`), one shuffling seed
(:meth:`RankSync.shared_seed`), the first rank's weights after the fine-tuning protocol
(:meth:`RankSync.broadcast_from_first_rank`) and the gradient of the global batch's mean loss
(:meth:`RankSync.backward`). Without ranks each is a no-op (or the identity).
"""

from __future__ import annotations

import torch

from art_wdat.attacks import estimator as est
from art_wdat.core.reduce import ProcessGroupLike, Reducer, default_reducer

#: (offset, global size) of this rank's slice of a global batch; None when not sharded.
Shard = tuple[int, int] | None


def training_group(model: torch.nn.Module, process_group: ProcessGroupLike) -> ProcessGroupLike:
    """The process group the ranks train in: ``process_group``, by default a DDP model's own."""
    if process_group is None and est.is_ddp(model):
        return model.process_group
    return process_group


class RankSync:
    """The ranks' collectives of one trainer, over ``group`` (see :func:`training_group`), on ``device``.

    :param group: The process group; ``None`` the world group when initialised, ``False`` none.
    :param device: Where the collectives' tensors live (NCCL reduces device tensors only): the model's device.
    """

    def __init__(self, group: ProcessGroupLike, device: torch.device) -> None:
        self.group, self.device = group, device

    @property
    def reducer(self) -> Reducer:
        """Sums and maxima over the ranks (the identity without them)."""
        return default_reducer(self.group)

    def world(self) -> tuple[int, int]:
        """(world size, rank) of the process group training together; (1, 0) without one."""
        reducer = self.reducer
        if reducer.world_size == 1:
            return 1, 0
        import torch.distributed as dist

        return reducer.world_size, dist.get_rank(reducer.group)

    def check_same_batch_count(self, nb_batches: int) -> None:
        """Every rank must run as many steps as the others, or the collectives of the longer ranks would hang."""
        if self.world()[0] == 1:
            return
        counts = torch.tensor([nb_batches, -nb_batches], dtype=torch.int64, device=self.device)
        most, fewest = self.reducer.max(counts).tolist()
        if most != -fewest:
            raise ValueError(f"The ranks' generators give between {-fewest} and {most} batches per epoch; every rank "
                             "must run the same number (use a DistributedSampler, or equal `size`/`batch_size`).")

    def shard_of(self, n: int) -> Shard:
        """(offset, global size) of this rank's ``n`` inputs in the step's global batch; None without ranks.

        One all-reduce of a world-sized vector of sizes, read back: the global size weights the gradient, and the
        offset picks this rank's slice of the global batch's start noise.
        """
        world, rank = self.world()
        if world == 1:
            return None
        sizes = torch.zeros(world, dtype=torch.int64, device=self.device)
        sizes[rank] = n
        counts: list[int] = self.reducer.sum(sizes).tolist()
        return sum(counts[:rank]), sum(counts)

    def shared_seed(self, seed: int) -> int:
        """One unseeded shuffling seed for all ranks (the largest), so that their slices of fit's batches tile."""
        if self.world()[0] == 1:
            return seed
        return int(self.reducer.max(torch.tensor([seed], device=self.device)).item())

    def broadcast_from_first_rank(self, module: torch.nn.Module) -> None:
        """Give every rank the first rank's parameters and buffers.

        The fine-tuning protocol draws from each rank's RNG, and the ranks must train one model (DDP only broadcasts
        the weights when it wraps the module).
        """
        if self.world()[0] == 1:
            return
        import torch.distributed as dist

        group = self.reducer.group
        src = 0 if group is None else dist.get_global_rank(group, 0)
        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=src, group=group)

    def backward(self, loss: torch.Tensor, n: int, shard: Shard, model: torch.nn.Module) -> None:
        """Leave the gradient of the global batch's mean loss in every rank's ``.grad``.

        :param loss: This rank's mean loss over its ``n`` inputs.
        :param shard: (offset, global size) of this rank's micro-batch, None when not sharded.
        :param model: The classifier's model: the plain module or its ``DistributedDataParallel`` wrapper.
        """
        if shard is None:
            loss.backward()
            return
        share = n / shard[1]
        if est.is_ddp(model):
            # DDP averages the ranks' gradients with equal weights 1/world; scaling each rank's loss by
            # world·n_rank/n_global makes that average Σ (n_rank/n_global)·∇(rank's mean loss) for unequal slices.
            (loss * (self.world()[0] * share)).backward()
            return
        loss.backward()
        self.average_gradients(model, share)

    def average_gradients(self, model: torch.nn.Module, share: float) -> None:
        """The gradient of the global batch's mean loss: Σ_ranks (n_rank / n_global) · ∇(rank's mean loss)."""
        reducer = self.reducer
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for param in model.parameters():
            if param.grad is not None:
                by_dtype.setdefault(param.grad.dtype, []).append(param.grad)
        for grads in by_dtype.values():
            # One all-reduce of all gradients (as DDP's buckets do), not one per tensor: on gloo each call costs
            # ~0.2 ms of latency whatever its size.
            flat = reducer.sum(torch.cat([g.reshape(-1) for g in grads]) * share)
            for grad, part in zip(grads, flat.split([g.numel() for g in grads])):
                grad.copy_(part.view_as(grad))
