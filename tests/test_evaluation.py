"""The side-by-side evaluation: rows agree with direct attack calls, bounds are ordered, JSON round-trips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from art_wdat import evaluation
from art_wdat.attacks.wasserstein import WassersteinDistributionalAttack
from art_wdat.cli.demo import DemoConfig, load_demo_data, train_demo_model
from art_wdat.evaluation import EvaluationResult, EvaluationSettings, accuracy_curve, evaluate
from art_wdat.training.checkpoint import seed_everything

BUDGETS = [0.05, 0.15]
SETTINGS = EvaluationSettings(max_iter=5, batch_size=64, autoattack_max_iter=5)


@pytest.fixture(scope="module")
def demo_model():
    """The demo's SmallCNN trained with pointwise TRADES, at reduced size (a few seconds)."""
    config = DemoConfig(width=16, n_train=600, n_eval=150, train_epochs=4, train_iter=5)
    x_train, y_train, x_test, y_test = load_demo_data(config)
    clf, _ = train_demo_model(config, x_train, y_train)
    return clf, x_test, y_test


@pytest.fixture(scope="module")
def result(demo_model) -> EvaluationResult:
    clf, x, y = demo_model
    return evaluate(clf, x, y, BUDGETS, p=2.0, seed=3, settings=SETTINGS, meta={"model": "demo"})


def test_accuracies_in_range_and_costs_within_budget(result):
    assert 0.5 < result.clean_accuracy <= 1.0
    assert result.attacks == list(evaluation.ATTACKS)
    for row in result.budgets:
        assert set(row.attacks) == set(evaluation.ATTACKS)
        for outcome in row.attacks.values():
            assert 0.0 <= outcome.accuracy <= 1.0
            # Every attack lies in the W_2 ball of radius δ; the slack is two float32 ulps at 1.0, since the
            # attacks return float32 inputs in [0, 1] and the cost is measured on them.
            assert outcome.cost <= row.budget * (1 + 1e-6) + 2.5e-7
            assert outcome.seconds >= 0
        assert row.clean_accuracy == result.clean_accuracy


def test_upper_bound_is_above_lower_bound(result):
    for row in result.budgets:
        assert 0.0 <= row.r_lower <= 1.0
        assert row.r_upper >= row.r_lower
        assert row.r_upper == pytest.approx(min(o.accuracy for o in row.attacks.values()) / result.clean_accuracy)
        assert row.r_upper == pytest.approx(row.accuracy(row.best_attack) / result.clean_accuracy)


def _direct_attack(name: str, clf, budget: float):
    """The attacks as a user would build them from ART and art_wdat, with the settings of SETTINGS."""
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, ProjectedGradientDescent

    if name == "pgd":
        return ProjectedGradientDescent(clf, norm=np.inf, eps=budget, eps_step=2.5 * budget / 5, max_iter=5,
                                        num_random_init=1, batch_size=64, verbose=False)
    if name == "autoattack":
        from art_wdat.evaluation.autoattack import PackageAutoAttack

        return PackageAutoAttack(clf, eps=budget, norm=np.inf, version="custom", max_iter=5, batch_size=64, seed=3)
    if name == "apgd-art":
        runs = [AutoProjectedGradientDescent(clf, norm=np.inf, eps=budget, eps_step=2 * budget, max_iter=5,
                                             nb_random_init=1, batch_size=64, loss_type=loss, verbose=False)
                for loss in ("cross_entropy", "difference_logits_ratio")]
        return AutoAttack(clf, norm=np.inf, eps=budget, eps_step=2 * budget, attacks=runs, batch_size=64)
    method = {"wpgd": "wpgd", "wpgd-budget": "budget", "wauto": "auto"}[name]
    return WassersteinDistributionalAttack(clf, eps=budget, p=2.0, norm=np.inf, method=method, max_iter=5,
                                           loss="redlr", batch_size=64, budget_rounds=5, verbose=False)


@pytest.mark.parametrize("name", evaluation.ALL_ATTACKS)
def test_rows_agree_with_direct_calls(demo_model, result, name):
    clf, x, y = demo_model
    budget = BUDGETS[-1]
    if name not in result.attacks:  # "apgd-art" runs on request only
        assert name == "apgd-art"
        result = evaluate(clf, x, y, [budget], p=2.0, seed=3, settings=SETTINGS, attacks=name)
    attack = _direct_attack(name, clf, budget)
    seed_everything(3)
    x_adv = attack.generate(x, y)
    direct = float((clf.predict(x_adv).argmax(axis=1) == y).mean())
    assert result.budgets[-1].accuracy(name) == direct


def test_bound_row_agrees_with_metrics(demo_model, result):
    from art_wdat.evaluation import metrics

    clf, x, y = demo_model
    stats = metrics.clean_statistics(clf, x, y, p=2.0, loss="redlr")
    assert (result.v0, result.w0, result.sensitivity) == pytest.approx((stats.v0, stats.w0, stats.sensitivity))
    row = result.budgets[0]
    low = metrics.lower_bound(clf, x, y, row.budget, p=2.0, loss="redlr", stats=stats)
    assert row.r_lower == pytest.approx(low.r_lower)


def test_w_autoattack_is_the_strongest_row_and_gives_r_upper(result):
    for row in result.budgets:
        assert row.accuracy("wauto") <= min(row.accuracy(name) for name in evaluation.ATTACKS)
        assert row.best_attack == "wauto" or row.accuracy(row.best_attack) == row.accuracy("wauto")
        assert row.r_upper == pytest.approx(row.accuracy("wauto") / result.clean_accuracy)


def test_json_round_trip_and_markdown(result, tmp_path):
    text = result.to_json()
    again = EvaluationResult.from_json(text)
    assert again.to_json() == text
    assert math.isinf(again.norm) and again.budgets[0].attacks["pgd"].accuracy == result.budgets[0].accuracy("pgd")
    md = result.to_markdown(title="demo")
    for name in ("PGD", "AutoAttack", "W-PGD", "W-PGD-Budget", "W-AutoAttack", "R^u", "R^l", "Wall time"):
        assert name in md
    assert len(result.rows()) == len(BUDGETS) * len(evaluation.ATTACKS)
    table = evaluation.compare_markdown(result, again, ("a", "b"))
    assert "| 0.05 | W-PGD | " in table and "+0.0000" in table

    from art_wdat.evaluation.plotting import plot_accuracy

    png = plot_accuracy({"before": result, "after": again}, tmp_path / "sub" / "curve.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the knapsack's whole curve from W-AutoAttack's flip costs ---------------------------------------------


def test_accuracy_curve_numpy_helper():
    costs = np.array([0.0, 0.1, 0.2, np.inf, 0.05])  # one misclassified, one never flipped
    assert evaluation.accuracy_curve(costs, 2, [0.0, 0.05, 1.0]).tolist() == pytest.approx([0.8, 0.4, 0.2])
    # p = inf flips every input of cost ≤ δ; the shape of `deltas` is kept.
    out = evaluation.accuracy_curve(costs, math.inf, np.array([[0.05, 0.1], [0.15, np.inf]]))
    assert out.shape == (2, 2) and out.ravel().tolist() == pytest.approx([0.6, 0.4, 0.4, 0.2])
    # No budget, however large (δ^p overflowing included), flips an input of infinite cost.
    assert evaluation.accuracy_curve(costs, 2, [1e300, np.inf]).tolist() == [0.2, 0.2]
    # `correct` overrides the zero-cost convention: a wrong input counts as wrong whatever its cost.
    assert evaluation.accuracy_curve(costs, 1, [0.0], correct=np.array([0, 1, 1, 1, 0])).tolist() == [0.6]
    for bad, match in (((costs[:, None], 2, [0.1]), "vector"), ((costs, 0.5, [0.1]), "p"),
                       ((costs, 2, [-0.1]), "deltas"), ((costs, 2, [np.nan]), "deltas"),
                       ((-costs, 2, [0.1]), "costs")):
        with pytest.raises(ValueError, match=match):
            evaluation.accuracy_curve(*bad)


def test_knapsack_curve_bounds_w_autoattack(result):
    curve = result.curve
    assert curve is not None and list(curve.accuracy) == ["1", "2", "inf"]
    assert set(BUDGETS) <= set(curve.deltas) and curve.deltas == sorted(curve.deltas) and curve.deltas[0] == 0.0
    assert curve.deltas[-1] == pytest.approx(1.5 * max(BUDGETS)) and len(curve.deltas) >= 31
    assert len(curve.sorted_costs) == result.n_samples and curve.source_budget == BUDGETS[0]
    assert not curve.per_255  # one-channel digits: δ is not read in k/255
    costs = np.array(curve.sorted_costs)
    for order, values in curve.accuracy.items():
        assert values == evaluation.accuracy_curve(costs, float(order), curve.deltas).tolist()
        assert values == sorted(values, reverse=True)  # more budget never flips fewer inputs
        assert values[0] == pytest.approx(result.clean_accuracy, abs=1e-12)  # δ = 0: the misclassified only
    # The W_q ball lies inside the W_p ball for p ≤ q: a larger order never flips more.
    acc = np.array([curve.accuracy[q] for q in ("1", "2", "inf")])
    assert (np.diff(acc, axis=0) >= 0).all()
    for row in result.budgets:
        # W-AutoAttack contains the knapsack (then leftover W-PGD, W-PGD and W-PGD-Budget): never above its curve.
        assert row.accuracy("wauto") <= curve.at(2.0, row.budget)


def test_knapsack_curve_equals_the_knapsack_alone(demo_model, result):
    from art_wdat.attacks.knapsack import knapsack_attack
    from art_wdat.attacks.spec import ThreatSpec

    clf, x, y = demo_model
    budget = BUDGETS[-1]
    seed_everything(3)  # the seed of `result`: the first pass's flip costs are the same
    _, alone = knapsack_attack(clf, x, y, ThreatSpec(eps=budget, p=2.0), leftover_steps=False)
    # The evaluation refined them near its budgets' thresholds: never higher, input by input (so sorted too).
    assert (np.array(result.curve.sorted_costs) <= np.sort(alone.costs)).all()
    assert result.curve.at(2.0, budget) <= alone.accuracy + 1e-12
    curve = accuracy_curve(np.array(result.curve.sorted_costs), 2.0, [budget])
    assert curve[0] == pytest.approx(result.curve.at(2.0, budget), abs=1e-12)


def test_knapsack_curve_round_trip_markdown_and_plot(result, tmp_path):
    again = EvaluationResult.from_json(result.to_json())
    assert again.curve == result.curve and again.to_json() == result.to_json()
    md = result.to_markdown()
    assert "Knapsack curve" in md and "| budget δ | p = 1 | p = 2 | p = inf |" in md
    row = f"| 0.15 | {result.curve.at(1, 0.15):.4f} | {result.curve.at(2, 0.15):.4f} | " \
          f"{result.curve.at(math.inf, 0.15):.4f} |"
    assert row in md

    from art_wdat.evaluation.plotting import plot_knapsack_curve

    png = plot_knapsack_curve({"a": result, "b": again}, tmp_path / "k" / "knapsack_curve.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_knapsack_curve(result, tmp_path / "k255.png", per_255=True).is_file()
    no_curve = EvaluationResult.from_dict({**result.to_dict(), "curve": None})
    with pytest.raises(ValueError, match="no knapsack curve"):
        plot_knapsack_curve(no_curve, tmp_path / "none.png")


SHARDS = (37, 23)  # unequal on purpose


def _evaluate_wauto_shard(rank: int, world: int, tmp: str) -> None:
    from tests.ranks import digits_shard

    clf, x, y = digits_shard(tmp, rank, SHARDS)
    result = evaluate(clf, x, y, [0.03], p=2.0, attacks="wauto", settings=SETTINGS, seed=0)
    (Path(tmp) / f"report{rank}.json").write_text(result.to_json())


def test_knapsack_curve_across_ranks_is_the_curve_of_the_union(tmp_path, digits_clf, digits):
    from tests.ranks import errors, spawn

    torch.save(digits_clf.model.state_dict(), tmp_path / "model.pt")
    _, _, x, y = digits
    x, y = x[:sum(SHARDS)], y[:sum(SHARDS)]
    np.savez(tmp_path / "data.npz", x=x, y=y)
    assert spawn(_evaluate_wauto_shard, len(SHARDS), tmp_path) == [True, True], errors(tmp_path, len(SHARDS))
    reports = [EvaluationResult.from_json((tmp_path / f"report{r}.json").read_text()) for r in range(len(SHARDS))]
    assert reports[0].curve == reports[1].curve  # every rank reports the curve of all of them
    curve, wrong = reports[0].curve, int((digits_clf.predict(x).argmax(axis=1) != y).sum())
    assert len(curve.sorted_costs) == sum(SHARDS) and curve.sorted_costs.count(0.0) == wrong
    assert curve.at(2.0, 0.0) == pytest.approx(1 - wrong / sum(SHARDS), abs=1e-12)
    assert reports[0].budgets[0].accuracy("wauto") <= curve.at(2.0, 0.03)


def test_subset_zero_budget_and_reproducibility(demo_model):
    clf, x, y = demo_model
    x, y = x[:60], y[:60]
    first = evaluate(clf, x, y, [0.0, 0.1], attacks="wpgd,pgd", seed=1, settings=SETTINGS)
    assert first.attacks == ["pgd", "wpgd"]
    assert first.curve is None  # no W-AutoAttack, no flip costs
    zero = first.budgets[0]
    assert all(o.accuracy == first.clean_accuracy for o in zero.attacks.values())
    assert zero.r_upper == pytest.approx(1.0) and zero.r_lower == pytest.approx(1.0)
    second = evaluate(clf, x, y, [0.0, 0.1], attacks=["pgd", "wpgd"], seed=1, settings=SETTINGS)
    assert [r["accuracy"] for r in first.rows()] == [r["accuracy"] for r in second.rows()]


def test_l1_ground_norm_runs_every_attack_within_its_budget(demo_model):
    clf, x, y = demo_model
    x, y = x[:60], y[:60]
    budget = 1.5  # ℓ1 on 8x8 images in [0, 1]
    result = evaluate(clf, x, y, [budget], p=2.0, norm=1, seed=0, settings=SETTINGS)
    row = result.budgets[0]
    assert set(row.attacks) == set(evaluation.ATTACKS)
    for name, outcome in row.attacks.items():
        assert outcome.cost <= budget * (1 + 1e-6) + 1e-5, name  # W_2 cost under the ℓ1 ground norm
        assert 0.0 <= outcome.accuracy <= result.clean_accuracy
    assert row.attacks["wauto"].accuracy <= row.attacks["wpgd"].accuracy
    assert result.curve is not None and "1" in result.curve.accuracy


def test_bad_arguments(demo_model):
    clf, x, y = demo_model
    with pytest.raises(ValueError, match="unknown attack"):
        evaluate(clf, x, y, [0.1], attacks="fgsm")
    with pytest.raises(ValueError, match=">= 0"):
        evaluate(clf, x, y, [-0.1])
    with pytest.raises(ValueError, match="norm"):
        evaluate(clf, x, y, [0.1], norm=3)
    with pytest.raises(ValueError, match="shape"):
        evaluate(clf, x[:, :, :4], y, [0.1])
    with pytest.raises(ValueError, match="apgd_art_losses"):
        evaluate(clf, x, y, [0.1], attacks="apgd-art", settings=EvaluationSettings(apgd_art_losses=("x",)))


def test_binary_model_uses_the_two_class_margin():
    from art_wdat.zoo import make_classifier

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    clf = make_classifier(model, (1, 2, 2), 2)
    rng = np.random.default_rng(0)
    x, y = rng.random((30, 1, 2, 2), dtype=np.float32), rng.integers(0, 2, 30)
    res = evaluate(clf, x, y, [0.1], settings=SETTINGS)
    assert res.settings["wpgd_loss"] == "remargin" and res.settings["bound_loss"] == "remargin"
    assert any("3 classes" in n and "remargin" in n for n in res.notes)
    assert all(0.0 <= o.accuracy <= 1.0 for o in res.budgets[0].attacks.values())


def test_evaluate_takes_any_classifier_and_says_what_it_skipped():
    """scikit-learn's logistic regression runs every attack asked for (through its gradients); a forest runs
    W-AutoAttack alone, the other columns and R^l are left out with their reasons."""
    from art.estimators.classification import SklearnClassifier
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target
    linear = SklearnClassifier(LogisticRegression(max_iter=3000).fit(x[:1200], y[:1200]), clip_values=(0, 1))
    result = evaluate(linear, x[1200:1260], y[1200:1260], [0.05], p=2, attacks=["pgd", "wpgd", "wauto"],
                      settings=SETTINGS)
    row = result.budgets[0]
    assert result.attacks == ["pgd", "wpgd", "wauto"] and not any("skipped" in n for n in result.notes)
    assert row.accuracy("wauto") <= min(row.accuracy("pgd"), row.accuracy("wpgd"))
    assert 0.0 <= row.r_lower <= 1.0 and result.sensitivity > 0
    forest = RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(x[:1200], y[:1200])
    trees = SklearnClassifier(forest, clip_values=(0, 1))
    result = evaluate(trees, x[1200:1240], y[1200:1240], [0.05], p=2, settings=SETTINGS)
    assert result.attacks == ["wauto"] and math.isnan(result.budgets[0].r_lower)
    skipped = [n for n in result.notes if "skipped" in n]
    assert len(skipped) == 5 and all("ScikitlearnRandomForestClassifier" in n for n in skipped)
    assert result.budgets[0].accuracy("wauto") < result.clean_accuracy
    assert "W-AutoAttack" in result.to_markdown() and "PGD skipped" in result.to_markdown()


def test_results_print_as_short_summaries(digits_clf, digits):
    """``repr`` of an evaluation and of its curve stays a few lines, whatever the number of inputs."""
    x, y = digits[2][:40], digits[3][:40]
    res = evaluate(digits_clf, x, y, [0.05, 0.1], attacks=("wpgd", "wauto"), settings=SETTINGS)
    text = repr(res)
    assert text.startswith("EvaluationResult(") and len(text.splitlines()) <= 2 + len(res.budgets)
    assert "W-AutoAttack" in text and len(text) < 800
    assert res.curve is not None and len(repr(res.curve)) < 200 and "40 inputs" in repr(res.curve)
