"""cityseg: semantic segmentation of Cityscapes street scenes in PyTorch."""

__version__ = "0.1.0"

from cityseg.errors import CitysegError  # noqa: E402

__all__ = ["CitysegError", "__version__"]
