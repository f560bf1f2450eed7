"""What the attack and the trainer need from an ART ``PyTorchClassifier``, in one place.

ART keeps the wrapped module, its preprocessing chain and its device in private attributes; every
access to them goes through this module, so a change in ART breaks one file, not four.

Preprocessing follows ART's own conventions, so that gradients here are the ones ART's gradient attacks
(``loss_gradient``) see through the same classifier:

* PyTorch-native chains (``SpatialSmoothingPyTorch``, the ``preprocessing=(mean, std)`` standardisation, ...)
  run in torch and are differentiated by autograd through their ``forward``, as in
  ``PyTorchClassifier._apply_preprocessing(..., no_grad=False)``. ART does **not** call ``estimate_forward`` on
  this path: a non-differentiable PyTorch defence must put its straight-through estimate inside ``forward``
  (as ``Mp3CompressionPyTorch`` and ``VideoCompressionPyTorch`` do with a custom ``autograd.Function``).
* A numpy defence (``FeatureSqueezing``, ``JpegCompression``, ``ThermometerEncoding``, ...) is applied in numpy to
  each batch in the forward pass, and the backward pass is ART's ``_apply_preprocessing_gradient``: each
  defence's ``estimate_gradient``, the identity for most of them (BPDA, Athalye et al., 2018), so the
  gradients are those of ART's ``loss_gradient`` (and fail where it fails, e.g. ``ThermometerEncoding``
  followed by a standardisation). This costs one host round trip per batch and direction. ART chains at most
  one such defence (followed by the standardisation); so does this module.
* Defences with ``apply_predict=False`` (``GaussianAugmentation`` used at training time) are skipped, as in
  ``predict``; when every defence left is PyTorch-native the chain runs in torch without a host round trip.
* Postprocessors (``ReverseSigmoid``, ``HighConfidence``) act on ``predict``'s outputs only. The forward here
  returns the raw model outputs, as ``loss_gradient`` does, so gradient attacks (ART's and ours) see the
  undefended logits.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeGuard

import numpy as np
import torch

from art_wdat.core.steps import Clip

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier
    from torch.nn.parallel import DistributedDataParallel

Preprocess = Callable[[torch.Tensor], torch.Tensor]


def require_pytorch_classifier(estimator: object, who: str) -> None:
    """Raise TypeError unless ``estimator`` is an ART ``PyTorchClassifier`` whose preprocessing ART can chain.

    :param estimator: The estimator handed to ``who``.
    :param who: The class that needs it, for the message.
    """
    from art.estimators.classification import PyTorchClassifier

    if not isinstance(estimator, PyTorchClassifier):
        raise TypeError(f"{who} needs an ART PyTorchClassifier as `estimator`, got {type(estimator).__name__}; "
                        "wrap the torch.nn.Module in art.estimators.classification.PyTorchClassifier.")
    if not estimator.all_framework_preprocessing and not _art_can_chain(estimator.preprocessing_operations):
        raise TypeError(f"{who}: `estimator` has the preprocessing chain "
                        f"{[type(p).__name__ for p in estimator.preprocessing_operations]}, which ART's "
                        "PyTorchClassifier cannot chain either (its predict raises NotImplementedError): use at most "
                        "one numpy defence, optionally followed by the (mean, std) standardisation, or only the "
                        "*PyTorch variants of ART's preprocessors.")


def _art_can_chain(operations: list) -> bool:
    """ART's rule for chains that are not all PyTorch-native: one operation, or one plus the standardisation."""
    from art.preprocessing.standardisation_mean_std.numpy import StandardisationMeanStd
    from art.preprocessing.standardisation_mean_std.pytorch import StandardisationMeanStdPyTorch

    standardisation = (StandardisationMeanStd, StandardisationMeanStdPyTorch)
    return len(operations) == 1 or (len(operations) == 2 and isinstance(operations[-1], standardisation))


def device_of(estimator: PyTorchClassifier) -> torch.device:
    """The device the estimator's model runs on."""
    return torch.device(estimator.device)


def is_ddp(module: object) -> TypeGuard[DistributedDataParallel]:
    """Whether ``module`` is a ``torch.nn.parallel.DistributedDataParallel`` wrapper."""
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(module, DistributedDataParallel)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (its ``.module``); any other module as it is."""
    return module.module if is_ddp(module) else module


def forward_fn(estimator: PyTorchClassifier,
               module: torch.nn.Module | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Differentiable map from raw inputs to the model's outputs, through the estimator's preprocessing.

    See the module docstring for how numpy and non-differentiable defences are handled; postprocessors are
    not applied. The attack losses are applied to whatever the model returns (ART's ``PyTorchClassifier`` has
    no flag for probability outputs): a model ending in a softmax still gets feasible attacks, but saturated
    probabilities flatten the (Re)DLR margins and the gradients, so the attack is weaker than on the logits of
    the same network (tests/test_composition.py). Wrap models that return logits.

    :param estimator: The ART ``PyTorchClassifier`` whose preprocessing the inputs go through.
    :param module: The network to run instead of the estimator's model (e.g. a ``DistributedDataParallel``
                   wrapper for a training step). By default the estimator's model, unwrapped from
                   ``DistributedDataParallel``: input-only gradients (attacks) must bypass DDP, whose gradient
                   hooks and buffer broadcasts are collectives meant for a parameter backward on every rank.
    """
    preprocess = _preprocess_fn(estimator)
    if module is None and is_ddp(estimator.model):
        module = estimator.model.module
    if module is not None:
        return lambda x: module(preprocess(x))

    def forward(x: torch.Tensor) -> torch.Tensor:
        return estimator._model(preprocess(x))[-1]

    return forward


def _preprocess_fn(estimator: PyTorchClassifier) -> Preprocess:
    """The estimator's predict-time preprocessing as a differentiable torch map (ART's gradient conventions)."""
    from art.defences.preprocessor.preprocessor import PreprocessorPyTorch

    if estimator.all_framework_preprocessing:
        return lambda x: estimator._apply_preprocessing(x, y=None, fit=False, no_grad=False)[0]
    active = [p for p in estimator.preprocessing_operations if p.apply_predict]
    if all(isinstance(p, PreprocessorPyTorch) for p in active):
        # Only training-time numpy defences (e.g. GaussianAugmentation): ART's predict skips them and calls the
        # rest one by one; chaining their forward in torch gives the same values without leaving the device.
        return lambda x: _chain_torch(active, x)
    return lambda x: _NumpyPreprocessing.apply(x, estimator)


def _chain_torch(operations: list, x: torch.Tensor) -> torch.Tensor:
    for operation in operations:
        x, _ = operation.forward(x, None)
    return x


class _NumpyPreprocessing(torch.autograd.Function):
    """ART's numpy preprocessing in the forward pass, ART's gradient estimate (BPDA) in the backward pass.

    Exactly what ``PyTorchClassifier.loss_gradient`` does for a chain that is not all PyTorch-native: the
    defences run on a numpy copy of the batch, and the gradient with respect to their output is mapped back
    by ``_apply_preprocessing_gradient`` (identity for most defences, a smooth surrogate for thermometer
    encoding, 1/std for the standardisation).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, estimator: PyTorchClassifier) -> torch.Tensor:
        x_np = x.detach().cpu().numpy()
        x_pre, _ = estimator._apply_preprocessing(x_np, y=None, fit=False)
        if x_pre.shape[0] != x_np.shape[0]:
            raise ValueError(f"The preprocessing chain turned {x_np.shape[0]} inputs into {x_pre.shape[0]}; a "
                             "defence that adds samples can only run at training time (apply_predict=False).")
        ctx.estimator, ctx.x_np = estimator, x_np
        # Back to x's dtype: ART 1.20.1's FeatureSqueezing returns float64 under numpy 2, which float32 models reject.
        return torch.tensor(np.asarray(x_pre), dtype=x.dtype, device=x.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad_np = grad.detach().cpu().numpy()
        # Autograd runs backward() with grad mode off; ART's estimate for PyTorch-native members of the chain
        # (the standardisation) differentiates their estimate_forward, which needs it on.
        with torch.enable_grad():
            grad_x = ctx.estimator._apply_preprocessing_gradient(ctx.x_np, grad_np, fit=False)
        return torch.tensor(np.asarray(grad_x), dtype=grad.dtype, device=grad.device), None


def fingerprint(estimator: PyTorchClassifier) -> str:
    """A digest of what the estimator's forward pass computes: the network's structure (its ``repr``), every
    parameter and buffer (names, dtypes, shapes and bytes) and the preprocessing chain with its settings (each
    operation's ``params``).

    Caches of results that depend on the model (W-AutoAttack's flip costs) key on it, so that they are never
    served to another model state: a fine-tuning step, ``load_state_dict`` or an in-place edit changes it.
    """
    # Hashing the bytes rather than (id(tensor), tensor._version) pairs: writes through ``.data`` (optimisers,
    # checkpoint code) do not bump ``_version``, and a freed tensor's id is reused by the next one. The bytes are
    # the state itself, and reading them once costs milliseconds for a CIFAR ResNet: nothing beside a flip-cost
    # pass, which takes thousands of forward and backward passes.
    digest = hashlib.sha1()
    module = unwrap(estimator.model)
    digest.update(repr(module).encode())
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        digest_value(digest, name, tensor)
    digest_preprocessing(digest, estimator)
    return digest.hexdigest()


def digest_preprocessing(digest: hashlib._Hash, estimator: object) -> None:
    """Add the estimator's preprocessing chain (each operation's type and ART ``params``) to ``digest``."""
    for number, operation in enumerate(getattr(estimator, "preprocessing_operations", None) or []):
        digest.update(f"{number}:{type(operation).__qualname__}".encode())
        # ART's declared settings (``params``), not the instance's attributes: those include lazily built caches.
        for name in getattr(operation, "params", []):
            digest_value(digest, name, getattr(operation, name, None))


def digest_value(digest: hashlib._Hash, name: str, value: object) -> None:
    """Add ``name`` and ``value`` to ``digest``: arrays and tensors by their bytes, plain values by their repr,
    other objects by their type (a preprocessor's helper objects do not change what it computes)."""
    digest.update(name.encode())
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().reshape(-1)
        # A one-element slice counts as contiguous with any stride, which ``view`` as bytes refuses.
        flat = flat if flat.stride(0) == 1 else torch.empty(flat.shape, dtype=flat.dtype).copy_(flat)
        digest.update(f"{flat.dtype}{tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray) and value.dtype != object:
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    elif isinstance(value, (bool, int, float, complex, str, bytes, tuple, list, type(None))):
        digest.update(repr(value).encode())
    else:
        digest.update(type(value).__qualname__.encode())


def clip_box(estimator: PyTorchClassifier, device: torch.device) -> Clip | None:
    """The estimator's ``clip_values`` as a pair of float32 tensors on ``device``, or None."""
    if estimator.clip_values is None:
        return None
    lo, hi = (torch.as_tensor(np.asarray(v, dtype=np.float32), device=device) for v in estimator.clip_values)
    return lo, hi


@contextmanager
def eval_mode(estimator: PyTorchClassifier) -> Iterator[None]:
    """Put the model in eval mode (batch-norm statistics frozen, no dropout) and restore its mode after."""
    module = estimator.model
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def check_nb_classes(estimator: PyTorchClassifier, who: str) -> None:
    """ValueError unless the model returns ``nb_classes`` outputs per input, from one forward pass of a zero input.

    The bare network runs (eval mode, no gradient, torch's RNG state kept), not the preprocessing chain: a random
    numpy defence would otherwise draw from the RNG of the run being checked. A model that cannot run on zeros is
    not judged here.

    :param who: The class that checks, for the message.
    """
    module = unwrap(estimator.model)
    param = next(iter(module.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros((1, *estimator.input_shape), dtype=dtype, device=device_of(estimator))
    try:
        with eval_mode(estimator), torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = module(x)
    except Exception:  # a model that cannot run on zeros (e.g. token ids) fails later, where its inputs are given
        return
    out = out[-1] if isinstance(out, (list, tuple)) else out
    width = out.shape[-1] if isinstance(out, torch.Tensor) and out.ndim >= 1 else None
    if width != estimator.nb_classes:
        raise ValueError(f"{who}: the estimator's `nb_classes`={estimator.nb_classes} but its model returns "
                         f"{width} outputs per input (output shape {tuple(getattr(out, 'shape', ()))} for one input "
                         "of input_shape); give nb_classes the model's number of logits.")
