"""The argument helpers the command modules share (sizes, scales, the dataset root)."""

from __future__ import annotations

import argparse

from cityseg.errors import CitysegError


def parse_size(text: str) -> tuple[int, int]:
    """'128x256' -> (128, 256): height x width."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise CitysegError(f"invalid size {text!r}: expected HxW, e.g. 128x256") from None
    if h <= 0 or w <= 0:
        raise CitysegError(f"invalid size {text!r}: height and width must be positive")
    return h, w


def size_arg(text: str) -> tuple[int, int]:
    """argparse ``type=`` wrapper around ``parse_size``."""
    try:
        return parse_size(text)
    except CitysegError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def scales_arg(text: str) -> tuple[float, ...]:
    """argparse ``type=`` for test-time scales: '0.75,1,1.25' -> (0.75, 1.0, 1.25)."""
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid scales {text!r}: expected e.g. 0.75,1,1.25") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"invalid scales {text!r}: need positive numbers")
    return values


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="ROOT", default=None, help="dataset root (default: $CITYSCAPES_DATASET, else ./data/cityscapes)")
