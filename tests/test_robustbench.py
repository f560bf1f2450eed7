"""RobustBench integration, offline: the import fix-ups, zoo models loaded from local files, and errors.

No test touches the network: zoo architectures get random weights that are saved where robustbench looks
for its checkpoints, and the one download test replaces robustbench's downloader by a failing stub.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from art_wdat.zoo import (
    ModelUnavailableError,
    build_zoo_architecture,
    load_local_checkpoint,
    load_robustbench,
    robustbench_checkpoint_path,
    save_checkpoint_model,
)
from art_wdat.zoo.robustbench_compat import AUTOATTACK_SUBMODULES, ensure_autoattack_alias, import_robustbench

REPO_ROOT = Path(__file__).resolve().parents[1]
# A cheap cifar10/Linf zoo entry: a plain ResNet-18 (robustbench's default "Standard" is a WRN-28-10).
SMALL_ZOO_NAME = "Addepalli2022Efficient_RN18"
# A zoo entry that robustbench 1.1.1 loads through timm (pretrained weights from the Hugging Face hub).
TIMM_ZOO_NAME = "Debenedetti2022Light_XCiT-S12"


def _run_python(code: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter from the repository root (so that ``art_wdat`` imports)."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT)] + ([str(extra_path)] if extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def small_zoo_model() -> torch.nn.Module:
    """The small zoo architecture with (seeded) random weights."""
    torch.manual_seed(0)
    return build_zoo_architecture(SMALL_ZOO_NAME, "cifar10", "Linf").eval()


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------
# robustbench_compat
# ---------------------------------------------------------------------------------------------------


def test_importing_the_package_does_not_import_robustbench() -> None:
    result = _run_python(
        """
        import sys
        import art_wdat.robustbench_compat, art_wdat.models, art_wdat.data
        heavy = [m for m in ("robustbench", "autoattack", "pyautoattack", "timm") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    assert result.returncode == 0, result.stderr


def test_import_robustbench_aliases_pyautoattack_idempotently() -> None:
    rb = import_robustbench()
    assert import_robustbench() is rb
    assert hasattr(rb.utils, "load_model")
    import autoattack

    try:
        import pyautoattack
    except ImportError:  # a real autoattack is installed: nothing was aliased
        return
    if autoattack is pyautoattack:
        for name in AUTOATTACK_SUBMODULES:
            assert sys.modules[f"autoattack.{name}"] is sys.modules[f"pyautoattack.{name}"]
        from autoattack import AutoAttack
        from autoattack.state import EvaluationState

        assert AutoAttack is pyautoattack.AutoAttack
        assert EvaluationState.__module__ == "pyautoattack.state"


def test_real_autoattack_package_wins(tmp_path: Path) -> None:
    fake = tmp_path / "autoattack"
    fake.mkdir()
    (fake / "__init__.py").write_text("REAL = True\n")
    result = _run_python(
        """
        from art_wdat.zoo.robustbench_compat import ensure_autoattack_alias
        module = ensure_autoattack_alias()
        assert getattr(module, "REAL", False), module
        assert ensure_autoattack_alias() is module
        """,
        extra_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_broken_real_autoattack_is_not_masked(tmp_path: Path) -> None:
    """A real autoattack failing on its own dependency must report that, not be replaced silently."""
    fake = tmp_path / "autoattack"
    fake.mkdir()
    (fake / "__init__.py").write_text("import some_dependency_that_is_missing\n")
    result = _run_python(
        """
        from art_wdat.zoo.robustbench_compat import ensure_autoattack_alias
        try:
            ensure_autoattack_alias()
        except ModuleNotFoundError as err:
            assert err.name == "some_dependency_that_is_missing", err
        else:
            raise AssertionError("no error")
        """,
        extra_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_missing_pkg_resources_gives_setuptools_hint() -> None:
    result = _run_python(
        """
        import sys
        sys.modules["pkg_resources"] = None  # what a setuptools>=81 environment looks like
        from art_wdat.zoo.robustbench_compat import import_robustbench
        try:
            import_robustbench()
        except ImportError as err:
            assert "setuptools<81" in str(err), err
        else:
            raise AssertionError("no ImportError")
        """
    )
    assert result.returncode == 0, result.stderr


def test_ensure_alias_returns_module() -> None:
    module = ensure_autoattack_alias()
    assert module is sys.modules["autoattack"]


# ---------------------------------------------------------------------------------------------------
# load_robustbench, offline
# ---------------------------------------------------------------------------------------------------


def _prefixed(state_dict: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The layout of many published checkpoints: ``{"state_dict": {"module.<key>": tensor}}``."""
    return {"state_dict": {f"module.{k}": v for k, v in state_dict.items()}}


@pytest.mark.parametrize("layout", ["plain", "wrapped"])
def test_zoo_model_from_local_checkpoint_matches_original(
    tmp_path: Path, small_zoo_model: torch.nn.Module, inputs: np.ndarray, layout: str
) -> None:
    state = small_zoo_model.state_dict()
    path = robustbench_checkpoint_path(SMALL_ZOO_NAME, "cifar10", "Linf", model_dir=tmp_path)
    assert path == tmp_path / "cifar10" / "Linf" / f"{SMALL_ZOO_NAME}.pt"
    path.parent.mkdir(parents=True)
    torch.save(state if layout == "plain" else _prefixed(state), path)

    classifier = load_robustbench(SMALL_ZOO_NAME, model_dir=tmp_path)

    assert classifier.input_shape == (3, 32, 32)
    assert classifier.nb_classes == 10
    assert tuple(classifier.clip_values) == (0.0, 1.0)
    assert not classifier.model.training
    expected = _logits(small_zoo_model, inputs)
    logits = classifier.predict(inputs)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(logits.argmax(1), expected.argmax(1))


def test_timm_backed_zoo_model_loads_offline(tmp_path: Path, inputs: np.ndarray) -> None:
    """robustbench would ask the Hugging Face hub for these; a local file must be enough."""
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("debenedetti2022light_xcit_s12_cifar10_linf", num_classes=10, pretrained=False)
    path = robustbench_checkpoint_path(TIMM_ZOO_NAME, model_dir=tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)

    classifier = load_robustbench(TIMM_ZOO_NAME, model_dir=tmp_path)

    np.testing.assert_allclose(classifier.predict(inputs[:2]), _logits(reference, inputs[:2]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "NoSuchModel2099"}, "unknown RobustBench model"),
        ({"name": "Addepalli2022Efficient_RN1"}, "did you mean"),
        ({"name": SMALL_ZOO_NAME, "dataset": "mnist"}, "unknown RobustBench dataset"),
        ({"name": SMALL_ZOO_NAME, "threat_model": "L1"}, "unknown RobustBench threat model"),
        ({"name": SMALL_ZOO_NAME, "dataset": "cifar100", "threat_model": "L2"}, "no L2 models for cifar100"),
    ],
)
def test_unknown_names_raise_value_error(tmp_path: Path, kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        load_robustbench(model_dir=tmp_path, **kwargs)
    assert "\n" not in str(info.value)


def test_failed_download_says_where_to_put_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rb = import_robustbench()

    def offline(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("Failed to resolve 'drive.google.com'")

    # Never hit the network, whether or not this machine has internet.
    monkeypatch.setattr(rb.utils, "download_gdrive_new", offline)
    with pytest.raises(ModelUnavailableError) as info:
        load_robustbench(SMALL_ZOO_NAME, model_dir=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, OSError)
    assert str(tmp_path / "cifar10" / "Linf" / f"{SMALL_ZOO_NAME}.pt") in message
    assert "offline" in message and "\n" not in message


def test_failed_load_leaves_no_empty_model_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rb = import_robustbench()

    def offline(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("Failed to resolve 'drive.google.com'")

    monkeypatch.setattr(rb.utils, "download_gdrive_new", offline)
    with pytest.raises(ModelUnavailableError):
        load_robustbench(SMALL_ZOO_NAME, model_dir=tmp_path / "models")
    assert not (tmp_path / "models").exists()  # robustbench made models/cifar10/Linf; we removed what we made
    kept = tmp_path / "kept"
    (kept / "cifar10").mkdir(parents=True)
    (kept / "cifar10" / "other.pt").write_bytes(b"x")
    with pytest.raises(ModelUnavailableError):
        load_robustbench(SMALL_ZOO_NAME, model_dir=kept)
    assert sorted(p.name for p in kept.rglob("*")) == ["cifar10", "other.pt"]  # existing folders and files stay


def test_unreadable_checkpoint_is_reported(tmp_path: Path) -> None:
    path = robustbench_checkpoint_path(SMALL_ZOO_NAME, model_dir=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="cannot read the checkpoint"):
        load_robustbench(SMALL_ZOO_NAME, model_dir=tmp_path)


def test_rb_architecture_local_checkpoint_round_trip(
    tmp_path: Path, small_zoo_model: torch.nn.Module, inputs: np.ndarray
) -> None:
    path = tmp_path / "rb_model.pt"
    save_checkpoint_model(
        path, f"rb:{SMALL_ZOO_NAME}", small_zoo_model.state_dict(), {"input_shape": (3, 32, 32), "nb_classes": 10}
    )
    payload = torch.load(path, weights_only=True)
    assert payload["arch"] == {"name": f"rb:{SMALL_ZOO_NAME}", "kwargs": {"dataset": "cifar10", "threat_model": "Linf"}}

    classifier = load_local_checkpoint(path)

    np.testing.assert_array_equal(classifier.predict(inputs), _logits(small_zoo_model, inputs))
