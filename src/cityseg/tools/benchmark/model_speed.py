"""One model's speed: building it, the training step (the library's ``train.loop.train_step``), inference
eager / fused / ONNX / int8, the fast-path variants, and full-resolution prediction."""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cityseg import labels
from cityseg.checkpoint import Checkpoint
from cityseg.infer import fastpath
from cityseg.infer.onnx import export_onnx, load_onnx
from cityseg.infer.predictor import Predictor
from cityseg.models import build_model, model_options, set_fused, weightless_options
from cityseg.runtime import autocast, train_channels_last
from cityseg.tools.benchmark.config import NUM_CLASSES
from cityseg.tools.benchmark.machine import fast_path
from cityseg.train import distributed as D
from cityseg.train.loop import StepContext, StopFlags, new_running, train_step
from cityseg.train.losses import as_outputs, build_loss


# ---- models ---------------------------------------------------------------------------------------
def build(name: str, size: tuple[int, int]) -> torch.nn.Module:
    """Build ``name`` for 34 classes (random weights: speed does not depend on them); models tied to one
    input size are built for ``size``."""
    options = {"input_size": tuple(size)} if "input_size" in model_options(name) else {}
    model = build_model(name, num_classes=NUM_CLASSES, **options, **weightless_options(name))
    check = getattr(model, "check_input_shape", None)
    if check is not None:
        check(*size)
    return model


def fused(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose multi-branch blocks run fused (same function, same weights)."""
    return set_fused(copy.deepcopy(model), True)


def make_batch(batch: int, size: tuple[int, int], device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed random inputs every measurement uses: images in [0, 1) and labelIds 0..33."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, *size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch, *size), generator=g)
    return x.to(device), y.to(device)


# ---- training -------------------------------------------------------------------------------------
def loss_specs(outputs: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Recipe loss entries for every training output: cross-entropy on each output with a channel per class,
    the boundary loss on a one-channel ``boundary`` head, so training-only heads cost what they cost in training."""
    return [{"name": "ce", "output": k} if v.shape[1] > 1 else {"name": "boundary", "output": k} for k, v in outputs.items()]


def step_context(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fast: bool, work: Path) -> StepContext:
    """The training step's parts for ``model`` as ``cityseg train`` builds them: Adam at a constant learning rate,
    the loss of every output at full size (``train.loss_scale = 1``, the papers' setting), the fast path if asked."""
    device = x.device
    channels_last, dtype = fast_path(device) if fast else (False, None)
    channels_last = train_channels_last(model, channels_last)
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(device, dtype):  # one untimed forward names the outputs the loss reads
        outputs = as_outputs(model(x))
    criterion = build_loss(loss_specs(outputs), NUM_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and dtype == torch.float16)
    info = D.DistInfo(device=device)
    return StepContext(model, criterion, optimizer, scheduler, scaler, info, channels_last, dtype, 0.0, "stop", work / "no-checkpoint.pt")


def train_step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fast: bool, work: Path = Path(".")) -> Callable[[], None]:
    """One training step (forward, loss, backward, Adam) of ``train.loop.train_step`` as a closure; ``model``
    is trained in place."""
    ctx = step_context(model, x, y, fast, work)
    running = new_running()

    def step() -> None:
        train_step(ctx, x, y, StopFlags, running, 0, 0)

    return step


# ---- inference ------------------------------------------------------------------------------------
def infer_fn(model: torch.nn.Module, x: torch.Tensor, fast: bool) -> Callable[[], Any]:
    device = x.device
    channels_last, dtype = fast_path(device, training=False) if fast else (False, None)
    model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), autocast(device, dtype):
            return model(x)

    return run


def variant_rates(model: torch.nn.Module, x: torch.Tensor, iters: int, cache: Path) -> dict[str, Any]:
    """Every inference variant the measured fast path chooses from, timed (wall clock) in interleaved rounds,
    and the variant ``fastpath.choose`` picks in its own, earlier trial (a fresh ``cache`` file, as on a
    first use): {"infer_variants_img_s": {label: img/s}, "infer_variant_pick", and, where there is an
    alternative, "infer_variant_best_alternative" (the fastest other variant) and
    "infer_variant_pick_ratio" (the pick's time over that variant's time)}."""
    with contextlib.suppress(OSError):
        cache.unlink()
    pick = fastpath.choose(model, tuple(x.shape), x.device, path=cache).label()
    _, times = fastpath.trial(model, tuple(x.shape), x.device, rounds=iters, timer=time.perf_counter)
    out: dict[str, Any] = {"infer_variants_img_s": {k: x.shape[0] / v for k, v in times.items()}, "infer_variant_pick": pick}
    others = {k: v for k, v in times.items() if k != pick}
    if others:
        best = min(others, key=others.__getitem__)
        out["infer_variant_best_alternative"], out["infer_variant_pick_ratio"] = best, times[pick] / others[best]
    return out


def fullres_fn(model: torch.nn.Module, size: tuple[int, int], image: np.ndarray, device: torch.device) -> Callable[[], Any]:
    """Full-resolution prediction with the fast path (``Predictor.predict``: resize, model, upsample, argmax)."""
    channels_last, dtype = fast_path(device, training=False)
    predictor = Predictor(model, "labelIds", size, device=device, channels_last=channels_last, bf16=dtype == torch.bfloat16, num_classes=NUM_CLASSES)
    return lambda: predictor.predict(image)


# ---- ONNX -----------------------------------------------------------------------------------------
def export_for_ort(name: str, model: torch.nn.Module, size: tuple[int, int], folder: Path) -> Path:
    """Export ``model`` with ``cityseg.infer.onnx.export_onnx`` (the same path as ``cityseg export``)."""
    options = {"input_size": list(size)} if "input_size" in model_options(name) else {}
    ckpt = Checkpoint(
        model={k: v.detach().cpu() for k, v in model.state_dict().items()},
        model_name=name,
        model_options=options,
        label_mode="labelIds",
        num_classes=NUM_CLASSES,
        class_names=list(labels.LABELID_NAMES),
        input_size=list(size),
    )
    return Path(export_onnx(ckpt.to_dict(), folder / f"{name}-{size[0]}x{size[1]}.onnx", size=size)["path"])


def onnx_infer_fn(path: Path, x: torch.Tensor) -> Callable[[], Any]:
    session, _ = load_onnx(path, threads=torch.get_num_threads())
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy())}
    return lambda: session.run(None, feed)


def fullres_onnx_fn(path: Path, image: np.ndarray) -> Callable[[], Any]:
    """The same full-resolution prediction with the model exported to ONNX, run on onnxruntime."""
    predictor = Predictor.from_onnx(path)
    return lambda: predictor.predict(image)


def quantized(path: Path, calib_root: str | os.PathLike, calib_split: str, frames: int = 8) -> Path:
    """The int8 quantisation of the fp32 export ``path`` (beside it, ``-int8`` added), calibrated on ``frames``
    frames of ``calib_root``'s ``calib_split``."""
    # onnxruntime's quantisation tools are an optional dependency (the ``onnx`` extra): imported on use only
    from cityseg.infer.quantize import quantize_onnx

    return Path(quantize_onnx(path, path.with_name(path.stem + "-int8.onnx"), calib_root, calib_split, frames)["path"])


def argmax_agreement(fp32: Path, int8: Path, image: np.ndarray) -> float:
    """The fraction of pixels whose class the int8 model keeps against fp32, at the model's size."""
    a, b = (Predictor.from_onnx(p).predict_model_size(image) for p in (fp32, int8))
    return float((a == b).mean())
