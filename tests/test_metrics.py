"""Metrics of METHOD.md §6: Υ, V(0), W(0), R^u, R^l; the first-order prediction is exact for linear losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from art_wdat.attacks.wasserstein import WassersteinDistributionalAttack
from art_wdat.core.threat import conjugate
from art_wdat.evaluation import metrics
from art_wdat.zoo import make_classifier

SHAPE = (3, 2, 2)
N_CLASSES = 4


def label_logit(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """J(x, y) = z_y(x), the logit of the label.

    With a linear model z = Wx + b this loss is linear in x, ∇_x J = W[y] for every x, so the W-FGSM step
    raises the mean loss by exactly δ·Υ: V(δ) = V(0) + δΥ holds with no o(δ) term. (Cross-entropy of a
    linear model is NOT linear in x, because of the log-sum-exp, and neither are DLR or ReDLR.)
    """
    return logits.gather(1, labels.unsqueeze(1)).squeeze(1)


def linear_classifier(seed: int = 0, clip_values=None):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(SHAPE)), N_CLASSES))
    return make_classifier(model, SHAPE, N_CLASSES, clip_values=clip_values)


@pytest.fixture(scope="module")
def linear_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, *SHAPE)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, size=64)
    return x, y


def analytic_sensitivity(clf, y: np.ndarray, p: float, norm: float) -> float:
    """Υ for J = z_y of a linear model: the q-power mean of ‖W[y_i]‖_s."""
    weight = clf.model[1].weight.detach().double().numpy()
    s, q = conjugate(norm), conjugate(p)
    norms = np.linalg.norm(weight[y], ord=s, axis=1)
    return float(norms.max()) if math.isinf(q) else float(np.mean(norms ** q) ** (1 / q))


@pytest.mark.parametrize("p", [2.0, math.inf, 1.5])
@pytest.mark.parametrize("norm", [math.inf, 2.0])
@pytest.mark.parametrize("clip", [None, (-50.0, 50.0)], ids=["no-box", "loose-box"])
def test_first_order_prediction_is_exact_for_a_linear_loss(linear_data, p, norm, clip):
    x, y = linear_data
    clf = linear_classifier(clip_values=clip)
    delta = 0.3
    stats = metrics.clean_statistics(clf, x, y, p=p, norm=norm, loss=label_logit)
    assert stats.sensitivity == pytest.approx(analytic_sensitivity(clf, y, p, norm), rel=1e-5)
    achieved = metrics.wfgsm_mean_loss(clf, x, y, delta, p=p, norm=norm, loss=label_logit)
    assert achieved == pytest.approx(stats.first_order_value(delta), rel=1e-5, abs=1e-5)
    # ...and the step is not trivial: the loss moved by δΥ.
    assert achieved - stats.v0 == pytest.approx(delta * stats.sensitivity, rel=1e-4)


def test_sensitivity_matches_the_attack(digits_clf, digits):
    """Υ from the metrics equals the Υ the W-PGD attack reports at its start point (same loss, p, norm)."""
    _, _, x, y = digits
    x, y = x[:100], y[:100]
    attack = WassersteinDistributionalAttack(digits_clf, eps=0.1, p=2.0, max_iter=1, loss="redlr", verbose=False)
    attack.generate(x, y)
    ups = metrics.sensitivity(digits_clf, x, y, p=2.0, norm=np.inf, loss="redlr")
    assert ups == pytest.approx(attack.last_result_.sensitivity, rel=1e-5)


def test_clean_statistics_definitions(digits_clf, digits):
    _, _, x, y = digits
    x, y = x[:200], y[:200]
    stats = metrics.clean_statistics(digits_clf, x, y, loss="ce")
    pred = digits_clf.predict(x).argmax(axis=1)
    logits = torch.from_numpy(digits_clf.predict(x))
    ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y), reduction="none").numpy()
    assert stats.clean_accuracy == pytest.approx((pred == y).mean())
    assert stats.v0 == pytest.approx(ce.mean(), rel=1e-5)
    assert stats.n_misclassified == int((pred != y).sum()) > 0
    assert stats.w0 == pytest.approx(ce[pred != y].mean(), rel=1e-5)
    assert stats.w0_source == "misclassified"
    # ReDLR is 0 on every misclassified input, so its W(0) is exactly 0.
    assert metrics.clean_statistics(digits_clf, x, y, loss="redlr").w0 == 0.0


def test_w0_when_nothing_is_misclassified(linear_data):
    x, _ = linear_data
    clf = linear_classifier()
    y = clf.predict(x).argmax(axis=1)  # every input classified correctly
    redlr = metrics.clean_statistics(clf, x, y, loss="redlr")
    assert (redlr.n_misclassified, redlr.w0, redlr.w0_source) == (0, 0.0, "zero-on-misclassified")
    ce = metrics.clean_statistics(clf, x, y, loss="ce")
    assert math.isnan(ce.w0) and ce.w0_source == "undefined"
    assert math.isnan(metrics.lower_ratio(ce, 0.1, ce.v0 + 0.1).r_lower)
    given = metrics.clean_statistics(clf, x, y, loss="ce", w0=5.0)
    assert (given.w0, given.w0_source) == (5.0, "given")


def _stats(v0: float, w0: float, ups: float) -> metrics.CleanStatistics:
    return metrics.CleanStatistics(n=10, clean_accuracy=0.8, v0=v0, w0=w0, w0_source="given", sensitivity=ups,
                                   n_misclassified=2, p=2.0, norm=math.inf, loss="x")


def test_lower_ratio_formula_and_guards():
    low = metrics.lower_ratio(_stats(v0=-1.0, w0=0.0, ups=2.0), delta=0.25, q_loss=-0.6)
    assert low.r_bar == pytest.approx((0 + 1 - 0.5) / 1)  # (W − V − δΥ)/(W − V)
    assert low.r_tilde == pytest.approx((0 + 0.6) / 1)  # (W − E_Q J)/(W − V)
    assert low.r_lower == pytest.approx(0.5)
    # Clamped into [0, 1]; W(0) = V(0) (e.g. everything misclassified) gives NaN, not a ZeroDivisionError.
    assert metrics.lower_ratio(_stats(-1.0, 0.0, 10.0), 1.0, -0.5).r_lower == 0.0
    assert math.isnan(metrics.lower_ratio(_stats(0.0, 0.0, 1.0), 0.1, 0.0).r_lower)
    assert metrics.lower_ratio(_stats(-1.0, 0.0, 2.0), 0.0, -1.0).r_lower == 1.0


def test_upper_ratio():
    assert metrics.upper_ratio(0.4, 0.8) == pytest.approx(0.5)
    assert math.isnan(metrics.upper_ratio(0.0, 0.0))


def test_lower_bound_one_call(digits_clf, digits):
    _, _, x, y = digits
    low = metrics.lower_bound(digits_clf, x[:100], y[:100], 0.05)
    assert 0.0 <= low.r_lower <= 1.0
    assert low.r_lower == min(max(min(low.r_bar, low.r_tilde), 0.0), 1.0)


def test_bad_inputs(linear_data):
    x, y = linear_data
    clf = linear_classifier()
    with pytest.raises(ValueError, match="labels"):
        metrics.clean_statistics(clf, x, None)
    with pytest.raises(ValueError, match="one value per sample"):
        metrics.clean_statistics(clf, x, y, loss=lambda z, t: z.sum())
    with pytest.raises(ValueError, match="norm"):
        metrics.clean_statistics(clf, x, y, norm=3)
    with pytest.raises(TypeError):
        metrics.clean_statistics(object(), x, y)


def test_a_scikit_learn_model_has_the_metrics_of_the_same_weights_in_torch():
    """Through the bridge a logistic regression's scores are its logits up to a constant per input, to which ReDLR
    is blind: A, V(0), W(0), Υ and R^l equal those of the same weights as a torch linear model."""
    from art.estimators.classification import SklearnClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.random((120, 12)).astype(np.float32)
    y = (x[:, :4].argmax(axis=1) + (rng.random(120) < 0.2)) % 4
    model = LogisticRegression(max_iter=2000).fit(x, y)
    linear = torch.nn.Linear(12, 4)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(model.coef_))
        linear.bias.copy_(torch.from_numpy(model.intercept_))
    twin = make_classifier(linear, (12,), 4, clip_values=(0.0, 1.0))
    ours = metrics.clean_statistics(SklearnClassifier(model, clip_values=(0, 1)), x, y, p=2, norm=np.inf)
    reference = metrics.clean_statistics(twin, x, y, p=2, norm=np.inf)
    assert ours.clean_accuracy == reference.clean_accuracy and ours.n_misclassified > 0
    for name in ("v0", "w0", "sensitivity"):
        assert getattr(ours, name) == pytest.approx(getattr(reference, name), rel=1e-4), name
    low = metrics.lower_bound(SklearnClassifier(model, clip_values=(0, 1)), x, y, 0.05, p=2, stats=ours)
    assert low.r_lower == pytest.approx(metrics.lower_bound(twin, x, y, 0.05, p=2, stats=reference).r_lower,
                                        abs=1e-4)


def test_a_predict_only_classifier_gets_no_sensitivity():
    from art.estimators.classification import BlackBoxClassifier

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(12, 4))
    clf = BlackBoxClassifier(lambda v: v @ weights, input_shape=(12,), nb_classes=4, clip_values=(0, 1))
    x = rng.random((40, 12)).astype(np.float32)
    y = (x @ weights).argmax(axis=1)
    stats = metrics.clean_statistics(clf, x, y)
    assert stats.clean_accuracy == 1.0 and math.isnan(stats.sensitivity)
    with pytest.raises(ValueError, match="'knapsack', 'auto'"):
        metrics.wfgsm_mean_loss(clf, x, y, 0.1)
