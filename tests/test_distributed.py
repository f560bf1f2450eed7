"""One distribution across processes: 2 ranks on gloo (CPU) must attack exactly as one process does."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from art_wdat import WassersteinDistributionalAttack
from tests.ranks import digits_shard, errors, save_digits, spawn

CASES = [(2.0, "wpgd"), (2.0, "budget"), (math.inf, "wpgd"), (math.inf, "budget")]
SHARDS = (37, 23)  # unequal on purpose
TRAIN_BATCH = 16  # global batch of the trainer test: 8 per rank


def _attack(clf, x, y, p, method):
    return WassersteinDistributionalAttack(clf, eps=0.15, p=p, method=method, max_iter=6, budget_rounds=3,
                                           batch_size=16, verbose=False).generate(x, y)


def _train(clf, x, y, batch_size: int):
    from art_wdat.training.trainer import WassersteinTRADESTrainer

    # Cheapness weights on: they are scaled to mean 1 over the global batch, which the ranks must agree on.
    trainer = WassersteinTRADESTrainer(clf, eps=0.1, p=2, max_iter=3, cheapness_weight=2.0)
    trainer.fit(x, y, batch_size=batch_size, nb_epochs=1, seed=3, verbose=False)
    return trainer.history[-1], {k: v.detach().clone() for k, v in clf.model.state_dict().items()}


def _digits_trainee():
    from art_wdat.zoo import SmallCNN, make_classifier

    torch.manual_seed(0)
    model = SmallCNN(1, 10, 8, width=8)
    return make_classifier(model, (1, 8, 8), 10, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))


def _attack_shard(rank: int, world: int, tmp: str) -> None:
    clf, x, y = digits_shard(tmp, rank, SHARDS)
    np.savez(f"{tmp}/rank{rank}.npz", **{f"{p}-{m}": _attack(clf, x, y, p, m) for p, m in CASES})


def _attack_but_rank_1_fails(rank: int, world: int, tmp: str) -> None:
    if rank == 1:
        raise RuntimeError("this rank fails on purpose")
    _attack_shard(rank, world, tmp)


def _train_slices(rank: int, world: int, tmp: str) -> None:
    # Every rank gets all of x; each trains on its slice of every global batch.
    data = np.load(f"{tmp}/data.npz")
    history, weights = _train(_digits_trainee(), data["x"], data["y"], batch_size=TRAIN_BATCH // world)
    if rank == 0:
        torch.save({"weights": weights, "loss": history["loss"]}, f"{tmp}/trained.pt")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_clf, digits):
    return save_digits(tmp_path_factory.mktemp("dist"), digits_clf, digits, sum(SHARDS))


def test_ranks_together_equal_one_process_on_the_union(setup, digits_clf):
    tmp, x, y = setup
    assert spawn(_attack_shard, len(SHARDS), tmp) == [True, True], errors(tmp, len(SHARDS))
    shards = [np.load(tmp / f"rank{r}.npz") for r in range(len(SHARDS))]
    for p, method in CASES:
        key = f"{p}-{method}"
        joined = np.concatenate([s[key] for s in shards])
        single = _attack(digits_clf, x, y, p, method)
        assert np.abs(single - x).max() > 0
        np.testing.assert_allclose(joined, single, atol=1e-5, err_msg=key)


def test_a_failing_rank_makes_the_others_fail_not_hang(tmp_path, setup):
    src, _, _ = setup
    for name in ("model.pt", "data.npz"):
        os.symlink(src / name, tmp_path / name)
    assert spawn(_attack_but_rank_1_fails, len(SHARDS), tmp_path, timeout=90.0) == [False, False]
    assert "fails on purpose" in (tmp_path / "error1.txt").read_text()
    assert (tmp_path / "error0.txt").exists()


def test_trainer_ranks_together_equal_one_process_with_the_global_batch(setup):
    tmp, x, y = setup
    assert spawn(_train_slices, len(SHARDS), tmp) == [True, True], errors(tmp, len(SHARDS))
    ranks = torch.load(tmp / "trained.pt", weights_only=True)
    history, single = _train(_digits_trainee(), x, y, batch_size=TRAIN_BATCH)
    assert ranks["loss"] == pytest.approx(history["loss"], rel=1e-5)
    # Sums over ranks and over one batch round differently (1e-7); a few sign-gradient steps keep that small.
    for name, w in single.items():
        torch.testing.assert_close(ranks["weights"][name], w, atol=1e-5, rtol=1e-4, msg=name)
