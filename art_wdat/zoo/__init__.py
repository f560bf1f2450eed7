"""Models and data: architectures, ART classifiers, RobustBench and local checkpoints, data sets.

* :class:`SmallCNN` (:mod:`~art_wdat.zoo.architectures`): a small conv net for 1x8x8 digits and 3x32x32 CIFAR.
* :func:`make_classifier` (:mod:`~art_wdat.zoo.classifier`): wrap any ``nn.Module`` (logits out) as an ART
  :class:`PyTorchClassifier`.
* :func:`load_robustbench` (:mod:`~art_wdat.zoo.robustbench`): a RobustBench model-zoo entry as an ART
  classifier, with readable errors and an offline path (a checkpoint file placed where robustbench looks for it).
* :func:`save_checkpoint_model` / :func:`load_local_checkpoint` (:mod:`~art_wdat.zoo.local`): a single-file
  checkpoint holding only tensors and plain python values, read back with ``torch.load(..., weights_only=True)``
  so that loading a checkpoint never executes code.
* :func:`~art_wdat.zoo.user.load_user_module` / :func:`~art_wdat.zoo.user.wrap_user_module`
  (:mod:`~art_wdat.zoo.user`): the user's own model files: ``FILE.py:FACTORY`` plus a state_dict, TorchScript,
  ``torch.export``.

This package is also served under the module path of earlier releases, ``art_wdat.models``.
"""

from art_wdat.zoo.architectures import SmallCNN
from art_wdat.zoo.classifier import DEVICES, clip_pair, make_classifier
from art_wdat.zoo.files import ModelUnavailableError
from art_wdat.zoo.local import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    RB_PREFIX,
    load_local_checkpoint,
    read_checkpoint,
    save_checkpoint_model,
)
from art_wdat.zoo.robustbench import (
    ROBUSTBENCH_DATASETS,
    ROBUSTBENCH_THREAT_MODELS,
    build_zoo_architecture,
    load_robustbench,
    robustbench_checkpoint_path,
)

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "DEVICES", "RB_PREFIX", "ROBUSTBENCH_DATASETS",
           "ROBUSTBENCH_THREAT_MODELS", "ModelUnavailableError", "SmallCNN", "build_zoo_architecture", "clip_pair",
           "load_local_checkpoint", "load_robustbench", "make_classifier", "read_checkpoint",
           "robustbench_checkpoint_path", "save_checkpoint_model"]
