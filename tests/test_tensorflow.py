"""The attack through ART's ``TensorFlowV2Classifier`` (issue 26): the bridge's gradients equal torch autograd's on the
same weights (logits, softmax outputs, ART's standardisation), and W-AutoAttack through TensorFlow is within two
points of it through ``PyTorchClassifier``. TensorFlow runs in a process of its own (tests/tensorflow_check.py);
the test runs wherever TensorFlow is installed (CI installs the ``tensorflow`` extra). Also: the flip-cost cache's
digest of a TensorFlow model follows its weights."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
N = 50


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow is not installed")
def test_tensorflow_v2_classifier_matches_the_same_weights_in_pytorch():
    done = subprocess.run([sys.executable, "-m", "tests.tensorflow_check", str(N)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("logits", "logits_standardised", "softmax", "softmax_standardised"):
        assert out[f"gradient_error_{name}"] < 1e-4, (name, out)
    assert out["tensorflow_cost"] <= 0.05 * (1 + 1e-6) and out["pytorch_cost"] <= 0.05 * (1 + 1e-6)
    assert out["tensorflow_accuracy"] < out["clean_accuracy"]
    assert abs(out["tensorflow_accuracy"] - out["pytorch_accuracy"]) <= 0.02 + 1e-12
    assert out["digest_stable"] and out["digest_changed"] and out["digest_restored"]
