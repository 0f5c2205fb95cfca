"""Argument types of the `kws` command line: each turns a flag's text into a value or raises
argparse.ArgumentTypeError, which argparse prints as one line naming the flag (exit code 2).
Standard library only: the torch-free commands use them too."""
from __future__ import annotations

import argparse
import os

from .config import MAX_CONV_CHANNELS, MAX_FRAME_STACK, FeatureConfig


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def _number(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None


def positive_float(s: str) -> float:
    v = _number(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def nonneg_float(s: str) -> float:
    v = _number(s)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def probability(s: str) -> float:
    v = positive_float(s)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {v}")
    return v


def fraction(s: str) -> float:
    """A number in [0, 1)."""
    v = _number(s)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def n_mfcc_arg(s: str) -> int:
    v = positive_int(s)
    if v > FeatureConfig.n_mels:
        raise argparse.ArgumentTypeError(f"must be at most the {FeatureConfig.n_mels} mel bands, got {v}")
    return v


def f_min_arg(s: str) -> float:
    v = _number(s)
    if not 0 <= v < FeatureConfig.f_max:
        raise argparse.ArgumentTypeError(f"must be in [0, {FeatureConfig.f_max:g}) Hz, got {v:g}")
    return v


def conv_channels_arg(s: str) -> int:
    v = nonneg_int(s)
    if v > MAX_CONV_CHANNELS:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_CONV_CHANNELS}], got {v}")
    return v


def frame_stack_arg(s: str) -> int:
    v = positive_int(s)
    if v > MAX_FRAME_STACK:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_FRAME_STACK}, got {v}")
    return v


def word_list(s: str) -> tuple[str, ...]:
    words = tuple(w.strip() for w in s.split(",") if w.strip())
    if not words:
        raise argparse.ArgumentTypeError("expected comma-separated words, e.g. yes,no,stop")
    bad = [w for w in words if w.startswith("_") or "/" in w]
    if bad:
        raise argparse.ArgumentTypeError(f"not usable as word names: {bad}")
    return words


def jobs_default() -> int:
    return max(1, min(8, os.cpu_count() or 1))
