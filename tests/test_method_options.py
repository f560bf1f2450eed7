"""``method="knapsack"`` and ``"auto"`` honour ``eps_step`` and ``num_random_init`` in the leftover's W-PGD, and
refuse ``max_device_bytes`` instead of ignoring it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from art_wdat import WassersteinDistributionalAttack
from art_wdat.attacks import estimator as est
from art_wdat.attacks import knapsack as knapsack_module
from art_wdat.attacks.flip_costs import FlipCosts, predict_labels
from art_wdat.attacks.knapsack import BUDGET_MARGIN, LeftoverRun, knapsack_torch
from art_wdat.attacks.spec import ThreatSpec

N = 60


@pytest.fixture(scope="module")
def data(digits):
    _, _, x_test, y_test = digits
    return x_test[:N], y_test[:N]


def _no_flips(forward, x: torch.Tensor, y: torch.Tensor) -> FlipCosts:
    """Flip costs where no input was flipped (all inf): the whole budget is left to the W-PGD."""
    correct = predict_labels(forward, x) == y
    costs = torch.where(correct, torch.full((len(x),), torch.inf, dtype=torch.float64),
                        torch.zeros(len(x), dtype=torch.float64))
    return FlipCosts(costs, x.clone(), correct)


@pytest.fixture
def spy(monkeypatch):
    """Records the settings of every engine run the knapsack starts, and runs it."""
    calls = []
    real = knapsack_module.run_distribution_attack

    def run(forward, x, target, cfg, **kwargs):
        calls.append({"cfg": cfg, **kwargs})
        return real(forward, x, target, cfg, **kwargs)

    monkeypatch.setattr(knapsack_module, "run_distribution_attack", run)
    return calls


def _leftover(digits_clf, data, threat: ThreatSpec, run: LeftoverRun = LeftoverRun()):
    forward = est.forward_fn(digits_clf)
    x, y = (torch.from_numpy(a) for a in data)
    costs = _no_flips(forward, x, y)
    return x, knapsack_torch(forward, x, y, threat, costs, clip=est.clip_box(digits_clf, torch.device("cpu")),
                             batch_size=32, leftover_run=run)[0]


def test_leftover_wpgd_takes_eps_step_scaled_to_its_ball(digits_clf, data, spy):
    eps, alpha = 0.1, 0.004
    _leftover(digits_clf, data, ThreatSpec(eps=eps, max_iter=5, eps_step=alpha))
    (call,) = spy
    radius = call["cfg"].ball.eps
    n_rest = int((predict_labels(est.forward_fn(digits_clf), torch.from_numpy(data[0])) ==
                  torch.from_numpy(data[1])).sum())
    assert radius == pytest.approx(eps * (N / n_rest) ** 0.5 * (1 - BUDGET_MARGIN), rel=1e-12)
    assert call["cfg"].eps_step == pytest.approx(alpha * radius / eps, rel=1e-12)


def test_leftover_wpgd_with_zero_step_does_not_move(digits_clf, data, spy):
    x, x_adv = _leftover(digits_clf, data, ThreatSpec(eps=0.1, max_iter=3, eps_step=0.0))
    assert torch.equal(x_adv, x)
    x, x_adv = _leftover(digits_clf, data, ThreatSpec(eps=0.1, max_iter=3))
    assert not torch.equal(x_adv, x)


def test_leftover_wpgd_takes_random_starts_and_amp(digits_clf, data, spy):
    torch.manual_seed(0)
    x, x_adv = _leftover(digits_clf, data, ThreatSpec(eps=0.1, max_iter=3), LeftoverRun(num_random_init=2, amp=True))
    (call,) = spy
    assert call["restarts"] == 2 and call["start"] is not None and call["cfg"].amp is True
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    start = call["start"](x)
    assert float(start.min()) >= 0.0 and float(start.max()) <= 1.0
    assert float((start - x).abs().max()) <= call["cfg"].ball.eps + 1e-7


@pytest.mark.parametrize("method", ["knapsack", "auto"])
def test_attack_hands_its_settings_to_the_leftover(digits_clf, data, spy, monkeypatch, method):
    x, y = data
    attack = WassersteinDistributionalAttack(digits_clf, eps=0.05, method=method, max_iter=3, eps_step=0.01,
                                             num_random_init=2, amp=True, verbose=False)
    # No solver pass: every input unflipped, so the leftover is the whole budget.
    monkeypatch.setattr(attack, "_costs", lambda fwd, xt, yt, clip: (_no_flips(fwd, xt, yt), 0.0))
    torch.manual_seed(0)
    x_adv = attack.generate(x, y)
    call = spy[0]
    assert call["restarts"] == 2 and call["cfg"].amp is True
    assert call["cfg"].eps_step == pytest.approx(0.01 * call["cfg"].ball.eps / 0.05, rel=1e-12)
    assert attack.last_result_.cost <= 0.05 and x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("method", ["knapsack", "auto"])
def test_max_device_bytes_is_refused_where_it_cannot_apply(digits_clf, method):
    with pytest.raises(ValueError, match="`max_device_bytes`"):
        WassersteinDistributionalAttack(digits_clf, eps=0.05, method=method, max_device_bytes=2**30, verbose=False)
    attack = WassersteinDistributionalAttack(digits_clf, eps=0.05, max_device_bytes=2**30, verbose=False)
    with pytest.raises(ValueError, match="`max_device_bytes`"):
        attack.set_params(method=method)
    # The default (None) is what these methods run with.
    WassersteinDistributionalAttack(digits_clf, eps=0.05, method=method, verbose=False)


def test_max_device_bytes_still_streams_the_step_methods(digits_clf, data):
    x, y = data
    runs = [WassersteinDistributionalAttack(digits_clf, eps=0.1, max_iter=3, verbose=False,
                                            max_device_bytes=limit).generate(x, y) for limit in (None, 1024)]
    np.testing.assert_array_equal(runs[0], runs[1])
