"""The attack on every ART classifier (issue 26): scikit-learn, a model behind ``predict`` only, a forest, per-feature
boxes, and the bridge's gradients against torch autograd. Exact answers come from a logistic regression, whose
box-constrained ℓ∞ flip cost is computed in closed form (tests/linear_exact.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.estimators.classification import BlackBoxClassifier, SklearnClassifier
from art.estimators.classification.classifier import ClassGradientsMixin, ClassifierMixin
from art.estimators.estimator import BaseEstimator
from sklearn.datasets import load_digits, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from art_wdat import WassersteinDistributionalAttack
from art_wdat.attacks import bridge
from art_wdat.core.knapsack import robust_accuracy_curve
from tests.conftest import wrap
from tests.linear_exact import exact_linf_flip_costs, logistic_scores

N = 150


@pytest.fixture(scope="module")
def digits_flat():
    """scikit-learn's digits as 64 features in [0, 1]: 1,297 to fit, the last 500 held out (shuffled once)."""
    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    x, y = (d.data / 16.0).astype(np.float32)[perm], d.target[perm].astype(np.int64)
    return x[:-500], y[:-500], x[-500:], y[-500:]


@pytest.fixture(scope="module")
def logistic(digits_flat):
    x, y, _, _ = digits_flat
    return LogisticRegression(max_iter=5000).fit(x, y)


def _exact_accuracy(model: LogisticRegression, x: np.ndarray, y: np.ndarray, delta: float, lo=0.0, hi=1.0) -> float:
    costs = exact_linf_flip_costs(*logistic_scores(model), x, y, lo, hi)
    correct = torch.from_numpy(model.predict(x) == y)
    return float(robust_accuracy_curve(torch.from_numpy(costs), 2.0, [delta], correct=correct)[0])


def _w2_linf_cost(x_adv: np.ndarray, x: np.ndarray) -> float:
    norms = np.abs(x_adv.astype(np.float64) - x).reshape(len(x), -1).max(axis=1)
    return float(np.sqrt(np.mean(norms ** 2)))


# -- the bridge's scores and gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [10, 2])
def test_sklearn_scores_are_differentiated_as_class_gradient_says(digits_flat, classes):
    """Multi-class logistic regression: class_gradient is that of log p; binary: that of p (checked here by finite
    differences of the bridge's own scores, which must match its backward either way)."""
    x, y, x_test, _ = digits_flat
    keep = y < classes
    clf = SklearnClassifier(LogisticRegression(max_iter=5000).fit(x[keep], y[keep]), clip_values=(0, 1))
    forward = bridge.forward_fn(clf, x_test[:8])
    assert forward.rule.log and forward.rule.gradient_of_log == (classes > 2)
    xb = torch.from_numpy(x_test[:8].astype(np.float64))
    direction = torch.randn(xb.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = torch.randn(8, classes, generator=torch.Generator().manual_seed(1))
    x_req = xb.float().requires_grad_(True)
    (grad,) = torch.autograd.grad((forward(x_req) * weights).sum(), x_req)
    h = 0.05  # the centred log-probabilities of a logistic regression are linear: no curvature error, less rounding
    diff = (forward((xb + h * direction).float()) - forward((xb - h * direction).float())).double() / (2 * h)
    assert torch.allclose((grad.double() * direction).sum(), (diff * weights).sum(), rtol=2e-3)
    # The scores are the logits up to a constant per input: their differences are the model's.
    logits = clf.model.decision_function(x_test[:8])
    logits = np.stack([-logits, logits], axis=1) / 2 if classes == 2 else logits
    scores = forward(torch.from_numpy(x_test[:8])).double().numpy()
    assert np.allclose(scores - scores.mean(1, keepdims=True), logits - logits.mean(1, keepdims=True), atol=1e-4)


class GradientOnly(ClassGradientsMixin, ClassifierMixin, BaseEstimator):
    """A torch network behind ART's public ``predict`` and ``class_gradient`` only, as a non-torch estimator is."""

    estimator_params = BaseEstimator.estimator_params + ClassifierMixin.estimator_params

    def __init__(self, module: torch.nn.Module, input_shape: tuple, nb_classes: int) -> None:
        super().__init__(model=module, clip_values=(0.0, 1.0))
        self.module, self._input_shape, self.nb_classes = module.eval(), input_shape, nb_classes
        self.class_gradient_calls = 0

    @property
    def input_shape(self) -> tuple:
        return self._input_shape

    def predict(self, x: np.ndarray, batch_size: int = 128, **kwargs) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()

    def class_gradient(self, x: np.ndarray, label=None, **kwargs) -> np.ndarray:
        self.class_gradient_calls += 1
        x_t = torch.from_numpy(np.asarray(x, dtype=np.float32)).requires_grad_(True)
        out = self.module(x_t)
        rows = [torch.autograd.grad(out[:, k].sum(), x_t, retain_graph=True)[0] for k in range(self.nb_classes)]
        return torch.stack(rows, dim=1).numpy()

    def fit(self, x: np.ndarray, y: np.ndarray, **kwargs) -> None:
        raise NotImplementedError


@pytest.fixture(scope="module")
def mlp_pair(digits_flat):
    """The same trained MLP as a PyTorchClassifier and as a predict/class_gradient-only estimator."""
    x, y, _, _ = digits_flat
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    clf = wrap(module, input_shape=(64,), optimizer=torch.optim.Adam(module.parameters(), lr=1e-2))
    clf.fit(x, y, nb_epochs=10, batch_size=64, verbose=False)
    return clf, GradientOnly(module, (64,), 10)


def test_bridge_gradients_equal_autograd_with_one_class_gradient_per_forward(mlp_pair, digits_flat):
    torch_clf, other = mlp_pair
    x = torch.from_numpy(digits_flat[2][:32])
    forward = bridge.forward_fn(other, x.numpy())
    assert bridge.kind_of(other) == "gradients" and not forward.rule.log
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    z_bridge, z_torch = forward(x1), torch_clf.model(x2)
    assert torch.equal(z_bridge, z_torch.detach())
    calls = other.class_gradient_calls
    for k in range(10):  # as the autoattack package's FAB does: one backward per class on one forward
        mask = torch.zeros(32, 10)
        mask[:, k] = 1.0
        (g_bridge,) = torch.autograd.grad(z_bridge, x1, mask, retain_graph=True)
        (g_torch,) = torch.autograd.grad(z_torch, x2, mask, retain_graph=True)
        assert torch.allclose(g_bridge, g_torch, atol=1e-6)
    assert other.class_gradient_calls == calls + 1


@pytest.mark.parametrize("method", ["wpgd", "budget"])
def test_wpgd_through_the_bridge_equals_wpgd_through_pytorch(mlp_pair, digits_flat, method):
    x, y = digits_flat[2][:64], digits_flat[3][:64]
    out = []
    for clf in mlp_pair:
        attack = WassersteinDistributionalAttack(clf, eps=0.5, p=2, norm=2, method=method, max_iter=5,
                                                 batch_size=32, verbose=False)
        out.append((attack.generate(x, y), attack.last_result_))
    (x_torch, r_torch), (x_bridge, r_bridge) = out
    assert np.allclose(x_torch, x_bridge, atol=1e-5)
    assert r_torch.accuracy == pytest.approx(r_bridge.accuracy, abs=1e-9)
    assert r_torch.sensitivity == pytest.approx(r_bridge.sensitivity, rel=1e-5)
    assert r_torch.queries is None and r_bridge.queries is not None


# -- exactness on a logistic regression ------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.02, 0.05])
def test_sklearn_w_autoattack_is_within_a_point_of_exact_and_never_below(logistic, digits_flat, delta):
    x, y = digits_flat[2][:N], digits_flat[3][:N]
    clf = SklearnClassifier(logistic, clip_values=(0, 1))
    attack = WassersteinDistributionalAttack(clf, eps=delta, p=2, norm=np.inf, method="auto", max_iter=10,
                                             batch_size=128, verbose=False)
    x_adv = attack.generate(x, y)
    accuracy, exact = float((logistic.predict(x_adv) == y).mean()), _exact_accuracy(logistic, x, y, delta)
    assert _w2_linf_cost(x_adv, x) <= delta * (1 + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1
    assert exact <= accuracy <= exact + 0.01
    costs = exact_linf_flip_costs(*logistic_scores(logistic), x, y)
    assert (attack.last_result_.flip_costs >= costs * (1 - 1e-9)).all()


def test_blackbox_w_autoattack_is_near_exact_within_the_query_budget(logistic, digits_flat):
    x, y = digits_flat[2][:100], digits_flat[3][:100]
    clf = BlackBoxClassifier(logistic.predict_proba, input_shape=(64,), nb_classes=10, clip_values=(0, 1))
    attack = WassersteinDistributionalAttack(clf, eps=0.05, p=2, norm=np.inf, method="auto", max_queries=5000,
                                             verbose=False)
    x_adv = attack.generate(x, y)
    accuracy, exact = float((logistic.predict(x_adv) == y).mean()), _exact_accuracy(logistic, x, y, 0.05)
    assert _w2_linf_cost(x_adv, x) <= 0.05 * (1 + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1
    assert exact <= accuracy <= exact + 0.015
    result = attack.last_result_
    assert set(result.components) == {"knapsack"}
    assert result.flip_cost_queries is not None and result.flip_cost_queries.max() <= 5000


@pytest.mark.parametrize("classes", [3, 2])
def test_per_feature_boxes_on_tabular_data(classes):
    """Wine's 13 standardised features, each in its own box [min, max] of the data: within a point of exact."""
    data = load_wine()
    x = ((data.data - data.data.mean(0)) / data.data.std(0)).astype(np.float32)
    keep = data.target < classes
    x, y = x[keep], data.target[keep].astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    x, y = x[perm], y[perm]
    lo, hi = x.min(axis=0), x.max(axis=0)
    model = LogisticRegression(C=0.05, max_iter=5000).fit(x[:60], y[:60])
    clf = SklearnClassifier(model, clip_values=(lo, hi))
    x_test, y_test = x[60:], y[60:]
    delta = 0.3
    attack = WassersteinDistributionalAttack(clf, eps=delta, p=2, norm=np.inf, method="auto", max_iter=10,
                                             loss="redlr" if classes > 2 else "ce", verbose=False)
    x_adv = attack.generate(x_test, y_test)
    assert (x_adv >= lo).all() and (x_adv <= hi).all() and _w2_linf_cost(x_adv, x_test) <= delta * (1 + 1e-6)
    exact = _exact_accuracy(model, x_test, y_test, delta, lo, hi)
    accuracy = float((model.predict(x_adv) == y_test).mean())
    assert exact <= accuracy <= exact + 0.01 + 1e-12


# -- a predict-only tree ensemble -------------------------------------------------------------------------------------


def test_random_forest_is_feasible_and_never_weaker_than_hopskipjump(digits_flat):
    from art.attacks.evasion import HopSkipJump

    x, y, x_test, y_test = digits_flat
    forest = RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0).fit(x, y)
    clf = SklearnClassifier(forest, clip_values=(0, 1))
    assert bridge.kind_of(clf) == "predict"
    xs, ys, delta = x_test[:24], y_test[:24], 0.05
    attack = WassersteinDistributionalAttack(clf, eps=delta, p=2, norm=np.inf, method="auto", verbose=False)
    x_adv = attack.generate(xs, ys)
    assert _w2_linf_cost(x_adv, xs) <= delta * (1 + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1
    ours = float((forest.predict(x_adv) == ys).mean())
    np.random.seed(0)
    hsj = HopSkipJump(clf, norm=np.inf, max_iter=5, max_eval=200, init_eval=20, verbose=False).generate(xs)
    inside = np.abs(hsj - xs).max(axis=1) <= delta
    theirs = float(((forest.predict(np.where(inside[:, None], hsj, xs))) == ys).mean())
    assert ours <= theirs
    # Pointwise too: the knapsack at p = inf flips every input whose verified cost is at most δ.
    pointwise = WassersteinDistributionalAttack(clf, eps=delta, p=np.inf, norm=np.inf, method="knapsack",
                                                verbose=False)
    assert float((forest.predict(pointwise.generate(xs, ys)) == ys).mean()) <= theirs


# -- what each estimator can run --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["wpgd", "budget"])
def test_gradient_methods_refuse_a_predict_only_estimator_naming_what_runs(logistic, method):
    clf = BlackBoxClassifier(logistic.predict_proba, input_shape=(64,), nb_classes=10, clip_values=(0, 1))
    with pytest.raises(ValueError, match="'knapsack', 'auto'"):
        WassersteinDistributionalAttack(clf, eps=0.05, method=method)
    attack = WassersteinDistributionalAttack(clf, eps=0.05, method="auto")
    with pytest.raises(ValueError, match="`method`='wpgd'.*'knapsack', 'auto'"):
        attack.set_params(method="wpgd")
    with pytest.raises(ValueError, match="`min_norm`='fab'.*rays"):
        WassersteinDistributionalAttack(clf, eps=0.05, method="auto", min_norm="fab")
    with pytest.raises(ValueError, match="`amp`"):
        WassersteinDistributionalAttack(SklearnClassifier(logistic, clip_values=(0, 1)), eps=0.05, amp=True)


def test_result_repr_is_a_short_summary(logistic, digits_flat):
    clf = SklearnClassifier(logistic, clip_values=(0, 1))
    attack = WassersteinDistributionalAttack(clf, eps=0.05, p=2, method="auto", max_iter=5, verbose=False)
    attack.generate(digits_flat[2][:N], digits_flat[3][:N])
    text = repr(attack.last_result_)
    assert len(text.splitlines()) <= 6 and len(text) < 800
    assert "method='knapsack'" in text and "knapsack" in text and "flip costs" in text and "->" in text
