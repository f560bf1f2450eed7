"""``art-wdat evaluate --model FILE.onnx``: an ONNX model runs through onnx2torch, with gradients (issue 26)."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch

from art_wdat import cli

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("onnx", "onnx2torch")),
                                reason="onnx and onnx2torch are not installed")
SHAPE = (3, 4, 4)


def test_cli_evaluates_an_onnx_model_as_the_torch_model_it_was_exported_from(tmp_path, capsys):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated; it needs no onnxscript
        torch.onnx.export(model, (torch.zeros(2, *SHAPE),), tmp_path / "net.onnx", dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    rng = np.random.default_rng(0)
    x = rng.random((12, *SHAPE), dtype=np.float32)
    y = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    y[:3] = (y[:3] + 1) % 3
    np.savez(tmp_path / "data.npz", x_test=x, y_test=y, x_train=x, y_train=y)
    code = cli.main(["evaluate", "--model", str(tmp_path / "net.onnx"), "--dataset", f"npz:{tmp_path / 'data.npz'}",
                     "--eps", "0.05", "--attacks", "pgd,wpgd", "--max-iter", "2", "--out", str(tmp_path / "ev"),
                     "--threads", "1", "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "W-PGD" in out
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["clean_accuracy"] == pytest.approx(0.75)
    code = cli.main(["evaluate", "--model", str(tmp_path / "missing.onnx"), "--dataset",
                     f"npz:{tmp_path / 'data.npz'}", "--threads", "1", "-q"])
    assert code != 0 and "missing.onnx" in capsys.readouterr().err
