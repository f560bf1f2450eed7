"""``amp=True``: bf16 gradient passes, float32 budget and float32 counts (CPU autocast, digits fixtures)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from art_wdat import WassersteinDistributionalAttack
from art_wdat.attacks import estimator as est
from art_wdat.core.engine import AttackConfig, GradientPass
from art_wdat.core.losses import redlr
from art_wdat.core.precision import autocast_forward
from art_wdat.core.threat import WassersteinBall
from art_wdat.evaluation import EvaluationSettings, build_attack, evaluate

N = 200


def _cost(x_adv: np.ndarray, x: np.ndarray, p: float, norm: float) -> float:
    norms = np.linalg.norm((x_adv.astype(np.float64) - x).reshape(len(x), -1), ord=norm, axis=1)
    return float(norms.max()) if math.isinf(p) else float(np.mean(norms ** p) ** (1 / p))


def _correct(clf, x: np.ndarray, y: np.ndarray) -> int:
    """Inputs classified correctly by a float32 forward pass (ART's predict)."""
    return int((clf.predict(x).argmax(axis=1) == y).sum())


@pytest.fixture(scope="module")
def held_out(digits):
    _, _, x_test, y_test = digits
    return x_test[:N], y_test[:N]


def _attack(clf, **kwargs) -> WassersteinDistributionalAttack:
    settings = {"eps": 0.1, "p": 2.0, "max_iter": 15, "batch_size": 64, "verbose": False} | kwargs
    return WassersteinDistributionalAttack(clf, **settings)


@pytest.mark.parametrize(("method", "p", "keep_best", "restarts"), [
    ("wpgd", 2.0, True, 0), ("budget", 2.0, True, 0), ("wpgd", 2.0, False, 0), ("wpgd", math.inf, True, 2),
    ("budget", 1.0, True, 1)])
def test_amp_holds_the_budget_and_reports_the_float32_count(digits_clf, held_out, method, p, keep_best, restarts):
    x, y = held_out
    attack = _attack(digits_clf, method=method, p=p, keep_best=keep_best, num_random_init=restarts, amp=True)
    torch.manual_seed(0)
    x_adv = attack.generate(x, y)
    res = attack.last_result_
    assert x_adv.dtype == np.float32 and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert res.cost <= attack.eps
    assert _cost(x_adv, x, p, np.inf) <= attack.eps * (1 + 1e-9)
    # The returned accuracy is the float32 count of what is returned: never under-reported by a bf16 pass.
    assert round(res.accuracy[res.best_iteration] * N) == _correct(digits_clf, x_adv, y)
    if restarts == 0:  # the start is x: its entry is the float32 clean count too
        assert round(res.accuracy[0] * N) == _correct(digits_clf, x, y)
    if not keep_best:
        assert res.best_iteration == attack.max_iter


@pytest.mark.parametrize("method", ["wpgd", "budget"])
def test_amp_accuracy_is_close_to_float32(digits_clf, held_out, method):
    x, y = held_out
    found = {}
    for amp in (False, True):
        x_adv = _attack(digits_clf, method=method, amp=amp).generate(x, y)
        found[amp] = _correct(digits_clf, x_adv, y) / N
    assert found[False] < 0.8  # the attack bites, so the comparison means something
    assert abs(found[True] - found[False]) <= 0.05


def test_amp_sensitivity_is_the_float32_one(digits_clf, held_out):
    x, y = held_out
    results = []
    for amp in (False, True):
        attack = _attack(digits_clf, amp=amp, max_iter=2)
        attack.generate(x, y)
        results.append(attack.last_result_.sensitivity)
    assert results[1] == pytest.approx(results[0], rel=1e-6)


def test_amp_knapsack_and_auto_are_feasible_and_counted_in_float32(digits_clf, held_out):
    x, y = held_out[0][:60], held_out[1][:60]
    attack = _attack(digits_clf, method="auto", eps=0.05, max_iter=5, min_norm="apgd", amp=True)
    x_adv = attack.generate(x, y)
    res = attack.last_result_
    assert res.cost <= attack.eps and _cost(x_adv, x, 2.0, np.inf) <= attack.eps * (1 + 1e-9)
    assert round(res.accuracy[res.best_iteration] * len(x)) == _correct(digits_clf, x_adv, y)
    for name, part in res.components.items():
        assert part.cost <= attack.eps, name


def test_autocast_forward_runs_the_model_in_bf16_and_returns_float32(digits_clf, held_out):
    x = torch.from_numpy(held_out[0][:16])
    forward = est.forward_fn(digits_clf)
    seen = []
    # On the last layer: ART's wrapper calls the Sequential's children one by one.
    hook = digits_clf.model[-1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        out = autocast_forward(forward, torch.device("cpu"))(x)
    finally:
        hook.remove()
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    assert torch.allclose(out, forward(x), atol=0.2, rtol=0.05)


def test_amp_gradient_pass_keeps_float32_gradients(digits_clf, held_out):
    x, y = (torch.from_numpy(a[:32]) for a in held_out)
    cfg = AttackConfig(ball=WassersteinBall(eps=0.1), loss_fn=redlr, eps_step=0.01, max_iter=1, batch_size=8)
    grad = torch.empty_like(x)
    losses, wins = GradientPass(est.forward_fn(digits_clf), y, cfg, torch.device("cpu"), amp=True)(x, grad, 0)
    assert losses.dtype == torch.float32 and grad.dtype == torch.float32 and wins.dtype == torch.bool
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_amp_must_be_a_bool(digits_clf, bad):
    with pytest.raises(TypeError, match="`amp`"):
        _attack(digits_clf, amp=bad)
    attack = _attack(digits_clf)
    with pytest.raises(TypeError, match="`amp`"):
        attack.set_params(amp=bad)


def test_evaluation_settings_pass_amp_to_the_distributional_attacks(digits_clf, held_out):
    settings = EvaluationSettings(amp=True, max_iter=3)
    for name in ("wpgd", "wpgd-budget", "wauto"):
        attack = build_attack(name, digits_clf, 0.1, p=2.0, norm=np.inf, settings=settings)
        assert attack.amp is True
    x, y = held_out[0][:40], held_out[1][:40]
    result = evaluate(digits_clf, x, y, [0.1], attacks="wpgd,wpgd-budget", settings=settings)
    assert result.settings["amp"] is True
    with pytest.raises(TypeError, match="`amp`"):
        evaluate(digits_clf, x, y, [0.1], attacks="wpgd", settings=EvaluationSettings(amp="yes"))
