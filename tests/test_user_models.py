"""Bring your own model: FILE.py:FACTORY (+ --weights), TorchScript, torch.export, the shared real models.

Each form is built in ``tmp_path`` from a tiny model, loaded through :mod:`art_wdat.zoo.user` and run end to end
through ``art-wdat evaluate`` (and ``finetune`` for a factory). Files that are not models say what they are.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from art_wdat import cli
from art_wdat.zoo.user import (
    FactorySpec,
    load_user_module,
    model_file_kind,
    output_width,
    parse_factory_spec,
    read_state_dict,
    saved_file_hint,
    wrap_user_module,
)
from tests.conftest import SHARED_CIFAR

SHARED_MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
SHAPE = (3, 4, 4)
FACTORY = '''
import torch


def make(classes="3", seed="0"):
    torch.manual_seed(int(seed))
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, int(classes)))
'''


def tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 3)).eval()


def run(argv, capsys) -> tuple[int, str, str]:
    code = cli.main([*argv, "--threads", "1", "-q"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def files(tmp_path):
    """A factory file, weights for it (another seed), TorchScript and torch.export files of them, npz data."""
    (tmp_path / "net.py").write_text(FACTORY)
    model = tiny(seed=7)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates TorchScript; users still have such files
        torch.jit.save(torch.jit.script(model), tmp_path / "scripted.pt")
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.zeros(2, *SHAPE),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "exported.pt2")
    torch.export.save(torch.export.export(model, (torch.zeros(1, *SHAPE),)), tmp_path / "fixed.pt2")
    rng = np.random.default_rng(0)
    x = rng.random((12, *SHAPE), dtype=np.float32)
    np.savez(tmp_path / "data.npz", x_test=x, y_test=rng.integers(0, 3, 12), x_train=x, y_train=rng.integers(0, 3, 12))
    return tmp_path, model


# -- the spec -------------------------------------------------------------------------------------------


def test_factory_spec_syntax():
    assert parse_factory_spec("a/zoo.py:load:resnet2b,directory=m") == FactorySpec(
        Path("a/zoo.py"), "load", ("resnet2b",), {"directory": "m"})
    assert parse_factory_spec("net.py:make") == FactorySpec(Path("net.py"), "make")
    assert parse_factory_spec("model.pt") is None and parse_factory_spec("rb:Name") is None
    for bad, fragment in (("net.py", "net.py:make_model"), ("net.py:1x", "function name"),
                          ("net.py:make:a,,b", "argument")):
        with pytest.raises(ValueError, match=fragment):
            parse_factory_spec(bad)


# -- each form, through the library -------------------------------------------------------------------------


def test_every_form_gives_the_same_logits(files):
    tmp, model = files
    x = torch.rand(5, *SHAPE)
    expected = model(x)
    assert [model_file_kind(tmp / f) for f in ("weights.pt", "scripted.pt", "exported.pt2")] == [
        "torch.save", "torchscript", "export"]
    for spec, weights in ((f"{tmp}/net.py:make", tmp / "weights.pt"), (str(tmp / "scripted.pt"), None),
                          (str(tmp / "exported.pt2"), None), (str(tmp / "scripted.pt"), tmp / "weights.pt")):
        module = load_user_module(spec, weights)
        torch.testing.assert_close(module(x), expected, msg=spec)
        clf = wrap_user_module(module, SHAPE)
        assert clf.nb_classes == 3 and tuple(clf.input_shape) == SHAPE
    # Factory arguments are strings, passed positionally or by name.
    assert output_width(load_user_module(f"{tmp}/net.py:make:5"), SHAPE) == 5
    assert output_width(load_user_module(f"{tmp}/net.py:make:classes=4"), SHAPE) == 4


def test_weights_nested_or_from_data_parallel(files):
    tmp, model = files
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               tmp / "nested.pt")
    assert read_state_dict(tmp / "nested.pt").keys() == model.state_dict().keys()


def test_bad_model_files_say_what_they_are(files):
    tmp, model = files
    torch.save(model, tmp / "pickled.pt")
    hint = saved_file_hint(tmp / "pickled.pt")
    assert "pickled model" in hint and "--weights" in hint and "\x1b" not in hint
    assert "state_dict" in saved_file_hint(tmp / "weights.pt") and "FILE.py:FACTORY" in saved_file_hint(
        tmp / "weights.pt")
    with pytest.raises(ValueError, match="dynamic batch"):
        load_user_module(str(tmp / "fixed.pt2"))
    torch.save(tiny().state_dict() | {"extra.weight": torch.zeros(1)}, tmp / "more.pt")
    with pytest.raises(ValueError, match="do not fit the model.*extra.weight"):
        load_user_module(f"{tmp}/net.py:make", tmp / "more.pt")
    with pytest.raises(ValueError, match=r"inputs of shape \(1, 4, 4\)"):
        output_width(load_user_module(f"{tmp}/net.py:make"), (1, 4, 4))
    with pytest.raises(AttributeError, match="no function 'build'"):
        load_user_module(f"{tmp}/net.py:build")


# -- the command line ---------------------------------------------------------------------------------------


EVAL = ["--eps", "2/255", "--attacks", "pgd,wpgd", "--max-iter", "2", "--n-samples", "8"]


def test_cli_evaluates_every_form(files, capsys):
    tmp, _ = files
    data = ["--dataset", f"npz:{tmp / 'data.npz'}"]
    accuracies = []
    for model in ([f"{tmp}/net.py:make", "--weights", str(tmp / "weights.pt")], [str(tmp / "scripted.pt")],
                  [str(tmp / "exported.pt2")]):
        code, out, err = run(["evaluate", "--model", *model, *data, *EVAL, "--out", str(tmp / "ev")], capsys)
        assert code == 0, err
        assert "W-PGD" in out
        accuracies.append(json.loads((tmp / "ev" / "report.json").read_text())["clean_accuracy"])
    assert accuracies[0] == accuracies[1] == accuracies[2]  # the same network in three forms
    norm = ["--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]
    code, _, err = run(["evaluate", "--model", f"{tmp}/net.py:make", *norm, *data, *EVAL], capsys)
    assert code == 0, err


def test_cli_finetunes_a_factory_model_to_weights(files, capsys):
    tmp, _ = files
    data = ["--dataset", f"npz:{tmp / 'data.npz'}"]
    code, out, err = run(["finetune", "--model", f"{tmp}/net.py:make", "--weights", str(tmp / "weights.pt"), *data,
                          "--out", str(tmp / "tuned.pt"), "--eps", "2/255", "--max-iter", "1", "--batch-size", "6"],
                         capsys)
    assert code == 0, err
    assert f"--model {tmp}/net.py:make --weights {tmp / 'tuned.pt'}" in out
    assert read_state_dict(tmp / "tuned.pt").keys() == tiny().state_dict().keys()
    code, _, err = run(["evaluate", "--model", f"{tmp}/net.py:make", "--weights", str(tmp / "tuned.pt"), *data,
                        *EVAL], capsys)
    assert code == 0, err


def test_cli_errors_name_the_form(files, capsys):
    tmp, model = files
    torch.save(model, tmp / "pickled.pt")
    data = ["--dataset", f"npz:{tmp / 'data.npz'}", *EVAL]
    cases = [
        (["--model", str(tmp / "weights.pt")], "holds a state_dict"),
        (["--model", str(tmp / "pickled.pt")], "pickled model"),
        (["--model", f"{tmp}/missing.py:make"], "no python file"),
        (["--model", str(tmp / "scripted.pt"), "--mean", "0.5"], "--mean and --std go together"),
        (["--model", f"{tmp}/net.py:make", "--mean", "0.5,0.5", "--std", "1,1"], "3 channels"),
        (["--model", "demo", "--weights", str(tmp / "weights.pt")], "--weights goes with"),
        (["--model", f"{tmp}/net.py:make:7", "--weights", str(tmp / "weights.pt")], "do not fit"),
    ]
    for argv, fragment in cases:
        code, _, err = run(["evaluate", *argv, *data], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and fragment in lines[0], (argv, err)
        assert "\x1b" not in err


# -- the two real models in ../shared/models ----------------------------------------------------------------


@pytest.mark.skipif(not ((SHARED_MODELS / "zoo.py").is_file() and SHARED_CIFAR.is_file()),
                    reason="../shared/models and ../shared/data are absent")
@pytest.mark.parametrize("name", ["resnet2b", "cnn_a_adv"])
def test_cli_evaluates_the_shared_models(name, tmp_path, capsys):
    argv = ["evaluate", "--model", f"{SHARED_MODELS / 'zoo.py'}:load:{name}", "--dataset", f"npz:{SHARED_CIFAR}",
            "--eps", "2/255", "--attacks", "pgd", "--max-iter", "3", "--n-samples", "16", "--out", str(tmp_path)]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n_samples"] == 16 and report["clean_accuracy"] >= 0.25  # a real model: far above chance
    assert f"zoo.py:load:{name}" in out
