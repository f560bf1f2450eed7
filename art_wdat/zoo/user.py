"""The user's own models: a factory in a python file (plus a state_dict), a TorchScript file, a ``torch.export`` file.

The forms of a model *spec* (``art-wdat --model``, :func:`load_user_module`):

* ``path/to/file.py:factory`` imports the file and calls ``factory()``; ``path/to/file.py:factory:a,k=v`` passes
  string arguments, ``factory("a", k="v")`` (``zoo.py:load:resnet2b`` calls ``load("resnet2b")``). Importing the
  file runs its code: give only files you trust, as you would ``python file.py``.
* a TorchScript file (``torch.jit.save``), read with ``torch.jit.load``;
* a ``torch.export`` file (``torch.export.save``, usually ``.pt2``), read with ``torch.export.load``; export it
  with a dynamic batch dimension, ``dynamic_shapes=({0: torch.export.Dim("batch")},)``.

``weights`` (a file written by ``torch.save(model.state_dict(), ...)``) are loaded into any of them, read with
``weights_only=True``. The module must return logits; its normalisation either lives inside it or is given as
``(mean, std)`` to :func:`wrap_user_module`, which learns the number of classes from one forward pass.
"""

from __future__ import annotations

import importlib.util
import pickle
import re
import sys
import types
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from art_wdat.validation import error_line
from art_wdat.zoo.classifier import make_classifier
from art_wdat.zoo.files import first_line, load_plain_file

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

FileKind = Literal["torchscript", "export", "torch.save"]
#: Keys under which training scripts commonly nest a state_dict.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
#: Inputs of the forward pass that checks a module: two, so that a program exported for batch 1 is caught.
PROBE_BATCH = 2


@dataclass(frozen=True)
class FactorySpec:
    """``file.py:factory[:args]`` taken apart: the factory is called as ``factory(*args, **kwargs)``."""

    path: Path
    name: str
    args: tuple[str, ...] = ()
    kwargs: dict[str, str] = field(default_factory=dict)


def parse_factory_spec(spec: str) -> FactorySpec | None:
    """``file.py:factory[:a,k=v]`` as a :class:`FactorySpec`; None for a spec that names no python file.

    :raises ValueError: a python file without a factory name, or an empty argument.
    """
    head, mark, rest = spec.partition(".py:")
    if not mark:
        if spec.endswith(".py"):
            raise ValueError(f"--model {spec!r}: name the function that builds the model, e.g. {spec}:make_model")
        return None
    name, _, arg_text = rest.partition(":")
    if not name.isidentifier():
        raise ValueError(f"--model {spec!r}: {name!r} is not a python function name (FILE.py:FUNCTION[:ARGS])")
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in arg_text.split(",") if arg_text else ():
        key, eq, value = part.partition("=")
        if not part.strip() or (eq and not key.strip().isidentifier()):
            raise ValueError(f"--model {spec!r}: bad factory argument {part!r} (ARGS are a,b or key=value)")
        if eq:
            kwargs[key.strip()] = value
        else:
            args.append(part)
    return FactorySpec(Path(head + ".py"), name, tuple(args), kwargs)


def import_factory(spec: FactorySpec) -> Callable[..., Any]:
    """Import ``spec.path`` (its folder first on ``sys.path`` meanwhile, for its own imports) and return the factory."""
    if not spec.path.is_file():
        raise FileNotFoundError(f"no python file at {spec.path}")
    module_name = f"art_wdat_user_{re.sub(r'[^0-9a-zA-Z_]', '_', spec.path.stem)}"
    loader_spec = importlib.util.spec_from_file_location(module_name, spec.path)
    if loader_spec is None or loader_spec.loader is None:
        raise ImportError(f"cannot import {spec.path}")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look their module up here
    folder = str(spec.path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        loader_spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    factory = getattr(module, spec.name, None)
    if not callable(factory):
        raise AttributeError(f"{spec.path} has no function {spec.name!r}")
    return factory


def model_file_kind(path: Path) -> FileKind:
    """What wrote ``path``: ``torch.jit.save``, ``torch.export.save``, or (anything else) ``torch.save``."""
    if not zipfile.is_zipfile(path):
        return "torch.save"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
        return "export"
    return "torch.save"


def _train_flag_only(self: nn.Module, mode: bool = True) -> nn.Module:
    self.training = mode
    return self


def _eval_flag_only(self: nn.Module) -> nn.Module:
    return _train_flag_only(self, False)


def load_exported(path: Path) -> nn.Module:
    """The module of a ``torch.export`` file, refused if its batch size is fixed.

    An exported graph refuses ``train()``/``eval()`` (its dropout and batch norm are traced in one mode); they
    only set its flag here, so that ART and the attacks can switch modes around it.
    """
    program = torch.export.load(str(path))
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    shape = getattr(inputs[0].meta.get("val"), "shape", None) if inputs else None
    if shape is not None and isinstance(shape[0], int):
        raise ValueError(f"{path} was exported for batches of exactly {shape[0]}; export it with a dynamic batch "
                         "dimension: torch.export.export(model, (x,), "
                         "dynamic_shapes=({0: torch.export.Dim('batch')},))")
    module = program.module()
    module.train = types.MethodType(_train_flag_only, module)  # type: ignore[method-assign]
    module.eval = types.MethodType(_eval_flag_only, module)  # type: ignore[method-assign]
    return module


def load_scripted(path: Path) -> nn.Module:
    """The module of a TorchScript file (torch's deprecation warning of ``jit.load`` is ours, not the user's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict in ``path`` (``weights_only=True``): plain, nested under a usual key, or from ``DataParallel``."""
    payload = load_plain_file(path)
    if isinstance(payload, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping) or not payload or not all(isinstance(v, torch.Tensor)
                                                                  for v in payload.values()):
        raise ValueError(f"{path} holds no state_dict (a mapping of names to tensors, torch.save(model.state_dict()))")
    state = {str(k): v for k, v in payload.items()}
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(module: nn.Module, path: Path) -> None:
    """Load the state_dict in ``path`` into ``module`` (strict): ValueError naming the first mismatch."""
    try:
        module.load_state_dict(read_state_dict(path), strict=True)
    except RuntimeError as err:
        # torch lists the mismatched keys on the lines after its first: fold them into the one line.
        raise ValueError(f"the weights in {path} do not fit the model: {error_line(err, limit=400)}") from err


def load_user_module(spec: str, weights: Path | None = None) -> nn.Module:
    """The module of a factory spec, TorchScript or ``torch.export`` file, with ``weights`` loaded if given.

    :param spec: ``file.py:factory[:args]`` or the path of a TorchScript / ``torch.export`` file.
    :param weights: a state_dict saved with ``torch.save``, to load into the module.
    :raises ValueError: a spec that is none of these, or weights that do not fit.
    """
    factory = parse_factory_spec(spec)
    if factory is not None:
        module = import_factory(factory)(*factory.args, **factory.kwargs)
        if not isinstance(module, nn.Module):
            raise TypeError(f"{factory.path}:{factory.name} returned {type(module).__name__}, not a torch.nn.Module")
    else:
        kind = model_file_kind(Path(spec))
        if kind == "torch.save":
            raise ValueError(f"{spec} is neither a TorchScript nor a torch.export file")
        module = load_scripted(Path(spec)) if kind == "torchscript" else load_exported(Path(spec))
    if weights is not None:
        load_weights(module, Path(weights))
    return module.eval()


def is_user_model(spec: str) -> bool:
    """Whether ``spec`` is a factory spec or an existing TorchScript / ``torch.export`` file."""
    if ".py:" in spec or spec.endswith(".py"):
        return True
    path = Path(spec)
    return path.is_file() and model_file_kind(path) != "torch.save"


def output_width(module: nn.Module, input_shape: Sequence[int]) -> int:
    """The number of outputs per input of ``module``, from one forward pass of zeros; ValueError if it cannot run."""
    param = next(iter(module.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            out = module(torch.zeros((PROBE_BATCH, *input_shape), dtype=dtype, device=device))
    except Exception as err:  # whatever the model raises, the cause for the user is the input shape
        raise ValueError(f"the model cannot take inputs of shape {tuple(input_shape)} "
                         f"({type(err).__name__}: {first_line(err)})") from err
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != PROBE_BATCH:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits of shape (N, classes); for {PROBE_BATCH} inputs of shape "
                         f"{tuple(input_shape)} it returned {got}")
    return int(out.shape[1])


def wrap_user_module(module: nn.Module, input_shape: Sequence[int], *, preprocessing: Any = None,
                     clip_values: Sequence[float] = (0.0, 1.0), device: str = "cpu") -> PyTorchClassifier:
    """``module`` as an ART classifier whose number of classes is its output width (one forward pass).

    :param preprocessing: None (the normalisation lives inside the module) or ``(mean, std)``.
    """
    return make_classifier(module, input_shape, output_width(module, input_shape), clip_values=clip_values,
                           preprocessing=preprocessing, device=device)


def saved_file_hint(path: Path) -> str:
    """Why ``torch.save`` file ``path`` is not an art_wdat checkpoint, and which form of ``--model`` fits it."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return (f"{path} holds a pickled model (torch.save(model)), which only code from the file could rebuild; "
                "save model.state_dict() and give --model FILE.py:FACTORY --weights PATH, or save the model with "
                "torch.jit.save or torch.export.save")
    except Exception as err:  # unreadable for any reason: say so in one line
        return f"cannot read {path} ({type(err).__name__}: {first_line(err)})"
    try:
        read_state_dict(path)
    except (ValueError, OSError):
        return f"{path} is not an art_wdat checkpoint (it holds a {type(payload).__name__})"
    return (f"{path} holds a state_dict (weights without an architecture): give the code that builds the model, "
            f"--model FILE.py:FACTORY --weights {path}")
