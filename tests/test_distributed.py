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


def _attack(clf, x, y, p, method):
    return WassersteinDistributionalAttack(clf, eps=0.15, p=p, method=method, max_iter=6, budget_rounds=3,
                                           batch_size=16, verbose=False).generate(x, y)


def _worker(rank: int, world: int, tmp: str, fail_rank: int) -> None:
    import torch.distributed as dist

    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world,
                                timeout=timedelta(seconds=30))
        if rank == fail_rank:
            raise RuntimeError("this rank fails on purpose")
        model = digits_cnn()
        model.load_state_dict(torch.load(f"{tmp}/model.pt", weights_only=True))
        data = np.load(f"{tmp}/data.npz")
        lo = sum(SHARDS[:rank])
        x, y = data["x"][lo:lo + SHARDS[rank]], data["y"][lo:lo + SHARDS[rank]]
        out = {f"{p}-{m}": _attack(wrap(model), x, y, p, m) for p, m in CASES}
        np.savez(f"{tmp}/rank{rank}.npz", **out)
        dist.destroy_process_group()
    except BaseException:  # the parent reads what went wrong from the file
        Path(f"{tmp}/error{rank}.txt").write_text(traceback.format_exc())
        raise


def _run_ranks(tmp: Path, fail_rank: int = -1, timeout: float = 120.0) -> list:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, len(SHARDS), str(tmp), fail_rank)) for r in range(len(SHARDS))]
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
