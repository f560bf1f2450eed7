"""The metrics, ``evaluate`` and the command line across processes: one report of the union of the shards."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from art_wdat import cli
from art_wdat.evaluation import EvaluationResult, EvaluationSettings, evaluate, metrics
from art_wdat.zoo import SmallCNN
from bench.torchrun_stress import make_tiny
from tests.ranks import digits_shard, errors, gloo_threads, leftover_threads, spawn

SHARDS = (37, 23)  # unequal on purpose
BUDGETS = (0.0, 0.1)
ATTACKS = ("pgd", "wpgd", "wpgd-budget")  # AutoAttack's random starts differ per shard; these are deterministic
SETTINGS = EvaluationSettings(max_iter=5, batch_size=16, pgd_random_init=0, budget_rounds=2)


def _evaluate(clf, x, y) -> EvaluationResult:
    return evaluate(clf, x, y, BUDGETS, p=2, attacks=ATTACKS, settings=SETTINGS, seed=0)


def _evaluate_shard(rank: int, world: int, tmp: str) -> None:
    clf, x, y = digits_shard(tmp, rank, SHARDS)
    Path(f"{tmp}/report{rank}.json").write_text(_evaluate(clf, x, y).to_json())
    ce = metrics.clean_statistics(clf, x, y, loss="ce", batch_size=16)
    Path(f"{tmp}/ce{rank}.json").write_text(json.dumps(asdict(ce)))


@pytest.fixture(scope="module")
def ranks_and_single(tmp_path_factory, digits_clf, digits):
    tmp = tmp_path_factory.mktemp("dist_eval")
    torch.save(digits_clf.model.state_dict(), tmp / "model.pt")
    _, _, x, y = digits
    x, y = x[:sum(SHARDS)], y[:sum(SHARDS)]
    np.savez(tmp / "data.npz", x=x, y=y)
    assert spawn(_evaluate_shard, len(SHARDS), tmp) == [True, True], errors(tmp, len(SHARDS))
    return tmp, _evaluate(digits_clf, x, y), metrics.clean_statistics(digits_clf, x, y, loss="ce", batch_size=16)


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5, abs=1e-6)


def test_evaluate_across_ranks_equals_one_process_on_the_union(ranks_and_single):
    tmp, single, _ = ranks_and_single
    top = ("n_samples", "clean_accuracy", "v0", "w0", "sensitivity")
    # The comparison means something only if the attacks bite and the bounds are finite.
    assert single.budgets[1].accuracy("wpgd") < single.clean_accuracy and math.isfinite(single.budgets[1].r_lower)
    for rank in range(len(SHARDS)):
        report = EvaluationResult.from_json((tmp / f"report{rank}.json").read_text())
        for name in top:
            assert _close(getattr(report, name), getattr(single, name)), (rank, name)
        assert report.n_samples == sum(SHARDS)
        for got, want in zip(report.budgets, single.budgets):
            for name in ("r_upper", "r_lower", "r_bar", "r_tilde", "wfgsm_loss"):
                assert _close(getattr(got, name), getattr(want, name)), (rank, got.budget, name)
            for attack in ATTACKS:
                g, w = got.attacks[attack], want.attacks[attack]
                assert _close(g.accuracy, w.accuracy) and _close(g.cost, w.cost), (rank, got.budget, attack)
                assert g.cost <= got.budget * (1 + 1e-6)
        assert any("2 ranks" in note for note in report.notes)


def test_clean_statistics_across_ranks_equal_one_process(ranks_and_single):
    tmp, _, single = ranks_and_single
    assert single.n_misclassified > 0  # so that W(0) is a mean over misclassified inputs of both shards
    for rank in range(len(SHARDS)):
        got = json.loads((tmp / f"ce{rank}.json").read_text())
        for name, want in asdict(single).items():
            assert got[name] == (want if isinstance(want, str) else pytest.approx(want, rel=1e-5)), (rank, name)


# -- the command line under torchrun ------------------------------------------------------------------------


@pytest.fixture()
def tiny(tmp_path):
    """tiny.npz and tiny.pt: the data and model that bench/torchrun_stress.py launches many times."""
    make_tiny(tmp_path)
    return tmp_path


def _torchrun(args: list, cwd: Path) -> subprocess.CompletedProcess:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*torchrun, "-m", "art_wdat", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


def test_cli_evaluate_and_finetune_under_torchrun_write_one_report(tiny, capsys, monkeypatch):
    monkeypatch.chdir(tiny)  # the same relative paths for torchrun and the in-process reference
    data = ["--dataset", "npz:tiny.npz", "--max-iter", "3", "-q"]
    evaluation = ["evaluate", "--model", "tiny.pt", "--eps", "0.2", "--attacks", "wpgd,wpgd-budget", *data]
    done = _torchrun([*evaluation, "--out", "ranks"], tiny)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("### tiny.pt") == 1  # rank 0 alone prints
    assert cli.main([*evaluation, "--out", str(tiny / "single"), "--threads", "1"]) == 0
    ranks = json.loads((tiny / "ranks" / "report.json").read_text())
    single = json.loads((tiny / "single" / "report.json").read_text())
    assert ranks["meta"]["ranks"] == 2 and ranks["n_samples"] == single["n_samples"] == 25
    for name in ("clean_accuracy", "v0", "sensitivity"):
        assert ranks[name] == pytest.approx(single[name], rel=1e-5), name
    for got, want in zip(ranks["budgets"], single["budgets"]):
        for attack in ("wpgd", "wpgd-budget"):
            assert got["attacks"][attack]["accuracy"] == pytest.approx(want["attacks"][attack]["accuracy"])
            assert got["attacks"][attack]["cost"] == pytest.approx(want["attacks"][attack]["cost"], rel=1e-5)

    # finetune: --batch-size is per rank, so 2 ranks × 7 train as one process with 14 (every image trained on, the
    # last epoch's weights: no held-out selection, which could keep the start weights of so tiny a model).
    training = ["finetune", "--model", "tiny.pt", "--eps", "0.1", "--lr", "0.01", "--val-split", "0", *data]
    done = _torchrun([*training, "--batch-size", "7", "--out", "ranks.pt"], tiny)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Wrote ranks.pt") == 1
    assert cli.main([*training, "--batch-size", "14", "--out", str(tiny / "single.pt"), "--threads", "1"]) == 0
    capsys.readouterr()
    start = torch.load(tiny / "tiny.pt", weights_only=True)["state_dict"]
    got = torch.load(tiny / "ranks.pt", weights_only=True)["state_dict"]
    want = torch.load(tiny / "single.pt", weights_only=True)["state_dict"]
    assert any((want[k] - start[k]).abs().max() > 1e-3 for k in want)  # training moved the weights
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, atol=1e-5, rtol=1e-4, msg=name)


# -- leaving the process group frees it: no gloo thread survives into interpreter teardown -----------------------
#
# torch.distributed.nn.functional binds group.WORLD as a default argument when it is imported, and the first
# optimizer imports it (through torch._dynamo). Imported after the group exists, it kept the destroyed group and
# its gloo threads alive until interpreter teardown, where a rank sometimes aborted with "terminate called
# without an active exception" (see art_wdat.distributed). The abort was rare; the leftover threads are not, so
# these tests check them, deterministically.

ON_LINUX = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names come from /proc")


def _optimizer_after_init(rank: int, world: int, tmp: str) -> None:
    import torch.distributed as dist
    import torch.distributed.nn.functional as collectives

    torch.optim.SGD(SmallCNN(1, 3, 8, width=4).parameters(), lr=0.1)  # imports torch._dynamo: the trigger
    bound = any(d is dist.group.WORLD for d in collectives.all_reduce.__defaults__)
    Path(f"{tmp}/bound{rank}").write_text(str(bound))
    assert gloo_threads(wait=0.0), "the group's gloo threads should run while it exists"


@ON_LINUX
def test_shutdown_frees_the_group_that_an_optimizer_built_after_init_still_references(tmp_path):
    # tests/ranks.py initialises the group itself (no pre-import): the release in distributed.destroy is tested.
    assert spawn(_optimizer_after_init, 2, tmp_path) == [True, True], errors(tmp_path, 2)
    assert [(tmp_path / f"bound{r}").read_text() for r in range(2)] == ["True", "True"], \
        "the precondition: torch.distributed.nn.functional was imported after init and bound the live group"
    assert leftover_threads(tmp_path, 2) == [[], []]


_REPORT_THREADS = """
import sys
from art_wdat.cli import main
from tests.ranks import gloo_threads
code = main(sys.argv[1:])
print("gloo threads after main:", gloo_threads() or "none", file=sys.stderr)
sys.exit(code)
"""


@ON_LINUX
def test_cli_under_torchrun_leaves_no_gloo_thread_and_exits_zero(tiny):
    (tiny / "report_threads.py").write_text(_REPORT_THREADS)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    args = ["finetune", "--model", "tiny.pt", "--eps", "0.1", "--lr", "0.01", "--dataset", "npz:tiny.npz",
            "--max-iter", "2", "--batch-size", "7", "--out", "ranks.pt", "-q", "--threads", "1"]
    done = subprocess.run([*torchrun, "report_threads.py", *args], cwd=tiny, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr
    assert done.stderr.count("gloo threads after main: none") == 2, done.stderr[-3000:]
