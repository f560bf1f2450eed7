"""W-TRADES with a DistributedDataParallel model and per-rank data: 2 gloo ranks must train as one process does.

One spawn runs every job on both ranks (a module fixture); each test checks one job against a single process
that trains the plain model on the corresponding global batches. The start noise of the inner maximisation is on:
every rank draws the global batch's noise from the same seeded RNG and keeps its slice, so the equalities also
check that each rank knows its offset in the global batch. Every DataLoader has its own
``generator`` so that making an iterator does not draw from the global RNG the noise comes from: the single process
reads its global batches from one list, without the ranks' per-epoch restarts.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from art_wdat.training.checkpoint import LAST, load_checkpoint
from tests.ranks import errors, spawn

WORLD = 2
N = 27  # odd: fit's last global batch (11) splits 6/5, so DDP's equal average needs the loss scaling
PER_RANK = 8  # micro-batch size; the global batch is 16
SAMPLER_SEED = 5
EPOCHS = 2  # the sampler job's second epoch checks DistributedSampler.set_epoch
STEPS = 1  # the sampler job's epochs: 1 of the loader's 2 micro-batches, so each epoch must restart the loader
UNEQUAL = (15, 12)  # the per-rank shards of the unequal generator job: last micro-batches 7 and 4


def _module(tmp: str | Path) -> torch.nn.Module:
    """The pretrained SmallCNN: at initialisation the logits hardly depend on the input, and neither the KL term
    nor the inner maximisation (whose shared budget the tests check) would move the weights by more than 1e-5."""
    from art_wdat.zoo import SmallCNN

    module = SmallCNN(1, 10, 8, width=8)
    module.load_state_dict(torch.load(Path(tmp) / "pretrained.pt", weights_only=True))
    return module


def _pretrain(path: Path) -> None:
    """A few epochs of plain cross-entropy on digits the tests do not train on (under a second)."""
    from art_wdat.zoo import SmallCNN

    d = load_digits()
    x = torch.from_numpy((d.images[N:N + 640] / 16.0).astype(np.float32)[:, None])
    y = torch.from_numpy(d.target[N:N + 640].astype(np.int64))
    torch.manual_seed(0)
    module = SmallCNN(1, 10, 8, width=8)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(8):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(x[i:i + 64]), y[i:i + 64]).backward()
            optimizer.step()
    torch.save(module.state_dict(), path)


def _classifier(model: torch.nn.Module, params):
    from art_wdat.zoo import make_classifier

    return make_classifier(model, (1, 8, 8), 10, optimizer=torch.optim.SGD(params, lr=0.02, momentum=0.9))


def _trainer(clf, **kwargs):
    from art_wdat.training.trainer import WassersteinTRADESTrainer

    # The KL everywhere (ReKL's mask would switch off inputs the pretrained model already gets wrong) and a start
    # noise well above rounding: ∇KL vanishes at x, so with TRADES' 0.001 the first ascent direction is set by
    # gradients so small that the ranks' and the single process's float rounding (1e-8 in the weights after one
    # step) would move the next inner maximiser by 1e-5.
    return WassersteinTRADESTrainer(clf, eps=0.2, p=2, norm=2, max_iter=3, inner_loss="kl", kl_start_std=0.05,
                                    **kwargs)


def _ddp_classifier(tmp: str, **kwargs):
    from torch.nn.parallel import DistributedDataParallel

    module = _module(tmp)
    return _classifier(DistributedDataParallel(module, **kwargs), module.parameters()), module


def _weights(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _generator(dataset, size: int, nominal_batch: int, **loader_kwargs):
    """ART's wrapper of ``DataLoader(dataset, **loader_kwargs)``: epochs of ``ceil(size / nominal_batch)`` batches."""
    from art.data_generators import PyTorchDataGenerator
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, generator=torch.Generator(), **loader_kwargs)
    return PyTorchDataGenerator(loader, size=size, batch_size=nominal_batch)


def _sampler_order(epoch: int) -> list[list[int]]:
    """Each rank's indices under DistributedSampler(shuffle=True, seed=SAMPLER_SEED) in ``epoch``: pad, interleave."""
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(SAMPLER_SEED + epoch)).tolist()
    padded = perm + perm[:math.ceil(N / WORLD) * WORLD - N]
    return [padded[r::WORLD] for r in range(WORLD)]


def _chunks(idx: list[int], size: int) -> list[list[int]]:
    return [idx[i:i + size] for i in range(0, len(idx), size)]


def _unequal_shards() -> list[list[list[int]]]:
    """Each rank's micro-batches of the unequal job: rank 0 the first inputs, rank 1 the others."""
    bounds = np.cumsum((0, *UNEQUAL))
    return [_chunks(list(range(bounds[r], bounds[r + 1])), PER_RANK) for r in range(WORLD)]


def _global_batches(per_rank: list[list[list[int]]]) -> list[list[int]]:
    """Step k's global batch: the ranks' k-th micro-batches, in rank order."""
    return [sum(step, []) for step in zip(*per_rank)]


# -- what each rank runs --------------------------------------------------------------------------------------
def _error_of(call) -> str:
    """What ``call()`` raised ("" if nothing); the ranks raise at the same point, so none waits on the other."""
    try:
        call()
    except (ValueError, RuntimeError) as err:
        return str(err)
    return ""


def _fit_job(rank: int, tmp: str, x, y) -> dict:
    clf, module = _ddp_classifier(tmp)
    calls = []
    clf.model.register_forward_pre_hook(lambda *_: calls.append(1))
    trainer = _trainer(clf)
    trainer.fit(x, y, batch_size=PER_RANK, nb_epochs=1, seed=3, checkpoint_dir=f"{tmp}/ckpt", verbose=False)
    out = {"weights": _weights(module), "loss": trainer.history[-1]["loss"], "ddp_forwards": len(calls)}
    torch.distributed.barrier()  # rank 0's checkpoint is written
    resumed, resumed_module = _ddp_classifier(tmp)
    with torch.no_grad():
        for p in resumed_module.parameters():
            p.zero_()
    out["resume_error"] = _error_of(lambda: _trainer(resumed).fit(
        x, y, batch_size=PER_RANK, nb_epochs=1, resume=True, checkpoint_dir=f"{tmp}/ckpt", verbose=False))
    out["resumed"] = _weights(resumed_module)
    return out


def _sampler_job(rank: int, tmp: str, x, y) -> dict:
    from torch.utils.data import DistributedSampler, TensorDataset

    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    sampler = DistributedSampler(dataset, num_replicas=WORLD, rank=rank, shuffle=True, seed=SAMPLER_SEED)
    clf, module = _ddp_classifier(tmp)
    trainer = _trainer(clf)
    trainer.fit_generator(_generator(dataset, STEPS * PER_RANK, PER_RANK, batch_size=PER_RANK, sampler=sampler),
                          nb_epochs=EPOCHS, seed=3, verbose=False)
    return {"weights": _weights(module), "loss": trainer.history[-1]["loss"]}


def _unequal_job(rank: int, tmp: str, x, y) -> dict:
    from torch.utils.data import TensorDataset

    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    clf, module = _ddp_classifier(tmp)
    trainer = _trainer(clf)
    gen = _generator(dataset, UNEQUAL[rank], PER_RANK, batch_sampler=_unequal_shards()[rank])
    trainer.fit_generator(gen, nb_epochs=1, seed=3, verbose=False)
    out = {"weights": _weights(module), "loss": trainer.history[-1]["loss"]}
    # Two batches per epoch on rank 0, one on rank 1: refused on both, instead of rank 0 waiting for ever.
    gen = _generator(dataset, PER_RANK * (WORLD - rank), PER_RANK, batch_size=PER_RANK)
    out["count_error"] = _error_of(lambda: trainer.fit_generator(gen, nb_epochs=1, verbose=False))
    return out


def _finetune_job(rank: int, tmp: str, x, y) -> dict:
    clf, module = _ddp_classifier(tmp)
    torch.manual_seed(100 + rank)  # no common seed: each rank would perturb and shuffle differently
    trainer = _trainer(clf, finetune="perturb", weight_noise=0.5)
    trainer.fit(x[:16], y[:16], batch_size=PER_RANK, nb_epochs=1, verbose=False)
    out = {"weights": _weights(module), "shuffle_state": trainer._generator.get_state()}
    clf, _ = _ddp_classifier(tmp)
    out["freeze_error"] = _error_of(lambda: _trainer(clf, freeze_except_last=1).fit(
        x[:16], y[:16], batch_size=PER_RANK, nb_epochs=1, seed=3, verbose=False))
    out["sensitivity_error"] = _error_of(lambda: _trainer(clf, sensitivity_weight=1.0).fit(
        x[:16], y[:16], batch_size=PER_RANK, nb_epochs=1, seed=3, verbose=False))
    return out


def _jobs(rank: int, world: int, tmp: str) -> None:
    data = np.load(f"{tmp}/data.npz")
    x, y = data["x"], data["y"]
    out = {"fit": _fit_job(rank, tmp, x, y), "sampler": _sampler_job(rank, tmp, x, y),
           "unequal": _unequal_job(rank, tmp, x, y), "finetune": _finetune_job(rank, tmp, x, y)}
    torch.save(out, f"{tmp}/rank{rank}.pt")


# -- the parent -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    d = load_digits()
    x = (d.images[:N] / 16.0).astype(np.float32)[:, None]
    return x, d.target[:N].astype(np.int64)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("ddp")
    np.savez(tmp / "data.npz", x=data[0], y=data[1])
    _pretrain(tmp / "pretrained.pt")
    assert spawn(_jobs, WORLD, tmp) == [True] * WORLD, errors(tmp, WORLD)
    return tmp, [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _single_generator(tmp: Path, x, y, batches: list[list[list[int]]], size: int):
    """One process, plain model, trained with fit_generator on the global batches of each epoch, in order."""
    from torch.utils.data import TensorDataset

    module = _module(tmp)
    trainer = _trainer(_classifier(module, module.parameters()))
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    trainer.fit_generator(_generator(dataset, size, PER_RANK * WORLD, batch_sampler=sum(batches, [])),
                          nb_epochs=len(batches), seed=3, verbose=False)
    return trainer.history[-1]["loss"], _weights(module)


def _assert_same(ranks_out: list[dict], loss: float, weights: dict) -> None:
    assert ranks_out[0]["loss"] == pytest.approx(loss, rel=1e-5)
    for rank_out in ranks_out:
        # Sums over ranks and over one batch round differently (1e-7 here); two steps keep that small.
        for name, w in weights.items():
            torch.testing.assert_close(rank_out["weights"][name], w, atol=1e-5, rtol=1e-4, msg=name)


def test_ddp_fit_equals_one_process_with_the_global_batch(ranks, data):
    tmp, out = ranks
    module = _module(tmp)
    trainer = _trainer(_classifier(module, module.parameters()))
    trainer.fit(*data, batch_size=PER_RANK * WORLD, nb_epochs=1, seed=3, verbose=False)
    _assert_same([o["fit"] for o in out], trainer.history[-1]["loss"], _weights(module))
    # Through the DDP wrapper: the outer step's clean and adversarial forwards only, not the inner maximisation's.
    # The outer step's forwards go through DDP: clean, distributional and (the default joint objective) pointwise.
    assert [o["fit"]["ddp_forwards"] for o in out] == [3 * math.ceil(N / (PER_RANK * WORLD))] * WORLD


def test_ddp_checkpoint_loads_into_the_plain_model_and_resumes_under_ddp(ranks):
    tmp, out = ranks
    assert [o["fit"]["resume_error"] for o in out] == ["", ""]
    state = load_checkpoint(tmp / "ckpt" / LAST)
    assert not any(k.startswith("module.") for k in state["model"])
    plain = _module(tmp)
    plain.load_state_dict(state["model"])  # strict: the unwrapped network's keys
    for name, w in _weights(plain).items():
        torch.testing.assert_close(w, out[0]["fit"]["weights"][name], atol=0, rtol=0, msg=name)
        torch.testing.assert_close(out[1]["fit"]["resumed"][name], w, atol=0, rtol=0, msg=name)


def test_ddp_fit_generator_with_a_distributed_sampler_equals_one_process(ranks, data):
    tmp, out = ranks
    batches = [_global_batches([_chunks(idx, PER_RANK) for idx in _sampler_order(e)])[:STEPS] for e in range(EPOCHS)]
    assert batches[0] != batches[1]  # set_epoch reshuffles: the ranks must have called it
    loss, weights = _single_generator(tmp, *data, batches, size=STEPS * PER_RANK * WORLD)
    _assert_same([o["sampler"] for o in out], loss, weights)


def test_ddp_fit_generator_with_unequal_micro_batches_equals_one_process(ranks, data):
    tmp, out = ranks
    batches = [_global_batches(_unequal_shards())]
    assert [len(b) for b in batches[0]] == [16, 11]
    loss, weights = _single_generator(tmp, *data, batches, size=N)
    _assert_same([o["unequal"] for o in out], loss, weights)
    assert all("same number" in o["unequal"]["count_error"] for o in out)


def test_ddp_finetune_gives_every_rank_one_model_and_freezing_needs_unused_parameter_detection(ranks):
    _, out = ranks
    for name, w in out[0]["finetune"]["weights"].items():
        torch.testing.assert_close(out[1]["finetune"]["weights"][name], w, atol=0, rtol=0, msg=name)
    # Unseeded, the ranks still shuffle alike (or their slices of fit's global batches would overlap).
    assert torch.equal(out[0]["finetune"]["shuffle_state"], out[1]["finetune"]["shuffle_state"])
    assert all("find_unused_parameters=True" in o["finetune"]["freeze_error"] for o in out)
    # Υ of each rank's micro-batch is not the global batch's: refused rather than trained on silently.
    assert all("sensitivity_weight" in o["finetune"]["sensitivity_error"] for o in out)
