"""AutoAttack (Croce & Hein, 2020) from the ``autoattack`` package: the report's "AutoAttack" row and the
pointwise robustness of the fine-tune's held-out selection.

Two versions:

* ``"standard"``: the package's ``version="standard"`` untouched (APGD-CE, APGD-T with 9 target classes, FAB-T,
  Square; 100 iterations, 5000 queries). At p = ∞ with ε = δ on inputs in [0, 1] this is RobustBench's
  leaderboard protocol, so the row is comparable with the leaderboard.
* ``"custom"`` (the CPU default): the standard version's APGD-CE and APGD-T with the standard settings (one
  restart each, 9 target classes), without FAB-T and Square. It is weaker than the standard version (never
  stronger: same runs, fewer of them), and cheaper.

:class:`PackageAutoAttack` runs the package's own ``run_standard_evaluation`` on a torch forward through the ART
classifier's preprocessing, so its accuracy equals that of the package run by hand on the same model, inputs,
seed and version (tests/test_autoattack_row.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from art_wdat.attacks import bridge

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

AutoAttackVersion = Literal["standard", "custom"]
AUTOATTACK_VERSIONS: tuple[AutoAttackVersion, ...] = ("standard", "custom")
#: The runs of the custom version: standard AutoAttack's gradient-based part.
CUSTOM_ATTACKS = ("apgd-ce", "apgd-t")
#: Iterations of the package's APGD and FAB runs (its own default).
PACKAGE_ITERATIONS = 100
#: Target classes of APGD-T and FAB-T in the standard version (ℓ∞ and ℓ2).
TARGET_CLASSES = 9
_NORMS = {math.inf: "Linf", 2.0: "L2", 1.0: "L1"}


class _Logits(torch.nn.Module):
    """An ``nn.Module`` around a forward function: the package calls ``model(x)`` and inspects the module."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self._forward = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)


def target_classes(nb_classes: int) -> int:
    """Target classes of APGD-T and FAB-T: the standard 9, or every other class of a model with fewer than 10."""
    return max(min(TARGET_CLASSES, nb_classes - 1), 1)


def check_version(version: str) -> None:
    """ValueError unless ``version`` is one of :data:`AUTOATTACK_VERSIONS`."""
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"autoattack_version must be one of {AUTOATTACK_VERSIONS}, got {version!r}")


def set_iterations(adversary: Any, n_iter: int) -> None:
    """Run the package's APGD, APGD-T and FAB for ``n_iter`` iterations (APGD's step-size checkpoints follow)."""
    for apgd in (adversary.apgd, adversary.apgd_targeted):
        # APGD derives its checkpoints from n_iter in __init__ only: recompute them as its __init__ does.
        apgd.n_iter = apgd.n_iter_orig = n_iter
        apgd.n_iter_2 = max(int(0.22 * n_iter), 1)
        apgd.n_iter_min = max(int(0.06 * n_iter), 1)
        apgd.size_decr = max(int(0.03 * n_iter), 1)
    adversary.fab.n_iter = n_iter


def package_autoattack(model: torch.nn.Module, *, eps: float, norm: float, version: AutoAttackVersion,
                       nb_classes: int, max_iter: int | None = None, seed: int | None = 0,
                       device: torch.device | str = "cpu") -> Any:
    """The package's ``AutoAttack`` configured as the report's row runs it.

    :param model: Maps inputs in [0, 1] to logits, in eval mode.
    :param eps: ε of the ℓ_norm ball.
    :param norm: inf, 2 or 1.
    :param version: ``"standard"`` or ``"custom"`` (module docstring).
    :param nb_classes: The model's number of outputs. Below 10, APGD-T and FAB-T target every other class; below
                       4, APGD-T (its targeted DLR loss needs 4 classes) is left out.
    :param max_iter: Iterations of every APGD and FAB run (None: the package's 100, the standard protocol).
    :param seed: The package's seed: each of its runs reseeds torch with it (None: the clock, unseeded).
    :param device: Where the package puts the inputs: the model's device.
    """
    check_version(version)
    if norm not in _NORMS:
        raise ValueError(f"AutoAttack supports the ground norms inf, 2 and 1, got {norm!r}")
    # Imported here: zoo sits above attacks (the one autoattack import path, shared with flip_costs).
    from art_wdat.zoo.robustbench_compat import ensure_autoattack_alias

    package = ensure_autoattack_alias()
    adversary = package.AutoAttack(model, norm=_NORMS[norm], eps=eps, version=version, device=device, seed=seed,
                                   attacks=list(CUSTOM_ATTACKS) if version == "custom" else None)
    if version == "custom":
        # The standard version's settings for the runs it keeps (the package leaves custom at 5 restarts).
        adversary.apgd.n_restarts = 1
        adversary.apgd_targeted.n_restarts = 1
    # 9 targets for 10 classes or more (the standard setting); the package would index past the logits below.
    adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = target_classes(nb_classes)
    if nb_classes < 4:
        adversary.attacks_to_run = [a for a in adversary.attacks_to_run if a != "apgd-t"]
    if max_iter is not None and max_iter != PACKAGE_ITERATIONS:
        set_iterations(adversary, max_iter)
    return adversary


class PackageAutoAttack:
    """The package's AutoAttack behind ART's ``generate(x, y)``: numpy in and out, on the classifier's device.

    :param classifier: An ART classifier with class gradients and ``clip_values`` (0, 1) (the package's box): a
                       ``PyTorchClassifier``, whose preprocessing is differentiated as in the distributional attack, or
                       any other through :mod:`art_wdat.attacks.bridge`.
    :param eps: ε.
    :param norm: The ground norm: inf or 2 (or 1).
    :param version: ``"standard"`` or ``"custom"``.
    :param max_iter: Iterations of every APGD and FAB run (None: 100).
    :param batch_size: Inputs per call of the package's runs (its random starts are drawn per batch).
    :param seed: The package's seed.
    """

    def __init__(self, classifier: PyTorchClassifier, *, eps: float, norm: float, version: AutoAttackVersion,
                 max_iter: int | None = None, batch_size: int = 128, seed: int | None = 0) -> None:
        clip = classifier.clip_values
        if clip is None or np.any(np.asarray(clip[0]) != 0) or np.any(np.asarray(clip[1]) != 1):
            raise ValueError("AutoAttack (the autoattack package) needs a classifier with clip_values=(0, 1): it "
                             "clips to [0, 1]; use the 'apgd-art' attack for other boxes")
        self.classifier = classifier
        self.batch_size = batch_size
        self.model = _Logits(bridge.forward_fn(classifier, batch_size=batch_size))
        self.adversary = package_autoattack(self.model, eps=eps, norm=norm, version=version,
                                            nb_classes=classifier.nb_classes, max_iter=max_iter, seed=seed,
                                            device=bridge.device_of(classifier))

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Adversarial examples of ``x`` (labels ``y``: indices or one-hot; required)."""
        if y is None:
            raise ValueError("AutoAttack needs the true labels y")
        labels = np.asarray(y)
        labels = labels.argmax(axis=1) if labels.ndim == 2 else labels
        device = bridge.device_of(self.classifier)
        # A copy: the caller's array may be read-only, and is never written to.
        x_t = torch.tensor(np.asarray(x, dtype=np.float32), device=device)
        y_t = torch.as_tensor(labels.astype(np.int64), device=device)
        with bridge.eval_mode(self.classifier):
            x_adv, _ = self.adversary.run_standard_evaluation(x_t, y_t, batch_size=self.batch_size)
        return x_adv.detach().cpu().numpy().astype(np.asarray(x).dtype, copy=False)


def autoattack_note(version: AutoAttackVersion, max_iter: int | None, norm: float, nb_classes: int) -> str:
    """The report's note saying which AutoAttack ran and whether it is RobustBench's protocol."""
    iters = PACKAGE_ITERATIONS if max_iter is None else max_iter
    targets = target_classes(nb_classes)
    apgd_t = f"APGD-T ({targets} targets)" if nb_classes >= 4 else "no APGD-T (it needs 4 classes)"
    if version == "standard":
        runs = f"APGD-CE, {apgd_t}, FAB-T ({targets} targets), Square (5000 queries)"
    else:
        runs = f"APGD-CE + {apgd_t}, 1 restart each; FAB-T and Square left out, so weaker than the standard version"
    note = f"AutoAttack = the autoattack package, version '{version}' ({iters} iterations): {runs}."
    if version == "standard" and iters == PACKAGE_ITERATIONS and targets == TARGET_CLASSES:
        if math.isinf(norm):
            note += " At ε = δ this is RobustBench's leaderboard protocol (ℓ∞)."
        return note
    return note + (" Not RobustBench's protocol: use the standard version at 100 iterations "
                   "(CLI: --autoattack-version standard) for numbers comparable with the leaderboard.")
