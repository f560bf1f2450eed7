"""The key under which W-AutoAttack's flip costs are cached: everything they depend on in the model.

A cache that serves the costs of another model gives wrong answers silently, so the key covers the model's state and
what it computes on the inputs themselves (:func:`model_key`):

* **the state**: for a ``PyTorchClassifier``, :func:`~art_wdat.attacks.estimator.fingerprint` (structure, parameters,
  buffers, preprocessing); for TensorFlow and Keras, the model's weights (trainable or not) and the preprocessing;
  for scikit-learn, XGBoost, LightGBM, CatBoost and GPy models, the pickle bytes of the model and the preprocessing;
* **the outputs** of the model on the inputs, one forward pass, which sees what the state misses: plain tensor
  attributes (``self.mean = torch.tensor(...)``), forward hooks, closures, anything that changes the function there.

An estimator with no sound state digest (a ``BlackBoxClassifier``: a model behind an API, which may change and still
agree on the inputs) gets no key: its flip costs are recomputed on every call.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import numpy as np
import torch

from art_wdat.attacks import bridge
from art_wdat.attacks import estimator as est

#: ART wrappers whose ``model`` pickles into its whole state (a fitted scikit-learn, boosting or GPy model).
_PICKLED = ("ScikitlearnClassifier", "XGBoostClassifier", "LightGBMClassifier", "CatBoostARTClassifier",
            "GPyGaussianProcessClassifier")
#: ART wrappers of Keras/TensorFlow models, whose state is their weights.
_WEIGHTED = ("TensorFlowV2Classifier", "KerasClassifier")


def model_key(estimator: Any, forward: bridge.Forward, x: torch.Tensor, batch_size: int) -> str | None:
    """A digest of the model's state and of its outputs on ``x``, or None where no sound digest exists.

    :param forward: The attack's forward (:func:`~art_wdat.attacks.bridge.forward_fn`), run once over ``x`` without
        gradients and with torch's and numpy's global random states kept as they were.
    """
    state = state_digest(estimator)
    if state is None:
        return None
    return f"{state}|{outputs_digest(forward, x, batch_size)}"


def state_digest(estimator: Any) -> str | None:
    """A digest of the estimator's state (module docstring), or None for an estimator without a sound one."""
    if bridge.is_pytorch(estimator):
        return est.fingerprint(estimator)
    family = _family(estimator)
    if family is None:
        return None
    digest = hashlib.sha1(type(estimator).__qualname__.encode())
    try:
        if family in _WEIGHTED:
            for number, weight in enumerate(estimator.model.weights):
                est.digest_value(digest, f"{number}:{getattr(weight, 'path', getattr(weight, 'name', ''))}",
                                 np.asarray(weight.numpy()))
        else:
            digest.update(pickle.dumps(estimator.model, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # a model that cannot be read this way (unpicklable, no weights) gets no cache
        return None
    est.digest_preprocessing(digest, estimator)
    return digest.hexdigest()


def _family(estimator: Any) -> str | None:
    """The first of :data:`_PICKLED` and :data:`_WEIGHTED` that ``estimator`` is an instance of (by class name along
    its MRO: the optional frameworks are not imported here)."""
    names = {cls.__name__ for cls in type(estimator).__mro__}
    return next((family for family in (*_WEIGHTED, *_PICKLED) if family in names), None)


def outputs_digest(forward: bridge.Forward, x: torch.Tensor, batch_size: int) -> str:
    """A digest of ``forward``'s outputs on ``x`` (batches of ``batch_size``, no gradient), leaving torch's and numpy's
    global random states as they were, so that the attack draws what it drew without this pass."""
    digest = hashlib.sha1()
    numpy_state = np.random.get_state()
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for i in range(0, x.shape[0], batch_size):
                out = forward(x[i:i + batch_size])
                out = out[-1] if isinstance(out, (list, tuple)) else out
                est.digest_value(digest, str(i), out.detach())
    finally:
        np.random.set_state(numpy_state)
    return digest.hexdigest()
