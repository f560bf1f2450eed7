"""One distribution across processes: 2 ranks on gloo (CPU) must attack exactly as one process does."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from art_wdat import WassersteinDistributionalAttack
from tests.conftest import digits_cnn, wrap

CASES = [(2.0, "wpgd"), (2.0, "budget"), (math.inf, "wpgd"), (math.inf, "budget")]
SHARDS = (37, 23)  # unequal on purpose
TRAIN_BATCH = 16  # global batch of the trainer test: 8 per rank


def _attack(clf, x, y, p, method):
    return WassersteinDistributionalAttack(clf, eps=0.15, p=p, method=method, max_iter=6, budget_rounds=3,
                                           batch_size=16, verbose=False).generate(x, y)


def _train(clf, x, y, batch_size: int):
    from art_wdat.trainer import WassersteinTRADESTrainer

    trainer = WassersteinTRADESTrainer(clf, eps=0.1, p=2, max_iter=3)
    trainer.fit(x, y, batch_size=batch_size, nb_epochs=1, seed=3, verbose=False)
    return trainer.history[-1], {k: v.detach().clone() for k, v in clf.model.state_dict().items()}


def _digits_trainee():
    from art_wdat.models import SmallCNN, make_classifier

    torch.manual_seed(0)
    model = SmallCNN(1, 10, 8, width=8)
    return make_classifier(model, (1, 8, 8), 10, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))


def _worker(rank: int, world: int, tmp: str, fail_rank: int, job: str = "attack") -> None:
    import torch.distributed as dist

    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world,
                                timeout=timedelta(seconds=30))
        if rank == fail_rank:
            raise RuntimeError("this rank fails on purpose")
        data = np.load(f"{tmp}/data.npz")
        if job == "train":  # every rank gets all of x; each trains on its slice of every global batch
            history, weights = _train(_digits_trainee(), data["x"], data["y"], batch_size=TRAIN_BATCH // world)
            if rank == 0:
                torch.save({"weights": weights, "loss": history["loss"]}, f"{tmp}/trained.pt")
            dist.destroy_process_group()
            return
        model = digits_cnn()
        model.load_state_dict(torch.load(f"{tmp}/model.pt", weights_only=True))
        lo = sum(SHARDS[:rank])
        x, y = data["x"][lo:lo + SHARDS[rank]], data["y"][lo:lo + SHARDS[rank]]
        out = {f"{p}-{m}": _attack(wrap(model), x, y, p, m) for p, m in CASES}
        np.savez(f"{tmp}/rank{rank}.npz", **out)
        dist.destroy_process_group()
    except BaseException:  # the parent reads what went wrong from the file
        Path(f"{tmp}/error{rank}.txt").write_text(traceback.format_exc())
        raise


def _run_ranks(tmp: Path, fail_rank: int = -1, timeout: float = 120.0, job: str = "attack") -> list:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, len(SHARDS), str(tmp), fail_rank, job))
             for r in range(len(SHARDS))]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout)
    hung = [proc for proc in procs if proc.is_alive()]
    for proc in hung:
        proc.kill()
    assert not hung, "a rank hung instead of failing"
    return [proc.exitcode for proc in procs]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_clf, digits):
    tmp = tmp_path_factory.mktemp("dist")
    torch.save(digits_clf.model.state_dict(), tmp / "model.pt")
    _, _, x, y = digits
    np.savez(tmp / "data.npz", x=x[:sum(SHARDS)], y=y[:sum(SHARDS)])
    return tmp, x[:sum(SHARDS)], y[:sum(SHARDS)]


def test_ranks_together_equal_one_process_on_the_union(setup, digits_clf):
    tmp, x, y = setup
    assert _run_ranks(tmp) == [0, 0], [(tmp / f"error{r}.txt").read_text() for r in (0, 1)
                                        if (tmp / f"error{r}.txt").exists()]
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
    codes = _run_ranks(tmp_path, fail_rank=1, timeout=90.0)
    assert codes[1] != 0 and codes[0] != 0
    assert "fails on purpose" in (tmp_path / "error1.txt").read_text()
    assert (tmp_path / "error0.txt").exists()


def test_trainer_ranks_together_equal_one_process_with_the_global_batch(setup):
    tmp, x, y = setup
    assert _run_ranks(tmp, job="train") == [0, 0], [(tmp / f"error{r}.txt").read_text() for r in (0, 1)
                                                    if (tmp / f"error{r}.txt").exists()]
    ranks = torch.load(tmp / "trained.pt", weights_only=True)
    history, single = _train(_digits_trainee(), x, y, batch_size=TRAIN_BATCH)
    assert ranks["loss"] == pytest.approx(history["loss"], rel=1e-5)
    # Sums over ranks and over one batch round differently (1e-7); a few sign-gradient steps keep that small.
    for name, w in single.items():
        torch.testing.assert_close(ranks["weights"][name], w, atol=1e-5, rtol=1e-4, msg=name)
