"""Data: the Cityscapes layout, the reader, the preprocessed cache and SynthCity."""

from cityseg.data.layout import Sample, find_samples, resolve_root

__all__ = ["Sample", "find_samples", "resolve_root"]
