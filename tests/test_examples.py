"""Every script under examples/ runs, in-process, in its quick mode.

The examples are listed with the arguments of their smoke run; any other example whose source offers
``--quick`` is discovered and run with it. A listed example that does not exist (yet) is skipped.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: Known examples and their smoke-run arguments (side_by_side.py has no --quick).
KNOWN = {
    "side_by_side": ["--eps", "0.1", "--epochs", "1", "--max-iter", "3"],
    "art_side_by_side": ["--quick"],
    "art_adversarial_trainer": ["--quick"],
    "robustbench_finetune": ["--quick"],
    "wtrades_finetune": ["--quick"],
}


def _discovered() -> dict[str, list[str]]:
    found = sorted(p.stem for p in EXAMPLES.glob("*.py") if p.stem not in KNOWN and "--quick" in p.read_text())
    return {name: ["--quick"] for name in found}


CASES = {**KNOWN, **_discovered()}


def _load(path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # Registered for the test only: dataclasses look their module up in sys.modules.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _check_art_side_by_side(rows: list) -> None:
    eps = 0.1
    by_name = {r.attack: r for r in rows}
    assert len(rows) == 6 and all(0.0 <= r.accuracy <= 1.0 for r in rows)
    for name, row in by_name.items():
        if "p=2" in name:  # distributional: the W_2 cost is the budget
            assert row.cost_2 <= eps * (1 + 1e-6)
        else:  # pointwise: every input within eps
            assert row.cost_inf <= eps * (1 + 1e-6)
        if not name.startswith("ART PGD"):  # the others keep the best iterate: never above clean accuracy
            assert row.accuracy <= rows[0].accuracy


def _check_adversarial_trainer(results: dict) -> None:
    assert set(results) == {"before", "after"}
    for clean, robust in results.values():
        assert 0.0 <= robust <= clean <= 1.0


def _check_robustbench_finetune(results: dict) -> None:
    assert len(results["history"]) == 1 and math.isfinite(results["history"][0]["loss"])
    for name in ("before", "after W-TRADES"):
        assert set(results[name]) == {"clean", "autoattack", "wpgd"}


def _check_wtrades_finetune(results: dict) -> None:
    # The quick model is trained: not one constant 0.1172 in every cell (a model that predicts one class).
    cells = [results[name][key] for name in ("pretrained", "wtrades_p2", "trades_control")
             for key in ("clean", "autoattack", "wpgd")]
    assert results["pretrained"]["clean"] > 0.5 and len(set(cells)) > 1
    for name in ("pretrained", "wtrades_p2", "trades_control"):
        assert results[name]["wpgd"] < results[name]["clean"]


def _check_distributed_attack(results: dict) -> None:
    # A trained model on real digits: the attack lowers the accuracy (not "1.000 -> 1.000").
    assert 0.5 < results["clean"] <= 1.0 and results["robust"] < results["clean"]
    assert results["cost"] <= 0.1 * (1 + 1e-6)


CHECKS: dict[str, Callable] = {
    "wtrades_finetune": _check_wtrades_finetune,
    "distributed_attack": _check_distributed_attack,
    "art_side_by_side": _check_art_side_by_side,
    "art_adversarial_trainer": _check_adversarial_trainer,
    "robustbench_finetune": _check_robustbench_finetune,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    path = EXAMPLES / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"examples/{name}.py does not exist (yet)")
    main = _load(path, monkeypatch).main
    argv = CASES[name]
    if inspect.signature(main).parameters:
        result = main(argv)
    else:  # a main() that reads sys.argv itself
        monkeypatch.setattr(sys, "argv", [str(path), *argv])
        result = main()
    assert capsys.readouterr().out.strip(), f"examples/{name}.py printed nothing"
    if name in CHECKS:
        CHECKS[name](result)


@pytest.mark.slow
def test_wtrades_finetune_reads_a_users_npz(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Digits saved as a user would save images: uint8 0..255, channels first; the example divides by 255.
    from art_wdat.zoo.data import load_digits_split

    x_tr, y_tr, x_te, y_te = load_digits_split()
    npz = tmp_path / "digits.npz"
    np.savez(npz, x_train=np.round(x_tr * 255).astype(np.uint8), y_train=y_tr,
             x_test=np.round(x_te * 255).astype(np.uint8), y_test=y_te)
    main = _load(EXAMPLES / "wtrades_finetune.py", monkeypatch).main
    results = main(["--quick", "--data", str(npz), "--threads", "1"])
    assert results["settings"]["data"] == str(npz) and results["settings"]["eps"] == pytest.approx(4 / 255)
    assert "512 train / 128 test images (1, 8, 8)" in capsys.readouterr().out
    _check_wtrades_finetune(results)


def test_wtrades_finetune_names_a_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    main = _load(EXAMPLES / "wtrades_finetune.py", monkeypatch).main
    with pytest.raises(SystemExit):
        main(["--quick", "--data", str(tmp_path / "absent.npz")])
    assert "--data: no file" in capsys.readouterr().err


def test_examples_need_no_developer_folder() -> None:
    # Users have no ../shared beside their copy: an example reads what its user names on the command line.
    for path in sorted(EXAMPLES.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r'\.\./shared|/ "shared"|project\'s shared', text), f"examples/{path.name}"
