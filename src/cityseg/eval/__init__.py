"""Scoring: the official Cityscapes metrics (one accumulator), evaluation of a model or a folder, reports."""
