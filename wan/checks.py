"""Checks of plain values that every public entry point shares: numbers must be finite and in range, images must
have pixels, JSON from a file must be shallow and small. Each raises ``InputError`` (or the error class given)
naming the input, what was found and what to use instead."""
from __future__ import annotations

import json
import math
import numbers
import re

import torch

from .errors import InputError


def finite_number(value, name: str, low: float | None = None, high: float | None = None, *,
                  low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """``value`` as a float; refuses non-numbers, NaN, infinities and values outside [low, high] (``low_open`` /
    ``high_open``: that bound itself is refused too)."""
    number = _number(value, name)
    tail = f"; {hint}" if hint else ""
    if not math.isfinite(number):
        raise InputError(f"{name} {number!r} is out of range: it must be a finite number{tail}")
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low and low == 0 and not low_open:
        raise InputError(f"{name} {number!r} is out of range: it cannot be negative{tail}")
    if too_low or too_high:
        bounds = [f"{'above' if low_open else 'at least'} {low:g}" if low is not None else "",
                  f"{'below' if high_open else 'at most'} {high:g}" if high is not None else ""]
        raise InputError(f"{name} {number!r} is out of range: it must be {' and '.join(b for b in bounds if b)}{tail}")
    return number


def whole_number(value, name: str, low: int | None = None, high: int | None = None, hint: str = "") -> int:
    """``value`` as an int (a float with no fractional part is accepted); refuses NaN, fractions and the range."""
    number = _number(value, name)
    if isinstance(value, numbers.Integral):  # exact, also beyond float precision (64-bit seeds)
        number = int(value)
    outside = (low is not None and number < low) or (high is not None and number > high)
    if not math.isfinite(number) or number != int(number) or outside:
        span = (f" from {low} to {high}" if low is not None and high is not None else
                f" >= {low}" if low is not None else f" <= {high}" if high is not None else "")
        raise InputError(f"{name} {_short(value)} must be a whole number{span}{'; ' + hint if hint else ''}")
    return int(number)


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or _is_scalar_tensor(value)):
        raise InputError(f"{name} must be a number; got {type(value).__name__} {_short(value)}")
    return float(value)


def check_image(image, name: str, channels_last: bool = False) -> None:
    """A picture tensor [N, C, H, W] (or [N, H, W, C] with ``channels_last``) with at least one pixel and only
    finite values."""
    if not torch.is_tensor(image) or image.dim() != 4:
        found = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        layout = "[N, H, W, C]" if channels_last else "[N, C, H, W]"
        raise InputError(f"{name} must be an image batch {layout}; got {found}")
    n, h, w = (image.shape[0], image.shape[1], image.shape[2]) if channels_last else \
        (image.shape[0], image.shape[2], image.shape[3])
    if n < 1 or h < 1 or w < 1:
        raise InputError(f"{name} has no pixels (batch {n}, {w}x{h}); connect an image with at least one pixel")
    if image.is_floating_point() and not bool(torch.isfinite(image).all()):
        raise InputError(f"{name} contains NaN or infinite values; check the node that made it")


def reference_image(image, task: str, multiple: int, what: str = "the reference image",
                    resize: str = "the reference image") -> tuple[int, int]:
    """One RGB image [3, H, W] whose sides are multiples of ``multiple`` (for ``task``); returns (H, W). The size
    error names ``what`` was found at that size and the nearest smaller size to give ``resize``."""
    if not torch.is_tensor(image) or image.dim() != 3 or image.shape[0] != 3:
        found = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise InputError(f"the reference image must be one RGB image [3, H, W] in [-1, 1]; got {found}")
    h, w = image.shape[1:]
    if h % multiple or w % multiple:
        fit_w, fit_h = w // multiple * multiple or multiple, h // multiple * multiple or multiple
        raise InputError(f"{task} needs a width and height that are multiples of {multiple}; {what} is {w}x{h}: "
                         f"resize {resize} to {fit_w}x{fit_h}")
    return h, w


JSON_DEPTH = 32  # nesting every data file of the pack stays well within (Python's parser fails near 1000)
JSON_SIZE = 64 << 20  # characters
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def json_value(text: str | bytes, what: str, error: type[Exception] = InputError, depth: int = JSON_DEPTH,
               size: int = JSON_SIZE):
    """The JSON value in ``text``; ``error`` naming ``what`` for text that is not UTF-8 JSON, is larger than
    ``size`` characters or nests more than ``depth`` arrays / objects (checked before parsing, in one pass)."""
    try:
        text = text.decode("utf-8") if isinstance(text, (bytes, bytearray)) else text
        if not isinstance(text, str):
            raise ValueError(f"a {type(text).__name__}, not text")
        if len(text) > size:
            raise ValueError(f"{len(text)} characters, more than {size}")
        found = _json_depth(text)
        if found > depth:
            raise ValueError(f"arrays or objects nested {found} deep, more than {depth}")
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError, json.JSONDecodeError
        raise error(f"{what} is not readable JSON ({str(exc)[:200]})") from None


def _json_depth(text: str) -> int:
    import numpy as np

    outside = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8"), np.uint8)  # brackets outside strings
    steps = np.isin(outside, (91, 123)).astype(np.int64) - np.isin(outside, (93, 125))
    return int(steps.cumsum().max(initial=0))


def _is_scalar_tensor(value) -> bool:
    return torch.is_tensor(value) and value.numel() == 1


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
