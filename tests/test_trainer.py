"""Tests of ``WassersteinTRADESTrainer``: the loss, TRADES at p = inf, training, checkpoints, the ART interface.

Everything runs on scikit-learn's 8x8 digits with a small CNN on the CPU. The models are tiny, so the
tests pin torch to one thread: with several processes sharing two cores, intra-op threading only adds
contention.
"""

from __future__ import annotations

import logging
import math
import os
import stat

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.estimators.classification import PyTorchClassifier

from art_wdat.attacks.wasserstein import WassersteinDistributionalAttack
from art_wdat.training.checkpoint import LAST, current_umask, save_checkpoint
from art_wdat.training.trainer import WassersteinTRADESTrainer
from art_wdat.zoo import SmallCNN
from art_wdat.zoo.data import load_digits_split

EPS = 0.1  # ℓ∞ budget on digits (pixels in [0, 1], 17 grey levels)


@pytest.fixture(scope="module")
def digits():
    """The package's own split (stratified, 1,347 / 450), not conftest's."""
    return load_digits_split(test_size=0.25, seed=0)


def make_model(width: int = 16, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(1, 10, 8, width=width)


def make_classifier(model: torch.nn.Module, opt: str = "adam", lr: float = 1e-3) -> PyTorchClassifier:
    if opt == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                             clip_values=(0.0, 1.0), optimizer=optimizer)


def wpgd_accuracy(clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray, eps: float = EPS, max_iter: int = 30) -> float:
    attack = WassersteinDistributionalAttack(clf, eps=eps, p=2, norm=np.inf, loss="redlr", max_iter=max_iter,
                                             batch_size=512, verbose=False)
    attack.generate(x, y)
    res = attack.last_result_
    return float(res.accuracy[res.best_iteration])


def clean_accuracy(clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray) -> float:
    return float((clf.predict(x, batch_size=512).argmax(axis=1) == y).mean())


def batch(digits, n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    x_tr, y_tr, _, _ = digits
    return torch.from_numpy(x_tr[:n].copy()), torch.from_numpy(y_tr[:n].astype(np.int64))


# -- the loss ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p, norm, method", [(2.0, np.inf, "wpgd"), (2.0, np.inf, "budget"), (2.0, 2, "wpgd"),
                                             (1.0, np.inf, "wpgd"), (np.inf, np.inf, "wpgd")])
def test_batch_loss_is_ce_plus_beta_kl_of_the_inner_maximiser(digits, p, norm, method):
    clf = make_classifier(make_model(width=8))
    eps = EPS if norm == np.inf else 0.5
    trainer = WassersteinTRADESTrainer(clf, eps=eps, p=p, norm=norm, beta=3.0, max_iter=5, method=method,
                                       pointwise_beta=0.0)
    x, y = batch(digits)
    torch.manual_seed(0)
    loss, x_adv = trainer.batch_loss(x, y)

    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert float(trainer.ball.cost(x_adv - x)) <= eps * (1 + 1e-6)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float((x_adv - x).abs().max()) > 0  # the inner maximisation moved
    model = clf.model
    model.train()
    logits, logits_adv = model(x), model(x_adv)
    kl = (F.softmax(logits, 1) * (F.log_softmax(logits, 1) - F.log_softmax(logits_adv, 1))).sum(1).mean()
    expected = F.cross_entropy(logits, y) + 3.0 * kl
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    # The gradient flows through the clean prediction of the KL term too, as in TRADES.
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref = torch.autograd.grad(expected, list(model.parameters()))
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_inner_maximiser_spends_the_whole_budget_unevenly(digits):
    clf = make_classifier(make_model(width=8))
    trainer = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, max_iter=10, method="wpgd")
    x, y = batch(digits, 64)
    torch.manual_seed(0)
    x_adv = trainer.inner_maximize(x, y)
    cost = float(trainer.ball.cost(x_adv - x))
    assert cost == pytest.approx(EPS, rel=1e-3)
    # p < inf: some inputs get more than eps (the pointwise bound), paid for by the others.
    assert float((x_adv - x).flatten(1).abs().amax(1).max()) > EPS


def test_rekl_spends_nothing_on_inputs_already_lost(digits):
    clf = make_classifier(make_model(width=8))
    x, y = batch(digits, 64)
    with torch.no_grad():
        pred = clf.model(x).argmax(1)
    y_wrong = torch.where(torch.arange(64) < 32, (pred + 1) % 10, pred)  # first half "misclassified"
    trainer = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, max_iter=5, kl_start_std=0.0, method="wpgd",
                                       inner_loss="rekl")
    x_adv = trainer.inner_maximize(x, y_wrong)
    moved = (x_adv - x).flatten(1).abs().amax(1)
    assert float(moved[:32].max()) == 0.0 and float(moved[32:].min()) > 0.0
    assert float(trainer.ball.cost(x_adv - x)) == pytest.approx(EPS, rel=1e-3)  # their share went to the others
    with pytest.raises(ValueError, match="`inner_loss`"):
        trainer.inner_maximize(x)
    kl_trainer = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, max_iter=5, kl_start_std=0.0, inner_loss="kl",
                                          method="wpgd")
    assert float((kl_trainer.inner_maximize(x) - x).flatten(1).abs().amax(1)[:32].max()) > 0.0


def test_sensitivity_penalty_adds_beta_gamma_eps_upsilon(digits):
    clf = make_classifier(make_model(width=8))
    x, y = batch(digits, 32)
    old = {"method": "wpgd", "inner_loss": "rekl", "pointwise_beta": 0.0}  # the W-TRADES loss alone
    plain = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, beta=2.0, max_iter=3, **old)
    penalised = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, beta=2.0, max_iter=3, sensitivity_weight=500.0, **old)
    torch.manual_seed(0)
    loss0, x_adv0 = plain.batch_loss(x, y)
    torch.manual_seed(0)
    loss1, x_adv1 = penalised.batch_loss(x, y)
    assert torch.equal(x_adv0, x_adv1)
    xa = x_adv1.clone().requires_grad_(True)
    model = clf.model
    kl = (F.softmax(model(x), 1) * (F.log_softmax(model(x), 1) - F.log_softmax(model(xa), 1))).sum(1)
    (g,) = torch.autograd.grad(kl.sum(), xa)
    upsilon = g.flatten(1).abs().sum(1).pow(2).mean().sqrt()  # q = 2, dual of ℓ∞ is ℓ1
    assert (loss1 - loss0).item() == pytest.approx(2.0 * 500.0 * EPS * upsilon.item(), rel=1e-3)
    loss1.backward()  # differentiable in the parameters (double backprop)
    assert all(p.grad is not None for p in model.parameters())


def _reference_trades_step(model, optimizer, x, y, eps, step_size, steps, beta):
    """TRADES' ``trades_loss`` (github.com/yaodongyu/TRADES, trades.py, distance='l_inf') plus the optimizer step."""
    criterion_kl = torch.nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = x.detach() + 0.001 * torch.randn(x.shape).detach()
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    optimizer.zero_grad()
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / len(x)) * criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
    loss = loss_natural + beta * loss_robust
    loss.backward()
    optimizer.step()
    return x_adv


def test_p_inf_is_trades(digits):
    """One W-TRADES step at p = inf gives the weights of one step of TRADES' own code (same seed)."""
    x, y = batch(digits, 64)
    ref_model = make_model(width=8, seed=3)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9)
    clf = make_classifier(make_model(width=8, seed=3), opt="sgd", lr=0.1)
    trainer = WassersteinTRADESTrainer(clf, eps=EPS, p=np.inf, beta=6.0, max_iter=10, eps_step=0.02)
    torch.manual_seed(11)
    x_ref = _reference_trades_step(ref_model, ref_opt, x, y, EPS, 0.02, 10, 6.0)
    torch.manual_seed(11)
    x_ours = trainer.inner_maximize(x)
    torch.manual_seed(11)
    trainer.train_step(x, y)
    torch.testing.assert_close(x_ours, x_ref, rtol=0, atol=1e-6)
    changed = False
    for p_ours, p_ref, p_init in zip(clf.model.parameters(), ref_model.parameters(), make_model(8, 3).parameters()):
        torch.testing.assert_close(p_ours, p_ref, rtol=0, atol=1e-6)
        changed |= not torch.allclose(p_ours, p_init, atol=1e-4)
    assert changed


# -- training works ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_wtrades_is_more_distributionally_robust_than_plain_training(digits):
    """Same CNN, data, optimizer, epochs and seed: W-TRADES (p=2, ℓ∞, eps 0.1) against cross-entropy training.

    Measured (digits test split, 450 images): W-TRADES clean 0.916, W-PGD 0.540; plain CE clean 0.918, W-PGD 0.364.
    """
    x_tr, y_tr, x_te, y_te = digits
    robust = make_classifier(make_model(seed=0))
    history = WassersteinTRADESTrainer(robust, eps=EPS, p=2.0, beta=6.0).fit(
        x_tr, y_tr, batch_size=64, nb_epochs=8, seed=0, verbose=False)
    plain = make_classifier(make_model(seed=0))
    torch.manual_seed(0)
    plain.fit(x_tr, y_tr, batch_size=64, nb_epochs=8, verbose=False)

    assert len(history) == 8 and history[-1]["loss"] < history[0]["loss"]
    clean_r, clean_p = clean_accuracy(robust, x_te, y_te), clean_accuracy(plain, x_te, y_te)
    wpgd_r, wpgd_p = wpgd_accuracy(robust, x_te, y_te), wpgd_accuracy(plain, x_te, y_te)
    assert clean_r >= 0.85 and clean_p >= 0.85
    assert wpgd_r >= wpgd_p + 0.10, (wpgd_r, wpgd_p)


# -- checkpoints and resuming -----------------------------------------------------------------------------------
def _resumable(seed: int = 0) -> tuple[WassersteinTRADESTrainer, torch.optim.lr_scheduler.LRScheduler]:
    clf = make_classifier(make_model(width=8, seed=seed), opt="sgd", lr=0.05)
    trainer = WassersteinTRADESTrainer(clf, eps=EPS, p=2.0, max_iter=3, finetune="perturb", weight_noise=0.05)
    return trainer, torch.optim.lr_scheduler.StepLR(clf.optimizer, step_size=1, gamma=0.5)


def _params(trainer: WassersteinTRADESTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.get_classifier().model.parameters()]


def test_resume_gives_the_weights_of_a_straight_run(digits, tmp_path):
    x_tr, y_tr, _, _ = digits
    x, y = x_tr[:256], y_tr[:256]
    straight, sched = _resumable()
    straight.fit(x, y, batch_size=64, nb_epochs=3, scheduler=sched, seed=5, verbose=False)

    first, sched = _resumable()
    first.fit(x, y, batch_size=64, nb_epochs=1, scheduler=sched, checkpoint_dir=tmp_path, seed=5, verbose=False)
    torch.manual_seed(123)  # whatever happens to the global RNGs in between must not matter
    np.random.seed(123)
    second, sched = _resumable(seed=1)  # different initial weights: all of them come from the checkpoint
    second.fit(x, y, batch_size=64, nb_epochs=3, scheduler=sched, checkpoint_dir=tmp_path, resume=True, seed=5,
               verbose=False)

    for a, b in zip(_params(straight), _params(second)):
        assert torch.equal(a, b)
    assert [h["epoch"] for h in second.history] == [1, 2, 3]
    assert [h["loss"] for h in second.history] == [h["loss"] for h in straight.history]
    assert sched.last_epoch == 3


def test_resume_after_an_interruption(digits, tmp_path):
    x_tr, y_tr, _, _ = digits
    x, y = x_tr[:192], y_tr[:192]
    straight, _ = _resumable()
    straight.fit(x, y, batch_size=64, nb_epochs=2, seed=9, verbose=False)

    def crash(epoch: int, record: dict) -> None:
        if epoch == 0:
            raise KeyboardInterrupt

    trainer, _ = _resumable()
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(x, y, batch_size=64, nb_epochs=2, checkpoint_dir=tmp_path, seed=9, verbose=False, callback=crash)
    assert trainer.get_classifier().model.training is False
    trainer.fit(x, y, batch_size=64, nb_epochs=2, checkpoint_dir=tmp_path, resume=True, seed=9, verbose=False)
    for a, b in zip(_params(straight), _params(trainer)):
        assert torch.equal(a, b)


def test_resume_after_a_kill_in_the_middle_of_an_epoch(digits, tmp_path):
    x_tr, y_tr, _, _ = digits
    x, y = x_tr[:192], y_tr[:192]
    straight, _ = _resumable()
    calls = {"n": 0, "kill_at": None}

    def count_or_die(module, inputs):
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            raise KeyboardInterrupt

    counter = straight.get_classifier().model.register_forward_pre_hook(count_or_die)
    straight.fit(x, y, batch_size=64, nb_epochs=2, seed=9, verbose=False)
    counter.remove()
    # Two equal epochs: three quarters of the forward calls is past epoch 0's checkpoint, inside epoch 1.
    calls.update(kill_at=3 * calls["n"] // 4, n=0)

    trainer, _ = _resumable()
    handle = trainer.get_classifier().model.register_forward_pre_hook(count_or_die)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(x, y, batch_size=64, nb_epochs=2, checkpoint_dir=tmp_path, seed=9, verbose=False)
    handle.remove()
    assert torch.load(tmp_path / LAST, weights_only=True)["epoch"] == 1  # finished epochs: the killed one is lost
    trainer.fit(x, y, batch_size=64, nb_epochs=2, checkpoint_dir=tmp_path, resume=True, seed=9, verbose=False)
    for a, b in zip(_params(straight), _params(trainer)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("make_x, make_y, name", [
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), lambda y: y, "`x`.*NaN"),
    (lambda x: x * 3.0, lambda y: y, "`x`.*clip_values"),
    (lambda x: x[:, :, :4], lambda y: y, "`x`.*shape"),
    (lambda x: x, lambda y: y[:-2], "`y`"),
    (lambda x: x, lambda y: y + 10, "`y`"),
])
def test_bad_training_arrays_are_named(digits, make_x, make_y, name):
    x_tr, y_tr, _, _ = digits
    trainer = WassersteinTRADESTrainer(make_classifier(make_model(width=4)), eps=EPS)
    with pytest.raises(ValueError, match=name):
        trainer.fit(make_x(x_tr[:16]), make_y(y_tr[:16]), nb_epochs=1, verbose=False)


def test_checkpoint_holds_plain_values_only(digits, tmp_path):
    x_tr, y_tr, _, _ = digits
    trainer, sched = _resumable()
    trainer.fit(x_tr[:64], y_tr[:64], batch_size=32, nb_epochs=1, scheduler=sched, checkpoint_dir=tmp_path, seed=0,
                verbose=False)
    state = torch.load(tmp_path / LAST, weights_only=True)
    assert state["epoch"] == 1 and set(state["rng"]) >= {"torch", "numpy", "python", "generator"}
    assert [p.name for p in tmp_path.iterdir()] == [LAST]  # no temp file left behind
    for a, b in zip(state["model"].values(), trainer.get_classifier().model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_file_mode_follows_the_umask(tmp_path, umask):
    # mkstemp's private 0600 made checkpoints unreadable to the group; now they are ordinary files.
    old = os.umask(umask)
    try:
        path = save_checkpoint({"w": torch.ones(2)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert current_umask() == old


def test_resume_without_a_checkpoint_starts_afresh(digits, tmp_path, caplog):
    x_tr, y_tr, _, _ = digits
    trainer, _ = _resumable()
    with caplog.at_level(logging.WARNING, logger="art_wdat.training"):
        history = trainer.fit(x_tr[:32], y_tr[:32], batch_size=32, nb_epochs=1, checkpoint_dir=tmp_path / "new",
                              resume=True, verbose=False)
    assert len(history) == 1 and "No checkpoint" in caplog.text


# -- the ART interface --------------------------------------------------------------------------------------------
def test_fit_generator_trains(digits):
    from art.data_generators import NumpyDataGenerator, PyTorchDataGenerator

    x_tr, y_tr, _, _ = digits
    x, y = x_tr[:128], y_tr[:128]
    clf = make_classifier(make_model(width=8))
    before = _params(WassersteinTRADESTrainer(clf, eps=EPS))
    trainer = WassersteinTRADESTrainer(clf, eps=EPS, max_iter=2)
    history = trainer.fit_generator(NumpyDataGenerator(x, y, batch_size=32, shuffle=True), nb_epochs=2, verbose=False)
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(trainer)))

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=32, shuffle=True)
    history = trainer.fit_generator(PyTorchDataGenerator(loader, size=128, batch_size=32), nb_epochs=1, verbose=False)
    assert len(history) == 1 and history[0]["train_clean_acc"] >= 0


def test_fit_reports_validation_and_leaves_inputs_alone(digits):
    x_tr, y_tr, x_te, y_te = digits
    x, y, xv, yv = x_tr[:96].copy(), y_tr[:96].copy(), x_te[:64].copy(), y_te[:64].copy()
    for arr in (x, y, xv, yv):
        arr.setflags(write=False)
    copies = [a.copy() for a in (x, y, xv, yv)]
    one_hot = np.eye(10, dtype=np.float32)[y]
    one_hot.setflags(write=False)
    # The pointwise row by the autoattack package (val_autoattack_acc); the default's is test_selection's.
    trainer = WassersteinTRADESTrainer(make_classifier(make_model(width=8)), eps=EPS, max_iter=2, eval_max_iter=3,
                                       val_pointwise="autoattack")
    history = trainer.fit(x, one_hot, validation_data=(xv, yv), batch_size=32, nb_epochs=1, verbose=False)
    assert history is trainer.history
    assert set(history[0]) >= {"epoch", "loss", "train_clean_acc", "train_robust_acc", "val_clean_acc",
                               "val_autoattack_acc", "val_wauto_acc", "time_s"}
    # Both attacks start from the clean inputs and keep what is already misclassified: never above clean accuracy.
    assert history[0]["val_wauto_acc"] <= history[0]["val_clean_acc"]
    assert history[0]["val_autoattack_acc"] <= history[0]["val_clean_acc"]
    for arr, orig in zip((x, y, xv, yv), copies):
        np.testing.assert_array_equal(arr, orig)


def test_amp_is_ignored_on_cpu_with_a_warning(digits, caplog):
    x_tr, y_tr, _, _ = digits
    trainer = WassersteinTRADESTrainer(make_classifier(make_model(width=8)), eps=EPS, max_iter=1, amp=True)
    with caplog.at_level(logging.WARNING, logger="art_wdat.training"):
        trainer.fit(x_tr[:32], y_tr[:32], batch_size=32, nb_epochs=1, verbose=False)
    assert "amp" in caplog.text


@pytest.mark.parametrize("kwargs, name", [
    ({"eps": -0.1}, "eps"), ({"p": 0.5}, "p"), ({"beta": -1.0}, "beta"), ({"max_iter": 0}, "max_iter"),
    ({"norm": 3}, "norm"), ({"method": "fgsm"}, "method"), ({"finetune": "reinit"}, "finetune"),
    ({"last_layer": "nope"}, "last_layer"), ({"freeze_except_last": 0}, "freeze_except_last"),
    ({"weight_noise": -0.1}, "weight_noise"), ({"eps_step": -1.0}, "eps_step"), ({"budget_rounds": 0}, "budget_rounds"),
    ({"inner_loss": "ce"}, "inner_loss"), ({"sensitivity_weight": -1.0}, "sensitivity_weight"),
    ({"kl_start_std": -1.0}, "kl_start_std"), ({"eval_max_iter": 0}, "eval_max_iter"),
    ({"select_p": 0.5}, "select_p"), ({"val_pointwise": "apgd"}, "val_pointwise"),
])
def test_bad_constructor_parameters_are_named(kwargs, name):
    params = {"eps": EPS, **kwargs}
    with pytest.raises(ValueError, match=f"`{name}`"):
        WassersteinTRADESTrainer(make_classifier(make_model(width=4)), **params)


@pytest.mark.parametrize("kwargs, name", [({"batch_size": 0}, "batch_size"), ({"nb_epochs": 0}, "nb_epochs"),
                                          ({"resume": True}, "resume"), ({"val_every": 0}, "val_every")])
def test_bad_fit_parameters_are_named(digits, kwargs, name):
    x_tr, y_tr, _, _ = digits
    trainer = WassersteinTRADESTrainer(make_classifier(make_model(width=4)), eps=EPS)
    with pytest.raises(ValueError, match=f"`{name}`"):
        trainer.fit(x_tr[:8], y_tr[:8], verbose=False, **kwargs)


def test_classifier_requirements():
    model = make_model(width=4)
    no_opt = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10)
    with pytest.raises(ValueError, match="optimizer"):
        WassersteinTRADESTrainer(no_opt, eps=EPS)
    with pytest.raises(TypeError):
        WassersteinTRADESTrainer(model, eps=EPS)
    clf = make_classifier(model)
    assert WassersteinTRADESTrainer(clf, eps=EPS).get_classifier() is clf


def test_p_inf_is_trades_whatever_cheapness_weight_says(digits, caplog):
    """p = inf is TRADES: cheapness_weight is ignored there (with a warning), so the weights are TRADES' bitwise."""
    x_tr, y_tr, _, _ = digits
    trained = []
    for weight in (0.0, 5.0):
        trainer = WassersteinTRADESTrainer(make_classifier(make_model(width=4, seed=2), opt="sgd", lr=0.1), eps=EPS,
                                           p=np.inf, max_iter=2, cheapness_weight=weight)
        with caplog.at_level(logging.WARNING, logger="art_wdat.training"):
            trainer.fit(x_tr[:64], y_tr[:64], batch_size=32, nb_epochs=1, seed=4, verbose=False)
        trained.append(_params(trainer))
    assert all(torch.equal(a, b) for a, b in zip(*trained))
    assert "`cheapness_weight`=5 is ignored at `p`=inf" in caplog.text


def test_the_trainer_names_the_attack_for_other_estimators():
    """The trainer trains PyTorch models only; its error says so and names the attack, which takes other estimators."""
    from art.estimators.classification import SklearnClassifier
    from sklearn.linear_model import LogisticRegression

    estimator = SklearnClassifier(LogisticRegression(), clip_values=(0.0, 1.0))
    with pytest.raises(TypeError, match="needs an ART PyTorchClassifier.*WassersteinDistributionalAttack"):
        WassersteinTRADESTrainer(estimator, eps=EPS)
