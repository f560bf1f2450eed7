"""W-AutoAttack (``method="auto"``) and ``method="knapsack"`` through the ART attack: feasibility, domination."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from art_wdat import WassersteinDistributionalAttack
from art_wdat.core.knapsack import robust_accuracy_curve
from art_wdat.evaluation import EvaluationSettings, build_attack
from tests.conftest import digits_cnn, wrap

N = 120


def _cost(x_adv: np.ndarray, x: np.ndarray, p: float, norm: float) -> float:
    norms = np.linalg.norm((x_adv.astype(np.float64) - x).reshape(len(x), -1), ord=norm, axis=1)
    return float(norms.max()) if math.isinf(p) else float(np.mean(norms ** p) ** (1 / p))


def _accuracy(clf, x: np.ndarray, y: np.ndarray) -> float:
    return float((clf.predict(x).argmax(axis=1) == y).mean())


@pytest.fixture(scope="module")
def held_out(digits):
    _, _, x_test, y_test = digits
    return x_test[:N], y_test[:N]


@pytest.mark.parametrize("method", ["knapsack", "auto"])
@pytest.mark.parametrize(("p", "norm"), [(2.0, np.inf), (1.0, np.inf), (np.inf, np.inf), (2.0, 2)])
def test_feasible_in_the_box_and_callers_arrays_untouched(digits_clf, held_out, method, p, norm):
    x, y = held_out
    x_before, y_before = x.copy(), y.copy()
    eps = 0.05 if norm == np.inf else 0.5
    attack = WassersteinDistributionalAttack(digits_clf, eps=eps, p=p, norm=norm, method=method, max_iter=10,
                                             batch_size=64, verbose=False)
    x_adv = attack.generate(x, y)
    assert _cost(x_adv, x, p, float(norm)) <= eps * (1 + 1e-6)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.array_equal(x, x_before) and np.array_equal(y, y_before)
    res = attack.last_result_
    assert res.accuracy[res.best_iteration] == pytest.approx(_accuracy(digits_clf, x_adv, y), abs=1e-9)
    assert res.flip_costs is not None and res.flip_costs.shape == (N,)


def test_auto_dominates_its_parts_and_apgd_and_beats_wpgd(digits_clf, held_out):
    x, y = held_out
    eps = 0.02  # small: the knapsack's advantage is largest where few inputs can be flipped
    auto = WassersteinDistributionalAttack(digits_clf, eps=eps, p=2, method="auto", max_iter=20, batch_size=64,
                                           verbose=False)
    acc_auto = _accuracy(digits_clf, auto.generate(x, y), y)
    parts = auto.last_result_.components
    assert set(parts) == {"knapsack", "wpgd", "budget"}
    assert acc_auto <= min(part.accuracy for part in parts.values()) + 1e-12
    for method in ("wpgd", "budget"):
        alone = WassersteinDistributionalAttack(digits_clf, eps=eps, p=2, method=method, max_iter=20, batch_size=64,
                                                verbose=False)
        assert acc_auto <= _accuracy(digits_clf, alone.generate(x, y), y)
    apgd = build_attack("apgd-art", digits_clf, eps, p=2.0, norm=math.inf, settings=EvaluationSettings(max_iter=20))
    assert acc_auto <= _accuracy(digits_clf, apgd.generate(x, y), y)
    wpgd_alone = parts["wpgd"].accuracy
    assert acc_auto < wpgd_alone, "the knapsack should flip strictly more inputs than W-PGD at a small budget"


def test_flip_costs_are_reused_across_budgets_and_give_the_curve(digits_clf, held_out, monkeypatch):
    x, y = held_out
    attack = WassersteinDistributionalAttack(digits_clf, eps=0.02, p=2, method="knapsack", max_iter=5, batch_size=64,
                                             verbose=False, refine=False)
    attack.generate(x, y)
    costs = attack.last_result_.flip_costs
    calls = []
    import art_wdat.attacks.auto as auto

    monkeypatch.setattr(auto, "min_norm_costs", lambda *a, **k: calls.append(1))
    for eps in (0.01, 0.04):
        attack.set_params(eps=eps, refine=True)
        x_adv = attack.generate(x, y)
        curve = float(robust_accuracy_curve(torch.from_numpy(costs), 2.0, [eps])[0])
        # W-PGD on the rest may flip more than the knapsack set, never fewer.
        assert _accuracy(digits_clf, x_adv, y) <= curve + 1e-12
        # Refined near this budget's threshold: never above the first pass's costs.
        assert (attack.last_result_.flip_costs <= costs).all()
    assert not calls


@pytest.mark.parametrize("kwargs", [dict(targeted=True, loss="ce"), dict(loss="kl"), dict(min_norm="deepfool")])
def test_bad_settings_are_refused(digits_clf, kwargs):
    with pytest.raises(ValueError, match="method|min_norm"):
        WassersteinDistributionalAttack(digits_clf, eps=0.1, method="knapsack", verbose=False, **kwargs)


@pytest.mark.parametrize("box", ["per-feature", "none"])
def test_any_box_or_none(digits_clf, held_out, box):
    """Per-feature clip_values, or none: the flip costs, the knapsack and W-AutoAttack keep every point in the box."""
    from art.estimators.classification import PyTorchClassifier

    x, y = held_out
    lo = np.where(np.arange(64).reshape(1, 8, 8) % 2 == 0, 0.0, 0.1).astype(np.float32)
    x = np.maximum(x, lo)  # inside the box
    clip = (lo, np.full((1, 8, 8), 0.9, dtype=np.float32)) if box == "per-feature" else None
    if clip is not None:
        x = np.minimum(x, clip[1])
    clf = PyTorchClassifier(digits_clf.model, torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                            clip_values=clip)
    attack = WassersteinDistributionalAttack(clf, eps=0.05, p=2, method="auto", max_iter=5, verbose=False)
    x_adv = attack.generate(x, y)
    assert _cost(x_adv, x, 2.0, math.inf) <= 0.05 * (1 + 1e-6)
    if clip is not None:
        assert (x_adv >= clip[0]).all() and (x_adv <= clip[1]).all()
    assert _accuracy(clf, x_adv, y) < _accuracy(clf, x, y)
    assert np.isfinite(attack.last_result_.flip_costs).sum() > N // 2


def test_trainer_refuses_the_evaluation_only_method(digits_clf):
    """W-AutoAttack picks the strongest of several attacks after the fact: not an inner solver ("knapsack", the
    knapsack-informed allocation, is one: tests/test_trainer_variants.py)."""
    from art_wdat import WassersteinTRADESTrainer

    model = digits_cnn()
    clf = wrap(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    with pytest.raises(ValueError, match="method"):
        WassersteinTRADESTrainer(clf, eps=0.1, method="auto")


@pytest.mark.parametrize(("norm", "eps"), [(np.inf, 0.05), (2, 0.5)])
def test_at_p_inf_auto_is_never_weaker_than_the_packages_apgd(digits_clf, held_out, norm, eps):
    """At p = ∞ (the pointwise threat) W-AutoAttack holds the package's APGD-CE + APGD-DLR at ε = δ as a candidate,
    so it is at least as strong as that APGD run by the package itself with the same seed and iterations."""
    from art_wdat.evaluation.autoattack import set_iterations
    from art_wdat.zoo.robustbench_compat import ensure_autoattack_alias

    x, y = held_out
    max_iter = 10
    auto = WassersteinDistributionalAttack(digits_clf, eps=eps, p=np.inf, norm=norm, method="auto", max_iter=max_iter,
                                           batch_size=64, verbose=False)
    x_auto = auto.generate(x, y)
    assert _cost(x_auto, x, math.inf, float(norm)) <= eps * (1 + 1e-6)
    assert set(auto.last_result_.components) == {"knapsack", "wpgd", "budget", "apgd"}
    package = ensure_autoattack_alias()
    adversary = package.AutoAttack(digits_clf.model.eval(), norm="Linf" if norm == np.inf else "L2", eps=eps,
                                   version="custom", attacks=["apgd-ce", "apgd-dlr"], seed=0, device="cpu")
    adversary.apgd.n_restarts = 1
    set_iterations(adversary, max_iter)
    x_apgd, _ = adversary.run_standard_evaluation(torch.from_numpy(x), torch.from_numpy(y), batch_size=64)
    acc_apgd = _accuracy(digits_clf, x_apgd.numpy(), y)
    assert auto.last_result_.components["apgd"].accuracy == pytest.approx(acc_apgd, abs=1e-12)
    assert _accuracy(digits_clf, x_auto, y) <= acc_apgd + 1e-12
