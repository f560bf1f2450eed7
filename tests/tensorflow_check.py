"""The attack through ``TensorFlowV2Classifier``, checked against the same weights in PyTorch; run by
tests/test_tensorflow.py in a process of its own (TensorFlow and torch's dynamo do not share one process safely).

    python -m tests.tensorflow_check [N, default 50]

Prints one JSON object: the bridge's largest gradient error against torch autograd (logits, softmax outputs, and a
standardisation in ART's preprocessing), and W-AutoAttack's accuracy through both classifiers.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._dynamo  # noqa: E402,F401  (before TensorFlow: the other order segfaults with torch 2.14)
from sklearn.datasets import load_digits  # noqa: E402


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    x, y = (d.data / 16.0).astype(np.float32)[perm], d.target[perm].astype(np.int64)
    return x[:-500], y[:-500], x[-500:], y[-500:]


def keras_mlp(softmax: bool):
    import keras

    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="tanh"),
                             keras.layers.Dense(10, activation="softmax" if softmax else None)])


def trained_keras_mlps(x: np.ndarray, y: np.ndarray) -> tuple:
    """A Keras MLP trained on logits, and the same weights ending in a softmax."""
    import keras

    keras.utils.set_random_seed(0)
    logits = keras_mlp(softmax=False)
    logits.compile(optimizer=keras.optimizers.Adam(1e-2),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logits.fit(x, y, epochs=5, batch_size=128, verbose=0)
    probabilities = keras_mlp(softmax=True)
    probabilities.set_weights(logits.get_weights())
    return logits, probabilities


def torch_twin(model, softmax: bool) -> torch.nn.Module:
    """The Keras MLP's weights in torch (Dense kernels are (in, out), Linear weights (out, in))."""
    first, second = (layer.get_weights() for layer in model.layers)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10),
                              *([torch.nn.Softmax(dim=1)] if softmax else []))
    with torch.no_grad():
        for linear, (kernel, bias) in zip((net[0], net[2]), (first, second)):
            linear.weight.copy_(torch.from_numpy(kernel.T))
            linear.bias.copy_(torch.from_numpy(bias))
    return net.eval()


def tf_classifier(model, softmax: bool, preprocessing=(0.0, 1.0)):
    import keras
    from art.estimators.classification import TensorFlowV2Classifier

    return TensorFlowV2Classifier(model, nb_classes=10, input_shape=(64,), clip_values=(0.0, 1.0),
                                  loss_object=keras.losses.CategoricalCrossentropy(from_logits=not softmax),
                                  preprocessing=preprocessing)


def gradient_error(clf, net: torch.nn.Module, x: np.ndarray, log: bool, preprocessing=(0.0, 1.0)) -> float:
    """Largest |VJP of the bridge − torch autograd| for random output weights, relative to the largest gradient."""
    from art_wdat.attacks import bridge

    forward = bridge.forward_fn(clf, x)
    assert forward.rule.log == log, forward.rule
    weights = torch.randn(x.shape[0], 10, generator=torch.Generator().manual_seed(0))
    x1 = torch.from_numpy(x).requires_grad_(True)
    x2 = torch.from_numpy(x).requires_grad_(True)
    (g_bridge,) = torch.autograd.grad((forward(x1) * weights).sum(), x1)
    mean, std = preprocessing
    out = net((x2 - mean) / std)
    scores = torch.log(out) if log else out
    scores = scores - scores.mean(dim=1, keepdim=True) if log else scores
    (g_torch,) = torch.autograd.grad((scores * weights).sum(), x2)
    return float((g_bridge - g_torch).abs().max() / g_torch.abs().max())


def attack_accuracy(clf, x: np.ndarray, y: np.ndarray, predict) -> tuple[float, float]:
    from art_wdat import WassersteinDistributionalAttack

    # Without the refinement near the threshold (tested elsewhere): the same solvers through both, in less time.
    attack = WassersteinDistributionalAttack(clf, eps=0.05, p=2, norm=np.inf, method="auto", max_iter=5,
                                             batch_size=128, verbose=False, refine=False)
    x_adv = attack.generate(x, y)
    cost = float(np.sqrt(np.mean(np.abs(x_adv.astype(np.float64) - x).max(axis=1) ** 2)))
    return float((predict(x_adv).argmax(axis=1) == y).mean()), cost


def main(n: int = 50) -> dict:
    torch.set_num_threads(1)
    from tests.conftest import wrap

    x, y, x_test, y_test = digits()
    xs, ys = x_test[:n], y_test[:n]
    out: dict = {}
    for softmax, model in zip((False, True), trained_keras_mlps(x, y)):
        net = torch_twin(model, softmax)
        name = "softmax" if softmax else "logits"
        out[f"gradient_error_{name}"] = gradient_error(tf_classifier(model, softmax), net, xs[:16], log=softmax)
        standardise = (0.5, 0.25)
        out[f"gradient_error_{name}_standardised"] = gradient_error(
            tf_classifier(model, softmax, standardise), net, xs[:16], log=softmax, preprocessing=standardise)
        if not softmax:
            tf_clf, torch_clf = tf_classifier(model, softmax), wrap(net, input_shape=(64,))
            out["tensorflow_accuracy"], out["tensorflow_cost"] = attack_accuracy(tf_clf, xs, ys, tf_clf.predict)
            out["pytorch_accuracy"], out["pytorch_cost"] = attack_accuracy(torch_clf, xs, ys, torch_clf.predict)
            out["clean_accuracy"] = float((tf_clf.predict(xs).argmax(axis=1) == ys).mean())
            out.update(cache_key_checks(model, tf_clf))
    return out


def cache_key_checks(model, clf) -> dict:
    """The flip-cost cache's state digest of a TensorFlow model: stable, and changed by a changed weight."""
    from art_wdat.attacks.fingerprint import state_digest

    first, again = state_digest(clf), state_digest(clf)
    weights = model.get_weights()
    model.set_weights([weights[0] + 1e-3, *weights[1:]])
    changed = state_digest(clf)
    model.set_weights(weights)
    return {"digest_stable": first == again and first is not None, "digest_changed": changed != first,
            "digest_restored": state_digest(clf) == first}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)))
