"""Fault injection: whatever fails during a fine-tune, and wherever it is resumed from, the weights are bitwise this
run's start weights or those of the epoch its selection names.

A tiny linear model on 8x8 digits (64 training images, 2 batches, 4 epochs) trains in a blink. In the loops over
every failure point the held-out measurement is replaced by a fake one that recognises the weights it is given
among those of a straight run (bitwise) and returns that epoch's designed record, so that the rule keeps epoch 1,
then epoch 2, on any machine, and the loops run in seconds. The tests of whole runs use the real judge.

Every fit is seeded, and a resumed run is bitwise a straight one, so each failure's outcome is compared with the
snapshots of one uninterrupted reference run: its start weights and the weights after each epoch.
"""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import pytest
import torch
from art.estimators.classification import PyTorchClassifier

from art_wdat.training import checkpoint
from art_wdat.training.checkpoint import LAST
from art_wdat.training.judge import HeldOutJudge
from art_wdat.training.rundir import KEPT
from art_wdat.training.selection import CLEAN, MIN_NORM, WAUTO, Tolerances, wauto_key
from art_wdat.training.trainer import WassersteinTRADESTrainer
from art_wdat.zoo.data import load_digits_split

EPS = 0.1
EPOCHS = 4
SEED = 3


@pytest.fixture(scope="module")
def data():
    x_tr, y_tr, x_te, y_te = load_digits_split(test_size=0.25, seed=0)
    return x_tr[:64], y_tr[:64], x_te[:24], y_te[:24]


def make_trainer(init_seed: int = 0, **kwargs) -> WassersteinTRADESTrainer:
    torch.manual_seed(init_seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    clf = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                            clip_values=(0.0, 1.0), optimizer=torch.optim.SGD(model.parameters(), lr=0.5))
    return WassersteinTRADESTrainer(clf, eps=EPS, p=2, method="wpgd", pointwise_beta=0.0, max_iter=1,
                                    eval_max_iter=1, **kwargs)


def weights(trainer: WassersteinTRADESTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.get_classifier().model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


#: The fake judge's W-AutoAttack accuracy of the straight run's start and epochs: the rule keeps epoch 1, then 2.
WAUTO_BY_EPOCH = (0.30, 0.32, 0.50, 0.40, 0.45)
#: The straight run's weights, start and epochs (filled by the ``straight`` fixture).
STRAIGHT: dict[int, dict] = {}


def fake_measure(self: HeldOutJudge) -> dict[str, float]:
    """The designed record of the straight run's epoch whose weights these are (bitwise); for the weights of other
    runs (other initial weights), a value drawn from a hash of the weights."""
    state = {k: v.detach().cpu() for k, v in self.classifier.model.state_dict().items()}
    epoch = next((e for e, w in STRAIGHT.items() if same(state, w)), None)
    if epoch is not None:
        wauto = WAUTO_BY_EPOCH[epoch]
    else:
        wauto = (zlib.crc32(b"".join(v.numpy().tobytes() for v in state.values())) % 1009) / 1009
    return {CLEAN: 0.9, MIN_NORM: 0.8, WAUTO: wauto, wauto_key(self.plan.eps): wauto}


def fit(trainer: WassersteinTRADESTrainer, data, folder: Path | None, **kwargs) -> list[dict]:
    x, y, xv, yv = data
    kwargs.setdefault("validation_data", (xv, yv))
    kwargs.setdefault("tolerances", Tolerances(clean=1.0, pointwise=1.0))
    return trainer.fit(x, y, batch_size=32, nb_epochs=EPOCHS, checkpoint_dir=folder, seed=SEED, verbose=False,
                       **kwargs)


class Reference:
    """An uninterrupted run: its start weights (epoch 0), each epoch's weights and the epoch its selection keeps."""

    def __init__(self, data, folder: Path, **kwargs) -> None:
        trainer = make_trainer()
        self.snapshots = {0: weights(trainer)}
        fit(trainer, data, folder, callback=lambda epoch, rec: self.snapshots.__setitem__(epoch + 1, weights(trainer)),
            **kwargs)
        assert trainer.selection is not None
        self.selected = trainer.selection.selected_epoch
        self.final = weights(trainer)

    def holds_named_epoch(self, trainer: WassersteinTRADESTrainer) -> bool:
        """The model holds bitwise the weights of the epoch its selection names (the start's without one)."""
        epoch = 0 if trainer.selection is None else trainer.selection.kept_epoch
        return same(weights(trainer), self.snapshots[epoch])


@pytest.fixture(scope="module")
def straight(data) -> dict[int, dict]:
    """The straight run's weights, measured by nothing (measuring does not change the training)."""
    trainer = make_trainer()
    STRAIGHT.clear()
    STRAIGHT[0] = weights(trainer)
    fit(trainer, data, None, validation_data=None, tolerances=None,
        callback=lambda epoch, rec: STRAIGHT.__setitem__(epoch + 1, weights(trainer)))
    return STRAIGHT


@pytest.fixture()
def fake_judge(monkeypatch, straight):
    monkeypatch.setattr(HeldOutJudge, "_measure", fake_measure)


@pytest.fixture()
def reference(data, fake_judge, tmp_path) -> Reference:
    ref = Reference(data, tmp_path / "reference")
    assert all(same(ref.snapshots[e], STRAIGHT[e]) for e in STRAIGHT)  # measuring changed nothing
    assert ref.selected == 2  # the design: neither the start nor the last, so select_best=True and False end apart
    return ref


def count_writes(data, folder: Path, monkeypatch) -> int:
    calls = []
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    fit(make_trainer(), data, folder)
    monkeypatch.setattr(torch, "save", real)
    return len(calls)


def inject(monkeypatch, k: int, after: bool, error: type[BaseException]) -> None:
    """torch.save raises ``error`` at its k-th call: before writing (the write fails) or after (a crash between it
    and what follows)."""
    real, calls = torch.save, {"n": 0}

    def save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == k and not after:
            raise error("injected")
        real(*args, **kwargs)
        if calls["n"] == k and after:
            raise error("injected")

    monkeypatch.setattr(torch, "save", save)


def resume_every_way(ref: Reference, data, crashed: Path, tmp_path: Path) -> None:
    """Resume copies of the crashed folder with the defaults and with select_best True and False: the final weights
    are the named epoch's, and the kept epoch is the reference's. With a last.pt the model given has other initial
    weights (all must come from the files); without one the resume is a fresh start of the model as first given."""
    init = 7 if (crashed / LAST).is_file() else 0
    for name, select_best in (("defaults", None), ("best", True), ("last", False)):
        folder = tmp_path / f"resume-{name}"
        shutil.copytree(crashed, folder)
        trainer = make_trainer(init_seed=init)
        fit(trainer, data, folder, resume=True, select_best=select_best, tolerances=None)
        assert ref.holds_named_epoch(trainer), name
        assert trainer.selection.kept_epoch == (EPOCHS if select_best is False else ref.selected), name
        shutil.rmtree(folder)


# -- every write, every epoch boundary ----------------------------------------------------------------------------
@pytest.mark.parametrize("after", [False, True], ids=["write-fails", "crash-after-write"])
def test_every_write_failing_in_turn_then_resuming(data, reference, tmp_path, monkeypatch, after):
    n_writes = count_writes(data, tmp_path / "count", monkeypatch)
    assert n_writes >= EPOCHS + 2  # kept.pt of the start, last.pt of every epoch, kept.pt of the epoch kept
    for k in range(1, n_writes + 1):
        crashed = tmp_path / f"crash-{k}"
        trainer = make_trainer()
        inject(monkeypatch, k, after, OSError if k % 2 else KeyboardInterrupt)
        with pytest.raises((OSError, KeyboardInterrupt)):
            fit(trainer, data, crashed)
        monkeypatch.setattr(torch, "save", _REAL_SAVE)
        assert reference.holds_named_epoch(trainer), k  # after the exception: the kept (or start) weights
        assert not list(crashed.glob(".*.tmp")), k  # no temp file left behind
        resume_every_way(reference, data, crashed, tmp_path)


_REAL_SAVE = torch.save


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_a_crash_at_every_epoch_boundary_then_resuming(data, reference, tmp_path, error):
    for boundary in range(EPOCHS):
        crashed = tmp_path / f"crash-{boundary}"

        def crash(epoch: int, record: dict, at: int = boundary) -> None:
            if epoch == at:
                raise error("the user's callback failed")

        trainer = make_trainer()
        with pytest.raises(error):
            fit(trainer, data, crashed, callback=crash)
        assert reference.holds_named_epoch(trainer), boundary
        resume_every_way(reference, data, crashed, tmp_path)


def test_a_failing_measurement_leaves_the_kept_weights_then_resumes(data, reference, tmp_path, monkeypatch):
    for failing in range(2, EPOCHS + 2):  # the start's measurement is call 1: fail each epoch's in turn
        def measure(self: HeldOutJudge, at: int = failing, calls: dict = {"n": 0}) -> dict[str, float]:  # noqa: B006
            calls["n"] += 1
            if calls["n"] == at:
                raise FloatingPointError("the judge diverged")
            return fake_measure(self)

        monkeypatch.setattr(HeldOutJudge, "_measure", measure)
        crashed, trainer = tmp_path / f"crash-{failing}", make_trainer()
        with pytest.raises(FloatingPointError):
            fit(trainer, data, crashed)
        assert reference.holds_named_epoch(trainer), failing
        assert trainer.selection.last_epoch == failing - 2  # the epoch measured when it failed is not counted
        monkeypatch.setattr(HeldOutJudge, "_measure", fake_measure)
        resume_every_way(reference, data, crashed, tmp_path)


def test_without_validation_an_interrupt_leaves_the_last_finished_epoch(data, tmp_path):
    snapshots = {}
    trainer = make_trainer()
    snapshots[0] = weights(trainer)

    def crash(epoch: int, record: dict) -> None:
        snapshots[epoch + 1] = weights(trainer)
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(trainer, data, None, validation_data=None, tolerances=None, callback=crash)
    assert same(weights(trainer), snapshots[2])

    # A kill in the middle of epoch 3: the model is put back to epoch 2's weights, not half of epoch 3's.
    calls = {"n": 0, "at": -1}

    def kill(module, inputs):
        calls["n"] += 1
        if calls["n"] == calls["at"]:
            raise KeyboardInterrupt

    trainer = make_trainer()
    handle = trainer.get_classifier().model[1].register_forward_pre_hook(kill)  # ART runs a Sequential by layers
    fit(trainer, data, None, validation_data=None, tolerances=None)
    handle.remove()
    calls.update(at=5 * calls["n"] // 8, n=0)  # equal epochs: five eighths of the forward calls is inside epoch 3
    trainer = make_trainer()
    handle = trainer.get_classifier().model[1].register_forward_pre_hook(kill)  # ART runs a Sequential by layers
    done = []
    with pytest.raises(KeyboardInterrupt):
        fit(trainer, data, None, validation_data=None, tolerances=None,
            callback=lambda epoch, rec: done.append(epoch + 1))
    handle.remove()
    assert len(done) == 2
    assert same(weights(trainer), snapshots[2])


def test_a_diverged_epoch_is_never_kept(data, tmp_path):
    """Epoch 2's learning rate blows the weights up to non-finite values: the real judge counts it as 0 accuracy, and
    the model ends with bitwise the start's or a finite epoch's weights."""
    trainer = make_trainer()
    snapshots = {0: weights(trainer)}
    optimizer = trainer.get_classifier().optimizer

    def blow_up(epoch: int, record: dict) -> None:
        snapshots[epoch + 1] = weights(trainer)
        for group in optimizer.param_groups:
            group["lr"] = 1e30 if epoch == 0 else 0.5

    fit(trainer, data, tmp_path, callback=blow_up, tolerances=None)
    sel = trainer.selection
    assert not all(torch.isfinite(v).all() for v in snapshots[2].values())  # the premise: epoch 2 diverged
    assert sel.selected_epoch != 2 and sel.epochs[1][WAUTO] == 0.0
    assert same(weights(trainer), snapshots[sel.kept_epoch])


# -- one run, one directory state -----------------------------------------------------------------------------------
def test_a_fresh_run_in_a_used_folder_never_ends_with_the_earlier_runs_weights(data, tmp_path):
    """The issue's case 1: run A finishes in the folder; run B starts afresh there with select_best=False, crashes
    after epoch 1, and is resumed with the defaults. B must end with its own start's or epoch's weights."""
    folder = tmp_path / "run"
    run_a = make_trainer(init_seed=11)
    fit(run_a, data, folder, tolerances=None)
    a_final = weights(run_a)

    straight_b = make_trainer(init_seed=0)
    b_snapshots = {0: weights(straight_b)}
    fit(straight_b, data, tmp_path / "straight",
        callback=lambda epoch, rec: b_snapshots.__setitem__(epoch + 1, weights(straight_b)), tolerances=None)

    def crash(epoch: int, record: dict) -> None:
        if epoch == 0:
            raise KeyboardInterrupt

    run_b = make_trainer(init_seed=0)
    with pytest.raises(KeyboardInterrupt):
        fit(run_b, data, folder, select_best=False, callback=crash, tolerances=None)
    assert same(weights(run_b), b_snapshots[1])  # select_best=False: the last finished epoch
    resumed = make_trainer(init_seed=5)
    fit(resumed, data, folder, resume=True, tolerances=None)  # the defaults
    final = weights(resumed)
    assert not same(final, a_final)
    assert same(final, b_snapshots[resumed.selection.kept_epoch])
    assert resumed.selection.kept_epoch == straight_b.selection.kept_epoch
    assert same(final, weights(straight_b))
    run_ids = {torch.load(folder / name, weights_only=True)["run_id"] for name in (LAST, KEPT)}
    assert len(run_ids) == 1


def test_a_resume_refuses_files_of_another_run_or_epoch(data, fake_judge, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, init in ((first, 0), (second, 1)):
        fit(make_trainer(init_seed=init), data, folder)
    # Run 2's kept.pt beside run 1's last.pt: refused, and the model is left as it was given.
    shutil.copy(second / KEPT, first / KEPT)
    trainer = make_trainer(init_seed=9)
    given = weights(trainer)
    with pytest.raises(ValueError, match="do not belong together"):
        fit(trainer, data, first, resume=True)
    assert same(weights(trainer), given)
    # A kept.pt of the right run but the wrong epoch: refused too.
    state = torch.load(second / KEPT, weights_only=True)
    last = torch.load(second / LAST, weights_only=True)
    state["epoch"] = (last["selection"]["selected_epoch"] + 1) % EPOCHS
    if state["epoch"] == last["epoch"]:
        state["epoch"] = (state["epoch"] + 1) % EPOCHS
    torch.save(state, second / KEPT)
    with pytest.raises(ValueError, match="do not belong together"):
        fit(make_trainer(), data, second, resume=True)
    # No kept.pt at all while last.pt keeps an earlier epoch: refused.
    (second / KEPT).unlink()
    if last["selection"]["selected_epoch"] != last["epoch"]:
        with pytest.raises(ValueError, match="missing"):
            fit(make_trainer(), data, second, resume=True)


def test_a_resume_refuses_other_tolerances_or_another_measurement(data, fake_judge, tmp_path):
    def crash(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(make_trainer(), data, tmp_path, callback=crash)
    with pytest.raises(ValueError, match="`tolerances`"):
        fit(make_trainer(), data, tmp_path, resume=True, tolerances=Tolerances(clean=0.5, pointwise=0.5))
    with pytest.raises(ValueError, match="`select_p`"):
        fit(make_trainer(select_p=1.0), data, tmp_path, resume=True, tolerances=None)
    x, y, xv, yv = data
    with pytest.raises(ValueError, match="`validation_data`"):
        fit(make_trainer(), data, tmp_path, resume=True, tolerances=None, validation_data=(xv[:20], yv[:20]))
    # The same settings resume (the tolerances passed equal to the checkpoint's, or None).
    fit(make_trainer(), data, tmp_path, resume=True)


def test_a_fresh_start_clears_the_folder_and_writes_kept_after_last(data, fake_judge, tmp_path, monkeypatch):
    fit(make_trainer(init_seed=1), data, tmp_path)
    (tmp_path / f".{LAST}.abc.tmp").write_bytes(b"half a write")
    order = []
    real = checkpoint._write_atomically

    def write(path, how):
        out = real(path, how)
        order.append((Path(path).stem, int(torch.load(path, weights_only=True)["epoch"])))
        return out

    monkeypatch.setattr(checkpoint, "_write_atomically", write)
    trainer = make_trainer()
    fit(trainer, data, tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))
    assert order[0] == ("kept", 0)
    for i, (name, epoch) in enumerate(order):
        if name == "kept" and epoch > 0:
            assert order[i - 1] == ("last", epoch)  # the state that names the kept epoch is on disk first
    kept = [epoch for name, epoch in order if name == "kept"]
    assert kept[-1] == trainer.selection.selected_epoch
