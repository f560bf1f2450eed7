"""Checks of user arrays at the numpy boundary: fail loudly, name the argument, never modify the input."""

from __future__ import annotations

import math

import numpy as np

# Slack for clip-range checks: inputs that went through float32 or uint8/255 round trips sit a hair outside.
_CLIP_TOL = 1e-6


def check_x(x: object, input_shape: tuple, clip_values: tuple | None, name: str = "x") -> np.ndarray:
    """Validate inputs and return them as an array (not a copy).

    :raises TypeError: if ``x`` is not a numeric numpy array.
    :raises ValueError: for NaN/inf, a shape other than ``(N, *input_shape)``, or values outside clip_values.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"`{name}` must be a numpy array, got {type(x).__name__}.")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"`{name}` must have shape (N, {', '.join(map(str, input_shape))}) to match the estimator's "
                         f"input_shape, got {x.shape}.")
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"`{name}` contains NaN or inf values.")
    if clip_values is not None and x.size:
        lo, hi = (np.asarray(v, dtype=np.float64) for v in clip_values)
        if (x < lo - _CLIP_TOL).any() or (x > hi + _CLIP_TOL).any():
            raise ValueError(f"`{name}` has values in [{x.min():.4g}, {x.max():.4g}], outside the estimator's "
                             f"clip_values [{lo.min():.4g}, {hi.max():.4g}].")
    return x


def check_labels(y: object, n: int, nb_classes: int, name: str = "y") -> np.ndarray | None:
    """Validate labels (indices (N,) or one-hot (N, nb_classes)) and return class indices as int64.

    :raises TypeError: if ``y`` is not a numpy array.
    :raises ValueError: for the wrong length, indices outside [0, nb_classes) or malformed one-hot rows.
    """
    if y is None:
        return None
    if not isinstance(y, np.ndarray):
        raise TypeError(f"`{name}` must be a numpy array of class indices or one-hot rows, got {type(y).__name__}.")
    if y.shape[0] != n:
        raise ValueError(f"`{name}` has {y.shape[0]} labels for {n} inputs.")
    if y.ndim == 2 and not (y.shape[1] == 1 and nb_classes != 1):
        if y.shape[1] != nb_classes:
            raise ValueError(f"`{name}` one-hot rows must have width nb_classes={nb_classes}, got {y.shape[1]}.")
        if y.size and not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise ValueError(f"`{name}` is 2-D but its rows are not one-hot.")
        return y.argmax(axis=1).astype(np.int64)
    flat = y.reshape(n) if y.ndim == 2 else y
    if flat.ndim != 1:
        raise ValueError(f"`{name}` must have shape (N,) or (N, nb_classes), got {y.shape}.")
    if flat.size and (not np.isfinite(flat).all() or (flat != np.round(flat)).any()):
        raise ValueError(f"`{name}` class indices must be integers.")
    if flat.size and (flat.min() < 0 or flat.max() >= nb_classes):
        raise ValueError(f"`{name}` class indices must lie in [0, {nb_classes}), got [{flat.min()}, {flat.max()}].")
    return flat.astype(np.int64)


def in_caller_dtype(x: np.ndarray, x32: np.ndarray, x_adv32: np.ndarray, clip_values: tuple | None) -> np.ndarray:
    """Return the attack's float32 result in the dtype of the caller's ``x``.

    The perturbation, not the point, is carried over (x + (x_adv32 − x32)), so coordinates the attack
    left alone come back bit for bit. Rounding to a coarser dtype (float16) goes towards x: plain
    rounding could lengthen a perturbation by half an ulp and break the budget.
    """
    if x.dtype == np.float32:
        return x_adv32
    delta = x_adv32.astype(np.float64) - x32.astype(np.float64)
    exact = x.astype(np.float64) + delta
    if clip_values is not None:
        exact = np.clip(exact, *(np.asarray(v, dtype=np.float64) for v in clip_values))
    out = exact.astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else exact.astype(np.float32)
    if out.dtype.itemsize < 4:
        longer = np.abs(out.astype(np.float64) - x) > np.abs(exact - x)
        out[longer] = np.nextafter(out[longer], x[longer].astype(out.dtype))
    return out


def check_number(name: str, value: object, low: float, allow_inf: bool = False) -> None:
    """Raise TypeError unless ``value`` is a real number, ValueError if NaN, infinite (unless allowed) or < ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number, got {value!r}.")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low:g}, got {value!r}.")


def check_int(name: str, value: object, low: int) -> None:
    """Raise TypeError unless ``value`` is an integer (not a bool), ValueError if it is < ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value!r}.")


def error_line(err: BaseException, first_line_only: bool = False, limit: int | None = None) -> str:
    """An exception as one line of text for a user-facing message.

    :param first_line_only: Keep the first line of the message only (tracebacks of wrapped errors follow it);
                            otherwise fold every line into one.
    :param limit: Cut the text at this many characters.
    :return: The message, prefixed by the exception's type where the message alone says little (a KeyError's
             quoted key) or is empty.
    """
    text = str(err).strip()
    text = (text.splitlines()[0] if text else "") if first_line_only else " ".join(text.split())
    text = text[:limit] if limit is not None else text
    if isinstance(err, KeyError) or not text:
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text
