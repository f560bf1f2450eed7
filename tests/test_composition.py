"""Composition with ART: preprocessing and postprocessing defences, estimators of every shape, ART's own attacks.

The yardstick throughout is ART's ``ProjectedGradientDescent`` through the *same* classifier: at p = inf with
the CE loss and ``keep_best=False`` our W-PGD is PGD step for step (tests/test_attack.py), so equal outputs
mean equal gradients, i.e. the attack sees every defence exactly as ART's gradient attacks do.
"""

from __future__ import annotations

import copy
import importlib.util
import math

import numpy as np
import pytest
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.defences.postprocessor import HighConfidence, ReverseSigmoid
from art.defences.preprocessor import FeatureSqueezing, GaussianAugmentation, JpegCompression, ThermometerEncoding
from art.defences.preprocessor.preprocessor import Preprocessor, PreprocessorPyTorch
from art.estimators.classification import PyTorchClassifier
from sklearn.datasets import make_classification

from art_wdat import WassersteinDistributionalAttack
from tests.conftest import wrap

HAS_KORNIA = importlib.util.find_spec("kornia") is not None


def cost(x_adv: np.ndarray, x: np.ndarray, p: float, r: float) -> float:
    norms = np.linalg.norm((x_adv.astype(np.float64) - x).reshape(len(x), -1), ord=r, axis=1)
    return float(norms.max() if math.isinf(p) else np.mean(norms ** p) ** (1 / p))


def accuracy(clf, x: np.ndarray, y: np.ndarray) -> float:
    return float((clf.predict(x).argmax(1) == y).mean())


def art_pgd_and_ours(clf, x: np.ndarray, y: np.ndarray, eps: float = 0.1, iters: int = 6):
    """ART's PGD and our pointwise W-PGD configured to take the same steps."""
    kwargs = dict(eps=eps, eps_step=eps / 4, max_iter=iters, batch_size=32)
    art = ProjectedGradientDescent(clf, norm=np.inf, num_random_init=0, verbose=False, **kwargs).generate(x, y)
    ours = WassersteinDistributionalAttack(clf, p=np.inf, norm=np.inf, loss="ce", keep_best=False, verbose=False,
                                           **kwargs).generate(x, y)
    return art, ours


def distributional(clf, x: np.ndarray, y: np.ndarray, eps: float = 0.1, **kwargs) -> np.ndarray:
    """The default distributional attack (p = 2, ground ℓ∞, ReDLR)."""
    return WassersteinDistributionalAttack(clf, eps=eps, max_iter=kwargs.pop("max_iter", 8), verbose=False,
                                           **kwargs).generate(x, y)


class _RoundStraightThrough(torch.autograd.Function):
    """Quantisation forward, identity backward: how ART's own non-differentiable PyTorch defences
    (``Mp3CompressionPyTorch``, ``VideoCompressionPyTorch``) write BPDA into ``forward``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, levels: int) -> torch.Tensor:
        return torch.round(x * levels) / levels

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class StraightThroughQuantizer(PreprocessorPyTorch):
    """A non-differentiable PyTorch defence written the ART way (BPDA inside ``forward``)."""

    def __init__(self, levels: int = 7) -> None:
        super().__init__(device_type="cpu", is_fitted=True, apply_fit=False, apply_predict=True)
        self.levels = levels

    def forward(self, x: torch.Tensor, y=None):
        return _RoundStraightThrough.apply(x, self.levels), y


class EstimateForwardOnlyQuantizer(StraightThroughQuantizer):
    """The same defence with its BPDA only in ``estimate_forward``, which ART's torch path never calls."""

    def forward(self, x: torch.Tensor, y=None):
        return torch.round(x * self.levels) / self.levels, y

    def estimate_forward(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return x


class _Float32(torch.nn.Module):
    """Casts inputs to float32: ART 1.20.1's FeatureSqueezing returns float64 under numpy 2, which ART's own
    ``loss_gradient`` feeds to the model as is (our forward casts back to x's dtype)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.float())


@pytest.fixture(scope="module")
def test_set(digits):
    _, _, x, y = digits
    return x[:80], y[:80]


# -- 1. preprocessing defences --------------------------------------------------------------------------------
def _pytorch_defended(kind: str, model: torch.nn.Module) -> PyTorchClassifier:
    if kind == "spatial_smoothing":
        from art.defences.preprocessor import SpatialSmoothingPyTorch

        smoothing = SpatialSmoothingPyTorch(window_size=3, channels_first=True, clip_values=(0.0, 1.0),
                                            device_type="cpu")
        return wrap(model, preprocessing_defences=smoothing)
    if kind == "mean_std":
        return wrap(model, preprocessing=(0.1, 0.9))
    return wrap(model, preprocessing_defences=StraightThroughQuantizer())


@pytest.mark.parametrize("kind", [
    pytest.param("spatial_smoothing", marks=pytest.mark.skipif(not HAS_KORNIA, reason="ART's "
                 "SpatialSmoothingPyTorch needs kornia, which is not installed")),
    "mean_std", "straight_through_quantizer"])
def test_pytorch_native_defences_give_arts_gradients(digits_clf, test_set, kind):
    x, y = test_set
    clf = _pytorch_defended(kind, digits_clf.model)
    art, ours = art_pgd_and_ours(clf, x, y)
    np.testing.assert_allclose(ours, art, atol=2e-6)
    x_adv = distributional(clf, x, y)
    assert np.abs(x_adv - x).max() > 0
    assert cost(x_adv, x, 2.0, np.inf) <= 0.1 * (1 + 1e-6)
    assert accuracy(clf, x_adv, y) < accuracy(clf, x, y)


def test_estimate_forward_is_not_used_on_the_torch_path_as_in_art(digits_clf, test_set):
    """ART differentiates ``forward`` of PyTorch defences; a zero-gradient forward stalls ART's PGD and ours alike."""
    x, y = test_set
    clf = wrap(digits_clf.model, preprocessing_defences=EstimateForwardOnlyQuantizer())
    art, ours = art_pgd_and_ours(clf, x, y, iters=2)
    np.testing.assert_array_equal(art, x)
    np.testing.assert_array_equal(ours, x)


@pytest.mark.parametrize("kind", ["feature_squeezing", "jpeg"])
def test_numpy_defences_get_arts_bpda_gradient(digits_clf, test_set, kind):
    """Numpy defences run per batch in the forward pass; the backward pass is ART's ``estimate_gradient``."""
    x, y = test_set[0][:40], test_set[1][:40]
    if kind == "jpeg":
        clf = wrap(digits_clf.model, preprocessing_defences=JpegCompression((0.0, 1.0), channels_first=True))
    else:
        clf = wrap(_Float32(digits_clf.model), preprocessing_defences=FeatureSqueezing((0.0, 1.0), bit_depth=3))
    assert not clf.all_framework_preprocessing
    art, ours = art_pgd_and_ours(clf, x, y, iters=3)
    np.testing.assert_allclose(ours, art, atol=2e-6)
    x_adv = distributional(clf, x, y, max_iter=3)
    assert cost(x_adv, x, 2.0, np.inf) <= 0.1 * (1 + 1e-6)
    assert accuracy(clf, x_adv, y) < accuracy(clf, x, y)


def test_thermometer_encoding_gets_arts_own_gradient_estimate(test_set):
    """A numpy defence with a non-identity ``estimate_gradient`` that changes the input shape (1 -> 4 channels)."""
    x, y = test_set[0][:40], test_set[1][:40]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 8 * 8, 10))
    # preprocessing=None: with the (mean, std) standardisation after it, ART's own loss_gradient fails.
    clf = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                            clip_values=(0.0, 1.0), preprocessing=None,
                            preprocessing_defences=ThermometerEncoding((0.0, 1.0), num_space=4, channels_first=True))
    art, ours = art_pgd_and_ours(clf, x, y, iters=3)
    assert np.abs(art - x).max() > 0
    np.testing.assert_allclose(ours, art, atol=2e-6)


def test_gaussian_augmentation_at_training_time_only(digits, digits_clf, test_set):
    """A numpy defence with apply_predict=False: trained through by ART's fit, skipped by the attack (in torch)."""
    x_train, y_train, _, _ = digits
    model = copy.deepcopy(digits_clf.model)
    noise = GaussianAugmentation(sigma=0.05, augmentation=False, apply_fit=True, apply_predict=False)
    clf = wrap(model, preprocessing_defences=noise, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3))
    torch.manual_seed(0)
    clf.fit(x_train[:256], y_train[:256], nb_epochs=1, batch_size=64, verbose=False)
    x, y = test_set
    defended, plain = (distributional(c, x, y) for c in (clf, wrap(model)))
    np.testing.assert_array_equal(defended, plain)


def test_chains_art_cannot_run_are_refused(digits_clf):
    both = [FeatureSqueezing((0.0, 1.0), bit_depth=3), JpegCompression((0.0, 1.0), channels_first=True)]
    clf = wrap(digits_clf.model, preprocessing_defences=both)
    with pytest.raises(NotImplementedError):
        clf.predict(np.zeros((1, 1, 8, 8), dtype=np.float32))
    with pytest.raises(TypeError, match="cannot chain"):
        WassersteinDistributionalAttack(clf, verbose=False)


class _Duplicate(Preprocessor):
    """A (broken) numpy defence that adds samples at predict time."""

    def __init__(self) -> None:
        super().__init__(is_fitted=True, apply_fit=False, apply_predict=True)

    def __call__(self, x: np.ndarray, y=None):
        return np.concatenate([x, x]), y


def test_defence_adding_samples_at_predict_time_is_reported(digits_clf, test_set):
    clf = wrap(digits_clf.model, preprocessing_defences=_Duplicate())
    x, y = test_set
    with pytest.raises(ValueError, match="apply_predict=False"):
        distributional(clf, x, y, max_iter=1)


# ReverseSigmoid expects probabilities and takes the log of 1 - p; on logits it warns (and predict changes).
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_postprocessors_leave_the_attack_on_the_undefended_logits(digits_clf, test_set):
    """Postprocessors act on ``predict`` only; gradient attacks (ART's PGD and ours) see the raw model outputs."""
    x, y = test_set
    defended = wrap(digits_clf.model, postprocessing_defences=[HighConfidence(cutoff=0.1),
                                                                ReverseSigmoid(beta=1.0, gamma=0.1)])
    art, ours = art_pgd_and_ours(defended, x, y, iters=3)
    art_plain, ours_plain = art_pgd_and_ours(digits_clf, x, y, iters=3)
    np.testing.assert_array_equal(art, art_plain)
    np.testing.assert_array_equal(ours, ours_plain)
    np.testing.assert_array_equal(distributional(defended, x, y), distributional(digits_clf, x, y))
    # Without labels the targets come from predict, postprocessors included, as in ART's PGD.
    x_adv = distributional(defended, x, None, max_iter=2)
    assert cost(x_adv, x, 2.0, np.inf) <= 0.1 * (1 + 1e-6)


# -- 2. estimators --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_on_cuda_matches_cpu(digits_clf, test_set):
    x, y = test_set
    model = copy.deepcopy(digits_clf.model).cuda()
    clf = wrap(model, device_type="gpu")
    assert clf.device.type == "cuda"
    x_adv = distributional(clf, x, y)
    assert cost(x_adv, x, 2.0, np.inf) <= 0.1 * (1 + 1e-6)
    np.testing.assert_allclose(x_adv, distributional(digits_clf, x, y), atol=1e-4)


class _ChannelsLast(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


def test_channels_last_is_the_transpose_of_channels_first(digits_clf, test_set):
    """The attack is shape-agnostic: NHWC inputs give the NCHW result, transposed."""
    x, y = test_set
    nhwc = PyTorchClassifier(_ChannelsLast(digits_clf.model), torch.nn.CrossEntropyLoss(), input_shape=(8, 8, 1),
                             nb_classes=10, clip_values=(0.0, 1.0), channels_first=False)
    x_adv = distributional(nhwc, x.transpose(0, 2, 3, 1), y)
    np.testing.assert_allclose(x_adv.transpose(0, 3, 1, 2), distributional(digits_clf, x, y), atol=1e-6)


@pytest.fixture(scope="module")
def tabular():
    """A 3-class problem on 20 standardised features and an MLP; clip_values are per-feature bounds."""
    x, y = make_classification(n_samples=400, n_features=20, n_informative=8, n_redundant=4, n_classes=3,
                               random_state=0)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    bounds = (x.min(0), x.max(0))
    clf = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=(20,), nb_classes=3, clip_values=bounds,
                            optimizer=torch.optim.Adam(model.parameters(), lr=1e-2))
    clf.fit(x[:300], y[:300].astype(np.int64), nb_epochs=30, batch_size=32, verbose=False)
    return clf, x[300:], y[300:].astype(np.int64)


@pytest.mark.parametrize("norm", [np.inf, 2, 1])
@pytest.mark.parametrize("p", [1.5, 2.0, math.inf])
def test_tabular_inputs_stay_feasible(tabular, p, norm):
    clf, x, y = tabular
    eps = {np.inf: 0.3, 2: 1.0, 1: 3.0}[norm]
    attack = WassersteinDistributionalAttack(clf, eps=eps, p=p, norm=norm, max_iter=5, verbose=False)
    x_adv = attack.generate(x, y)
    assert x_adv.shape == x.shape
    assert cost(x_adv, x, p, float(norm)) <= eps * (1 + 1e-6)
    lo, hi = clf.clip_values
    assert (x_adv >= lo - 1e-6).all() and (x_adv <= hi + 1e-6).all()
    assert accuracy(clf, x_adv, y) <= accuracy(clf, x, y)


def test_tabular_without_clip_values(tabular):
    clf, x, y = tabular
    unbounded = PyTorchClassifier(clf.model, torch.nn.CrossEntropyLoss(), input_shape=(20,), nb_classes=3)
    x_adv = WassersteinDistributionalAttack(unbounded, eps=1.0, p=2, norm=2, max_iter=10,
                                            verbose=False).generate(x, y)
    assert cost(x_adv, x, 2.0, 2.0) <= 1.0 * (1 + 1e-6)
    assert accuracy(unbounded, x_adv, y) < accuracy(unbounded, x, y)


def test_softmax_outputs_are_feasible_but_weaker_than_logits(digits_clf, test_set):
    """PyTorchClassifier has no "outputs are probabilities" flag: the losses see whatever the model returns.

    On probabilities ReDLR's margins saturate (vanishing gradients on confident inputs), so the default
    attack is weaker than on the logits of the same network; wrap models that return logits.
    """
    x, y = test_set
    softmax = wrap(torch.nn.Sequential(digits_clf.model, torch.nn.Softmax(dim=1)))
    x_soft = distributional(softmax, x, y)
    assert np.isfinite(x_soft).all() and cost(x_soft, x, 2.0, np.inf) <= 0.1 * (1 + 1e-6)
    assert x_soft.min() >= 0.0 and x_soft.max() <= 1.0
    assert accuracy(softmax, x_soft, y) < accuracy(softmax, x, y)
    assert accuracy(softmax, x_soft, y) >= accuracy(digits_clf, distributional(digits_clf, x, y), y)

