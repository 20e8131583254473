"""``cityseg benchmark``: training, inference and data-loading speed, measured against the machine's limits.

One run measures, on the same inputs (a fixed random batch; one SynthCity frame at 1024x2048), with
``warmup`` untimed repetitions and then the median of ``iters`` timed ones:

* train step images/s (``cityseg.train.loop.train_step``: forward, cross-entropy on every output with
  a channel per class and the boundary loss on a boundary head, backward, Adam): fp32 eager NCHW (the naive
  baseline) and the project's fast path (``cityseg.runtime.resolve_fast("auto", device)``:
  channels_last, plus bf16 autocast on CPUs with native bf16 / fp16 AMP on CUDA);
* inference images/s: fp32 eager, fast path, onnxruntime (the ``cityseg.infer.onnx`` ONNX file);
* full-resolution prediction seconds per 1024x2048 image (``cityseg.infer.predictor.Predictor``: resize,
  model, bilinear upsampling, argmax);
* data loading images/s through a ``DataLoader`` (batch ``batch``, no workers) from the prepared uint8
  cache and from raw PNGs (full-size SynthCity frames unless ``data_root`` names a dataset);
* params, forward GFLOPs per image (``torch.utils.flop_counter.FlopCounterMode``), the fp32 and bf16
  matmul roof of the machine (large ``torch.mm``), and the peak resident memory (``ru_maxrss``).

Each model runs in its own spawned process by default (``isolate=True``), so ``peak_rss_mb`` is that
model's peak and one model running out of memory does not end the run. ``profile_model`` splits a
train step's time by operator type (convolutions by kernel shape, cat, batch norm, conversions, ...).

Modules: ``config`` (what is measured, the result keys, ``BenchConfig`` and the ``BenchContext`` the models
share), ``machine`` (device, timing, roof, bandwidth), ``model_speed`` and ``one_model`` (one model),
``loader_speed`` and ``augment`` (the data path), ``int8``, ``eval_speed``, ``roofline``, ``profile``,
``report`` (JSON, markdown, plot) and ``run`` (the phases in order).
"""

from cityseg.infer.fastpath import has_fused_path
from cityseg.models import count_params, forward_gflops
from cityseg.tools.benchmark.config import ALL_KEYS, BEGIN, DEFAULT_MODELS, END, MODEL_KEYS, ONNX_FULLRES_KEY, SKIPPABLE, BenchConfig, BenchContext
from cityseg.tools.benchmark.machine import resolve_device
from cityseg.tools.benchmark.model_speed import build
from cityseg.tools.benchmark.profile import profile_markdown, profile_model
from cityseg.tools.benchmark.report import markdown, plot, result_json, write_markdown
from cityseg.tools.benchmark.run import PHASES, run_benchmark

__all__ = [
    "ALL_KEYS",
    "BEGIN",
    "DEFAULT_MODELS",
    "END",
    "MODEL_KEYS",
    "ONNX_FULLRES_KEY",
    "PHASES",
    "SKIPPABLE",
    "BenchConfig",
    "BenchContext",
    "build",
    "count_params",
    "forward_gflops",
    "has_fused_path",
    "markdown",
    "plot",
    "profile_markdown",
    "profile_model",
    "resolve_device",
    "result_json",
    "run_benchmark",
    "write_markdown",
]
