"""Plausibility checks: a budget on the wrong scale, a wrong ``nb_classes``, data that does not fit the model.

Each is refused with a message that names the parameter, before any attack or training runs; a huge budget is
accepted when the caller opts in with ``allow_large_eps=True``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from art_wdat import cli
from art_wdat.attacks.spec import check_eps_scale, eps_limit
from art_wdat.attacks.wasserstein import WassersteinDistributionalAttack
from art_wdat.training.trainer import WassersteinTRADESTrainer
from tests.conftest import digits_cnn, wrap


def classifier(nb_classes: int = 10, clip=(0.0, 1.0)):
    model = digits_cnn()
    return wrap(model, nb_classes=nb_classes, optimizer=torch.optim.Adam(model.parameters()),
                **({} if clip == (0.0, 1.0) else {"clip_values": clip}))


def test_limits_per_norm():
    shape = (1, 8, 8)  # d = 64
    assert eps_limit(math.inf, (0.0, 1.0), shape)[0] == 0.5
    assert eps_limit(2.0, (0.0, 1.0), shape)[0] == pytest.approx(8.0)
    assert eps_limit(1.0, (0.0, 1.0), shape)[0] == 64.0
    assert eps_limit(math.inf, (-1.0, 1.0), shape)[0] == 1.0
    # Per-feature bounds (tabular data): the box's own diameter.
    assert eps_limit(2.0, (np.zeros(3), np.array([1.0, 2.0, 2.0])), (3,))[0] == pytest.approx(3.0)
    check_eps_scale(100.0, "inf", None, shape)  # no box: nothing to judge


@pytest.mark.parametrize("norm, eps, limit", [(np.inf, 8.0, "0.5"), (2, 9.0, "8"), (1, 65.0, "64")])
def test_attack_refuses_a_budget_on_the_wrong_scale(norm, eps, limit):
    clf = classifier()
    with pytest.raises(ValueError, match=rf"`eps`={eps:g} is larger than {limit}\b.*8/255.*allow_large_eps=True"):
        WassersteinDistributionalAttack(clf, eps=eps, norm=norm, verbose=False)
    attack = WassersteinDistributionalAttack(clf, eps=eps, norm=norm, verbose=False, allow_large_eps=True)
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    assert attack.generate(x).shape == x.shape
    # ART's set_params checks the new values too.
    small = WassersteinDistributionalAttack(clf, eps=8 / 255, norm=norm, max_iter=1, verbose=False)
    with pytest.raises(ValueError, match="`eps`"):
        small.set_params(eps=eps)


def test_trainer_refuses_a_budget_on_the_wrong_scale():
    clf = classifier()
    with pytest.raises(ValueError, match=r"`eps`=8 is larger than 0.5.*allow_large_eps"):
        WassersteinTRADESTrainer(clf, eps=8)
    WassersteinTRADESTrainer(clf, eps=8, allow_large_eps=True)
    with pytest.raises(TypeError, match="allow_large_eps"):
        WassersteinTRADESTrainer(clf, eps=0.1, allow_large_eps="yes")


def test_nb_classes_must_be_the_model_outputs():
    clf = classifier(nb_classes=20)
    for build in (lambda: WassersteinDistributionalAttack(clf, eps=0.1, verbose=False),
                  lambda: WassersteinTRADESTrainer(clf, eps=0.1)):
        with pytest.raises(ValueError, match=r"`nb_classes`=20 but its model returns 10 outputs"):
            build()


def test_nb_classes_check_leaves_rng_and_mode_alone():
    clf = classifier()
    clf.model.train()
    torch.manual_seed(3)
    WassersteinDistributionalAttack(clf, eps=0.1, verbose=False)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1)) and clf.model.training


# -- the command line ---------------------------------------------------------------------------------------


@pytest.fixture()
def npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "digits_like.npz"
    np.savez(path, x_test=rng.random((8, 1, 8, 8), dtype=np.float32), y_test=rng.integers(0, 10, 8),
             x_train=rng.random((8, 1, 8, 8), dtype=np.float32), y_train=rng.integers(0, 10, 8))
    cifar = tmp_path / "cifar_like.npz"
    np.savez(cifar, x_test=np.zeros((4, 3, 32, 32), np.float32), y_test=np.zeros(4, int),
             x_train=np.zeros((4, 3, 32, 32), np.float32), y_train=np.zeros(4, int))
    return path, cifar


def one_line_error(argv, capsys) -> str:
    code = cli.main([*argv, "--threads", "1", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_cli_refuses_a_budget_on_the_wrong_scale(npz, tmp_path, capsys):
    data, _ = npz
    err = one_line_error(["evaluate", "--model", str(_checkpoint(tmp_path)), "--dataset", f"npz:{data}",
                          "--eps", "2/255,8", "--attacks", "wpgd"], capsys)
    assert "--eps=8 is larger than 0.5" in err and "8/255" in err
    err = one_line_error(["finetune", "--model", str(_checkpoint(tmp_path)), "--dataset", f"npz:{data}",
                          "--eps", "8", "--out", str(tmp_path / "out.pt")], capsys)
    assert "--eps=8 is larger than 0.5" in err and not (tmp_path / "out.pt").exists()


def test_cli_opt_in_lets_a_large_budget_through(npz, tmp_path, capsys):
    from art_wdat import cli

    data, _ = npz
    out = tmp_path / "large"
    code = cli.main(["evaluate", "--model", str(_checkpoint(tmp_path)), "--dataset", f"npz:{data}", "--eps", "0.8",
                     "--attacks", "wpgd", "--max-iter", "2", "--n-samples", "8", "--allow-large-eps", "--quiet",
                     "--out", str(out)])
    assert code == 0 and (out / "report.json").is_file()
    assert "0.8" in (out / "report.md").read_text()
    assert "--allow-large-eps" in one_line_error(["evaluate", "--model", str(_checkpoint(tmp_path)), "--dataset",
                                                  f"npz:{data}", "--eps", "0.8", "--attacks", "wpgd"], capsys)


def test_cli_checks_shapes_before_training_the_demo_model(npz, tmp_path, capsys, monkeypatch):
    from art_wdat.cli import demo

    _, cifar = npz
    monkeypatch.setattr(demo, "train_demo_model", lambda *a, **k: pytest.fail("the demo model was trained"))
    for command in (["evaluate"], ["finetune", "--out", str(tmp_path / "out.pt")]):
        err = one_line_error([*command, "--model", "demo", "--dataset", f"npz:{cifar}"], capsys)
        assert "expects inputs of shape (1, 8, 8)" in err and "(3, 32, 32)" in err


def _checkpoint(tmp_path):
    from art_wdat.zoo import SmallCNN, save_checkpoint_model

    model = SmallCNN(1, 10, 8, width=4)
    return save_checkpoint_model(tmp_path / "ckpt.pt", model, model.state_dict(),
                                 {"input_shape": [1, 8, 8], "nb_classes": 10})


def test_cli_refuses_a_wrong_budget_for_the_demo_model_before_training(npz, tmp_path, capsys, monkeypatch):
    from art_wdat.cli import demo

    monkeypatch.setattr(demo, "train_demo_model", lambda *a, **k: pytest.fail("the demo model was trained"))
    out = tmp_path / "out.pt"
    for argv, option in ((["finetune", "--eps", "8", "--out", str(out)], "--eps"),
                         (["finetune", "--eps", "0.1", "--pointwise-eps", "8", "--out", str(out)], "--pointwise-eps"),
                         (["evaluate", "--eps", "0.1,8"], "--eps")):
        err = one_line_error([*argv, "--model", "demo", "--dataset", "digits"], capsys)
        assert f"{option}=8 is larger than 0.5" in err and "--allow-large-eps" in err
    assert not out.exists()


def test_cli_names_a_named_data_set_that_does_not_fit_before_loading_it(tmp_path, capsys, monkeypatch):
    from art_wdat.cli import demo, loading

    monkeypatch.setattr(demo, "train_demo_model", lambda *a, **k: pytest.fail("the demo model was trained"))
    monkeypatch.setattr(loading, "load_data", lambda *a, **k: pytest.fail("the data was loaded"))
    err = one_line_error(["evaluate", "--model", "demo", "--dataset", "cifar10", "--data-dir", str(tmp_path)], capsys)
    assert "does not fit the model" in err and "(1, 8, 8)" in err and "(3, 32, 32)" in err


def _no_download(monkeypatch):
    import art_wdat.zoo

    monkeypatch.setattr(art_wdat.zoo, "load_robustbench", lambda *a, **k: pytest.fail("the weights were loaded"))


def test_cli_names_a_robustbench_model_that_does_not_fit_the_data(npz, tmp_path, capsys, monkeypatch):
    from art_wdat.cli import loading

    _no_download(monkeypatch)
    monkeypatch.setattr(loading, "load_data", lambda *a, **k: pytest.fail("the data was loaded"))
    models = ["--model-dir", str(tmp_path / "models")]
    err = one_line_error(["evaluate", "--model", "rb:Standard", "--dataset", "digits", *models], capsys)
    assert "the data set does not fit the model" in err and "rb:Standard is a RobustBench cifar10 model" in err
    assert "(3, 32, 32)" in err and "digits has inputs of shape (1, 8, 8)" in err and "offline" not in err
    err = one_line_error(["finetune", "--model", "rb:Standard", "--dataset", "cifar100", "--out",
                          str(tmp_path / "o.pt"), *models], capsys)
    assert "10 classes" in err and "cifar100 has 100 classes" in err
    err = one_line_error(["evaluate", "--model", "rb:Augustin2020Adversarial", "--dataset", "cifar10",
                          "--threat-model", "Linf", *models], capsys)
    assert "L2, not Linf" in err and "--threat-model L2" in err
    # npz data is known once loaded: still before the download.
    monkeypatch.undo()
    _no_download(monkeypatch)
    err = one_line_error(["evaluate", "--model", "rb:Standard", "--dataset", f"npz:{npz[0]}", *models], capsys)
    assert "does not fit the model" in err and "inputs of shape (1, 8, 8)" in err


def test_robustbench_zoo_follows_the_name_and_the_data():
    from art_wdat.cli.checks import InputFacts, RobustBenchZoo, choose_robustbench_zoo

    cifar_like = InputFacts((3, 32, 32), 10, None, "npz")
    assert choose_robustbench_zoo("Standard", "npz:x", None, cifar_like) == RobustBenchZoo("cifar10", "Linf")
    assert choose_robustbench_zoo("Standard", "cifar10", "l2", None) == RobustBenchZoo("cifar10", "l2")
    # A threat model not given is the one the name is filed under.
    assert choose_robustbench_zoo("Augustin2020Adversarial", "cifar10", None, None).threat_model == "L2"
    # Filed under CIFAR-10 and CIFAR-100: the data set picks.
    assert choose_robustbench_zoo("Hendrycks2019Using", "cifar100", None, None).dataset == "cifar100"
    hundred = InputFacts((3, 32, 32), 57, None, "npz")  # labels up to 56: only the CIFAR-100 model fits
    assert choose_robustbench_zoo("Hendrycks2019Using", "npz:x", None, hundred).dataset == "cifar100"
    assert choose_robustbench_zoo("NoSuchModel2024", "cifar10", None, None) is None


def test_cli_checks_a_checkpoint_against_the_data_set_before_loading_it(tmp_path, capsys, monkeypatch):
    from art_wdat.cli import loading

    monkeypatch.setattr(loading, "load_data", lambda *a, **k: pytest.fail("the data was loaded"))
    ckpt = str(_checkpoint(tmp_path))
    err = one_line_error(["evaluate", "--model", ckpt, "--dataset", "cifar10", "--data-dir", str(tmp_path)], capsys)
    assert "does not fit the model" in err and "expects inputs of shape (1, 8, 8) but cifar10 has (3, 32, 32)" in err
    err = one_line_error(["evaluate", "--model", ckpt, "--dataset", "digits", "--eps", "8"], capsys)
    assert "--eps=8 is larger than 0.5" in err
