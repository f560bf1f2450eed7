"""The report's "AutoAttack" row is the ``autoattack`` package's own ``run_standard_evaluation``.

Each test runs :func:`~art_wdat.evaluation.evaluate` with the "autoattack" row only, then the package by hand as a
RobustBench user would (the raw ``nn.Module`` in eval mode, ``AutoAttack(...)``, ``run_standard_evaluation``) on
the same inputs, seed, version and batch size, and requires the same accuracy.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from art_wdat import evaluation
from art_wdat.cli.demo import DemoConfig, load_demo_data, train_demo_model
from art_wdat.evaluation import EvaluationSettings, evaluate

SEED, BATCH = 3, 64


@pytest.fixture(scope="module")
def digits():
    """The demo's SmallCNN trained with pointwise TRADES at reduced size, and held-out digits."""
    torch.set_num_threads(1)
    config = DemoConfig(width=16, n_train=600, n_eval=150, train_epochs=4, train_iter=5)
    x_train, y_train, x_test, y_test = load_demo_data(config)
    clf, _ = train_demo_model(config, x_train, y_train)
    return clf, x_test, y_test


def _row(clf, x, y, eps: float, **settings) -> tuple[float, list]:
    result = evaluate(clf, x, y, [eps], norm=np.inf, attacks="autoattack", seed=SEED,
                      settings=EvaluationSettings(batch_size=BATCH, **settings))
    return result.budgets[0].accuracy("autoattack"), result.notes


def _package(clf, x, y, eps: float, version: str, n_iter: int | None = None) -> float:
    """The package by hand: standard untouched; custom = APGD-CE + APGD-T at the standard's one restart."""
    from autoattack import AutoAttack

    model = clf.model.eval()
    if version == "standard":
        adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=SEED, device="cpu")
    else:
        adversary = AutoAttack(model, norm="Linf", eps=eps, version="custom", attacks=["apgd-ce", "apgd-t"],
                               seed=SEED, device="cpu")
        adversary.apgd.n_restarts = 1
    if n_iter is not None:
        for apgd in (adversary.apgd, adversary.apgd_targeted):  # as APGDAttack.__init__ sets them from n_iter
            apgd.n_iter, apgd.n_iter_2 = n_iter, max(int(0.22 * n_iter), 1)
            apgd.n_iter_min, apgd.size_decr = max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    x_adv, _ = adversary.run_standard_evaluation(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)),
                                                 batch_size=BATCH)
    assert float((x_adv - torch.from_numpy(x)).abs().max()) <= eps + 1e-6
    return float((clf.predict(x_adv.numpy()).argmax(axis=1) == y).mean())


def test_custom_row_equals_the_package(digits):
    clf, x, y = digits
    for eps in (0.05, 0.15):
        ours, notes = _row(clf, x, y, eps)
        assert ours == _package(clf, x, y, eps, "custom")
        print(f"custom, 100 iterations, eps={eps}, {len(x)} digits: ours {ours:.4f}")
    assert any("version 'custom' (100 iterations)" in n and "Not RobustBench's protocol" in n for n in notes)


def test_custom_row_with_fewer_iterations_equals_the_package(digits):
    clf, x, y = digits
    ours, notes = _row(clf, x, y, 0.1, autoattack_max_iter=5)
    assert ours == _package(clf, x, y, 0.1, "custom", n_iter=5)
    assert any("version 'custom' (5 iterations)" in n for n in notes)


def test_standard_row_equals_the_package(digits):
    """Standard AutoAttack, untouched (100 iterations, FAB-T, Square 5000 queries), on 20 digits."""
    clf, x, y = digits
    x, y = x[:20], y[:20]
    start = time.perf_counter()
    ours, notes = _row(clf, x, y, 0.1, autoattack_version="standard")
    seconds = time.perf_counter() - start
    assert ours == _package(clf, x, y, 0.1, "standard")
    print(f"standard, eps=0.1, 20 digits: ours {ours:.4f} ({seconds:.1f} s)")
    assert any("version 'standard' (100 iterations)" in n and "leaderboard protocol" in n for n in notes)


def test_custom_is_never_stronger_than_standard_and_apgd_art_is_a_separate_row(digits):
    clf, x, y = digits
    x, y = x[:20], y[:20]
    custom, _ = _row(clf, x, y, 0.1)
    standard, _ = _row(clf, x, y, 0.1, autoattack_version="standard")
    assert standard <= custom
    result = evaluate(clf, x, y, [0.1], attacks="apgd-art,autoattack", seed=SEED,
                      settings=EvaluationSettings(max_iter=5, batch_size=BATCH, autoattack_max_iter=5))
    assert result.attacks == ["autoattack", "apgd-art"] and "apgd-art" not in evaluation.ATTACKS
    assert "APGD (ART)" in result.to_markdown()
    assert any(n.startswith("APGD (ART) = ART AutoAttack with APGD-CE + APGD-DLR") for n in result.notes)
    assert result.settings["autoattack_version"] == "custom"


def test_bad_version_and_box(digits):
    clf, x, y = digits
    with pytest.raises(ValueError, match="autoattack_version"):
        evaluate(clf, x, y, [0.1], attacks="autoattack", settings=EvaluationSettings(autoattack_version="plus"))
    from art_wdat.zoo import make_classifier

    wide = make_classifier(clf.model, clf.input_shape, clf.nb_classes, clip_values=(0.0, 2.0))
    # Another box: the package (which clips to [0, 1]) is left out of the report, with the reason.
    report = evaluate(wide, x, y, [0.1], attacks="autoattack")
    assert report.attacks == [] and any("AutoAttack skipped" in note and "[0, 1]" in note for note in report.notes)
