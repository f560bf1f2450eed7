"""The fine-tuning protocol for already-trained models (:doc:`/maths`).

A model that sits in the minimum of its own (pointwise) adversarial training barely moves under a new
loss with a small learning rate, so W-TRADES fine-tuning first kicks it out of that minimum, in one of
two ways:

* ``"reinit_last"``: re-initialise the classification head, i.e. the **last** ``torch.nn.Linear`` in
  ``model.named_modules()`` order (registration order, which for the usual ``features -> head``
  networks, RobustBench's included, is the output layer), or the module named by ``last_layer``;
* ``"perturb"``: multiply every trainable parameter ``w`` (weights and biases, not buffers such as
  batch-norm statistics) element-wise by ``1 + std·N(0, 1)``: *relative* noise, so each layer is
  disturbed in proportion to its own scale and zero entries stay zero.

Optionally all but the last ``k`` blocks are frozen first (:func:`freeze_except_last`); a perturbation
then only touches what will be trained. Everything draws from torch's global RNG, so seeding it makes
the protocol reproducible.
"""

from __future__ import annotations

import logging
from typing import Literal, get_args

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: The fine-tuning protocols: re-initialise the last layer, or perturb every trainable weight.
FinetuneMode = Literal["reinit_last", "perturb"]
#: The values of ``finetune`` besides None.
FINETUNE_MODES: tuple[str, ...] = get_args(FinetuneMode)


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule of ``model`` called ``name`` (as in ``model.named_modules()``).

    :raises ValueError: naming ``last_layer`` if there is no such module.
    """
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        raise ValueError(f"`last_layer`={name!r} is not a submodule of the model; some names it has: "
                         f"{[n for n in modules if n][-5:]}.")
    return modules[name]


def find_last_linear(model: nn.Module, name: str | None = None) -> tuple[str, nn.Module]:
    """The layer that ``"reinit_last"`` re-initialises, with its name.

    :param model: The network.
    :param name: A module name that overrides the default choice.
    :return: ``(name, module)``: by default the last ``nn.Linear`` in registration order.
    :raises ValueError: if ``name`` is not a submodule, or the model has no ``nn.Linear``.
    """
    if name is not None:
        return name, find_module(model, name)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("The model has no torch.nn.Linear for finetune='reinit_last'; "
                         "name the head with `last_layer`.")
    return linears[-1]


def reinit_module(module: nn.Module) -> None:
    """Re-initialise ``module`` and all its submodules with their own ``reset_parameters`` (torch's defaults).

    :raises ValueError: if nothing in ``module`` can be re-initialised.
    """
    resets = [reset for m in module.modules() if callable(reset := getattr(m, "reset_parameters", None))]
    if not resets:
        raise ValueError(f"`last_layer` ({type(module).__name__}) has no reset_parameters() to re-initialise it.")
    for reset in resets:
        reset()


@torch.no_grad()
def perturb_weights(model: nn.Module, std: float) -> int:
    """Multiply every trainable parameter element-wise by ``1 + std·N(0, 1)`` (relative Gaussian noise).

    :param model: The network, changed in place.
    :param std: The relative noise level (0.01: each weight moves by about 1% of itself).
    :return: The number of parameter tensors perturbed.
    """
    params = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    for p in params:
        p.mul_(1.0 + std * torch.randn_like(p))
    return len(params)


def parameter_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's direct children that hold parameters, in registration order ("blocks").

    Parameter-free children (activations, ``Flatten``, pooling) are not blocks. A model with a single such
    child (a wrapper) is looked through, so that its inner layers are the blocks.
    """
    blocks = [(n, m) for n, m in model.named_children() if any(True for _ in m.parameters())]
    if len(blocks) == 1 and not any(True for _ in blocks[0][1].parameters(recurse=False)):
        inner = parameter_blocks(blocks[0][1])
        return [(f"{blocks[0][0]}.{n}", m) for n, m in inner]
    return blocks


def freeze_except_last(model: nn.Module, k: int) -> list[tuple[str, nn.Module]]:
    """Freeze (``requires_grad=False``) all parameters except those of the last ``k`` blocks.

    :param model: The network, changed in place.
    :param k: How many of the last blocks (see :func:`parameter_blocks`) stay trainable; at least 1.
    :return: The frozen blocks ``(name, module)``; the trainer keeps them in eval mode while training.
    :raises ValueError: naming ``freeze_except_last`` if ``k`` is below 1.
    """
    if k < 1:
        raise ValueError(f"`freeze_except_last` must be >= 1, got {k}.")
    blocks = parameter_blocks(model)
    frozen = blocks[:-k] if k < len(blocks) else []
    for _, block in frozen:
        block.requires_grad_(False)
    logger.info("Froze %d of %d blocks; trainable: %s", len(frozen), len(blocks), [n for n, _ in blocks[len(frozen):]])
    return frozen


def apply_finetune(model: nn.Module, mode: FinetuneMode | None, weight_noise: float,
                   last_layer: str | None) -> None:
    """Apply the fine-tuning protocol ``mode`` (None, "reinit_last" or "perturb") to ``model`` in place.

    :raises ValueError: naming ``finetune`` for an unknown mode.
    """
    if mode is None:
        return
    if mode == "reinit_last":
        name, layer = find_last_linear(model, last_layer)
        reinit_module(layer)
        logger.info("Fine-tuning: re-initialised the last layer %r (%s)", name, type(layer).__name__)
    elif mode == "perturb":
        count = perturb_weights(model, weight_noise)
        logger.info("Fine-tuning: multiplied %d parameter tensors by (1 + %.3g·N(0,1))", count, weight_noise)
    else:
        raise ValueError(f"`finetune` must be None or one of {FINETUNE_MODES}, got {mode!r}.")
