"""Image -> logits / labelIds at full resolution, the way evaluation and submission need them.

``Predictor`` wraps a model (an ``nn.Module`` or an onnxruntime session) with the preprocessing it was
trained with (resize to its input size with area/bilinear interpolation, /255, optional mean/std), runs it
whole-image or as a sliding window (mmsegmentation ``slide_inference`` semantics), optionally with
horizontal-flip and multi-scale test-time augmentation (softmax averaged over the passes), and upsamples
the scores bilinearly (``align_corners=False``) to the image's full size. ``predict`` never holds the full
CxHxW score volume: it upsamples and takes the argmax one band of rows at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cityseg import labels
from cityseg.data.transforms import check_interpolation, preprocess  # the one preprocessing implementation (re-exported here)
from cityseg.errors import CitysegError
from cityseg.infer.onnx import OnnxModel, is_onnx_session, load_onnx
from cityseg.infer.upsample import argmax_upsampled, upsample
from cityseg.runtime import autocast

_MODES = ("whole", "slide")


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise CitysegError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    return image


# ---- the predictor -----------------------------------------------------------------------------
class Predictor:
    """Full-resolution inference with the preprocessing a checkpoint was trained with.

    ``fast="auto"`` runs the variant (BN folded; layout, bf16, fused blocks) that a timed trial on this CPU
    picked for this model and input shape (``cityseg.infer.fastpath``; cached, so the trial runs once).
    ``mode="whole"`` resizes the image to ``input_size`` x scale and runs the model once per scale (and
    flip); ``mode=None`` (the default) takes the model's own ``full_res_mode`` (the one recorded in an ONNX
    export's metadata), so a model whose whole frame does not fit in memory slides. ``mode="slide"`` resizes the image to its full size x scale and runs ``window``-sized crops
    every ``stride`` pixels (defaults: ``input_size`` and 2/3 of it), averaging overlapping logits with a
    count map, as mmsegmentation does; use it for models trained on crops of full-resolution images.
    With ``flip`` or several ``scales`` the softmax probabilities of all passes are averaged.
    """

    def __init__(
        self,
        model: Any,
        label_mode: str,
        input_size: Sequence[int],
        interpolation: str = "area",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        flip: bool = False,
        scales: Iterable[float] = (1.0,),
        mode: str | None = None,
        window: Sequence[int] | None = None,
        stride: Sequence[int] | None = None,
        batch_size: int = 1,
        channels_last: bool = False,
        bf16: bool = False,
        num_classes: int | None = None,
        fast: str | None = None,
        channel_order: str = "RGB",
        void_class: bool | None = None,
    ):
        self.label_mode = labels.check_label_mode(label_mode)
        self.num_classes = int(num_classes) if num_classes is not None else labels.num_classes(label_mode)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.interpolation = check_interpolation(interpolation, exact=True)
        self.mean = None if mean is None else [float(v) for v in mean]
        self.std = None if std is None else [float(v) for v in std]
        self.channel_order = channel_order
        # a void output after the classes (the model's own flag, or an export's metadata)
        self.void_class = bool(getattr(model, "void_class", False) if void_class is None else void_class)
        self.outputs = self.num_classes + int(self.void_class)
        self.device = torch.device(device)
        self._set_passes(model, flip, scales, mode, window, stride)
        self.batch_size = max(1, int(batch_size))
        self.bf16 = bool(bf16)
        self.channels_last = bool(channels_last)
        self.onnx = is_onnx_session(model)
        if fast not in (None, "auto"):
            raise CitysegError(f"unknown fast setting {fast!r}: choose auto or leave it unset")
        self.fast_choice = None
        if self.onnx:
            self.model = OnnxModel(model)
        elif fast == "auto":
            self.model = self._auto_fast(model.to(self.device).eval())
        else:
            self.model = model.to(self.device).eval()
            if self.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)

    def _set_passes(self, model: Any, flip: bool, scales: Iterable[float], mode: str | None, window, stride) -> None:
        """The passes over an image: flip, scales, whole or slide (the model's own choice by default) and
        the sliding window's size and stride (default: the input size, every 2/3 of it)."""
        self.flip = bool(flip)
        self.scales = tuple(float(s) for s in scales) or (1.0,)
        if any(s <= 0 for s in self.scales):
            raise CitysegError(f"scales must be positive, got {self.scales}")
        if mode is None:
            mode = getattr(model, "full_res_mode", None) or "whole"
        if mode not in _MODES:
            raise CitysegError(f"unknown inference mode {mode!r}: choose whole or slide")
        self.mode = mode
        self.window = tuple(int(v) for v in (window or self.input_size))
        if stride is None:
            stride = tuple(max(1, (2 * v) // 3) for v in self.window)
        self.stride = tuple(int(v) for v in stride)
        if min(self.window) <= 0 or min(self.stride) <= 0:
            raise CitysegError(f"window {self.window} and stride {self.stride} must be positive")

    def _auto_fast(self, model: torch.nn.Module) -> torch.nn.Module:
        """The variant ``cityseg.infer.fastpath`` measured fastest for this model, shape and CPU (cached)."""
        from cityseg.infer import fastpath

        shape = (1, 3, *self.input_size) if self.mode == "whole" else (self.batch_size, 3, *self.window)
        if self.device.type == "cpu":
            choice = fastpath.choose(model, shape, self.device)
        else:
            choice = fastpath.Choice(channels_last=True)
        self.fast_choice = choice
        self.channels_last, self.bf16 = choice.channels_last, choice.bf16
        return fastpath.prepare(model, choice, shape[-2:]).to(self.device)

    # -- construction from files ---------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path_or_ckpt: dict[str, Any] | str | os.PathLike,
        device: str | torch.device = "cpu",
        expect_model: str | None = None,
        expect_label_mode: str | None = None,
        **overrides: Any,
    ) -> Predictor:
        """Rebuild model and preprocessing from a checkpoint (or an exported ``.onnx`` file)."""
        if not isinstance(path_or_ckpt, dict) and str(path_or_ckpt).lower().endswith(".onnx"):
            return cls.from_onnx(path_or_ckpt, expect_model=expect_model, expect_label_mode=expect_label_mode, **overrides)
        from cityseg.models import model_from_checkpoint

        model, ckpt = model_from_checkpoint(path_or_ckpt, expect_model=expect_model, expect_label_mode=expect_label_mode, map_location="cpu")
        where = "" if isinstance(path_or_ckpt, dict) else f"{path_or_ckpt}: "
        if not ckpt.get("input_size"):
            raise CitysegError(f"{where}checkpoint has no input_size")
        kwargs = _preprocessing(ckpt)
        kwargs.update(overrides)
        return cls(model, device=device, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, expect_model: str | None = None, expect_label_mode: str | None = None, **overrides: Any) -> Predictor:
        """Run an ONNX file written by ``cityseg export`` on onnxruntime (CPU); metadata replaces the checkpoint."""
        session, meta = load_onnx(path)
        if expect_model is not None and meta.get("model_name") != expect_model:
            raise CitysegError(f"{path}: ONNX model holds {meta.get('model_name')!r}, not {expect_model!r}")
        if expect_label_mode is not None and meta["label_mode"] != expect_label_mode:
            raise CitysegError(f"{path}: ONNX model was trained on {meta['label_mode']}, not {expect_label_mode}")
        overrides.pop("device", None)
        kwargs = _preprocessing(meta)
        kwargs.update(overrides)
        return cls(session, device="cpu", **kwargs)

    # -- running the model ---------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xhxw float tensor -> BxCxhxw float32 logits."""
        x = x.to(self.device)
        if self.channels_last and not self.onnx:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, torch.bfloat16 if self.bf16 and not self.onnx else None):
            out = self.model(x)
        if out.shape[-2:] != x.shape[-2:] or out.shape[1] != self.outputs:
            raise CitysegError(
                f"model returned logits of shape {tuple(out.shape)} for input {tuple(x.shape)}; expected {self.num_classes} classes{' + void' if self.void_class else ''} at the input size"
            )
        return out.float().contiguous()

    def _scaled_size(self, base: tuple[int, int], scale: float) -> tuple[int, int]:
        """``base`` x ``scale`` rounded to a size the model accepts (seed models need multiples of 4 or 32)."""
        if scale == 1.0:
            return base
        want = (max(1, round(base[0] * scale)), max(1, round(base[1] * scale)))
        check = getattr(self.model, "check_input_shape", None)
        if check is None or self.mode == "slide":
            return want
        for d in (1, 2, 4, 8, 16, 32, 64):
            cand = tuple(max(d, int(round(v / d)) * d) for v in want)
            try:
                check(*cand)
                return cand
            except CitysegError:
                continue
        return want

    def _whole(self, x: torch.Tensor) -> torch.Tensor:
        """Model logits for one 3xhxw tensor (with its flip in the same batch): list -> 1or2 x C x h x w."""
        batch = torch.stack([x, x.flip(-1)]) if self.flip else x[None]
        if self.flip and self.batch_size < 2:
            return torch.cat([self._forward(b[None]) for b in batch])
        return self._forward(batch)

    def _slide(self, x: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits for one 3xHxW tensor (mmseg ``slide_inference``): C x H x W (x2 with flip)."""
        _, H, W = x.shape
        wh, ww = self.window
        sh, sw = self.stride
        rows = max(H - wh + sh - 1, 0) // sh + 1
        cols = max(W - ww + sw - 1, 0) // sw + 1
        boxes = []
        for r in range(rows):
            for c in range(cols):
                y2, x2 = min(r * sh + wh, H), min(c * sw + ww, W)
                boxes.append((max(y2 - wh, 0), y2, max(x2 - ww, 0), x2))
        n_out = 2 if self.flip else 1
        acc = torch.zeros((n_out, self.outputs, H, W), dtype=torch.float32, device=self.device)
        count = torch.zeros((1, 1, H, W), dtype=torch.float32, device=self.device)
        x = x.to(self.device)
        crops = []
        for box in boxes:
            y1, y2, x1, x2 = box
            crop = x[:, y1:y2, x1:x2]
            ph, pw = wh - (y2 - y1), ww - (x2 - x1)  # image smaller than the window: pad bottom/right
            if ph > 0 or pw > 0:
                crop = F.pad(crop, (0, pw, 0, ph))
            crops.append(crop)
            if self.flip:
                crops.append(crop.flip(-1))
        per_batch = max(self.batch_size, n_out)
        meta = [(box, k) for box in boxes for k in range(n_out)]
        for start in range(0, len(crops), per_batch):
            logits = self._forward(torch.stack(crops[start : start + per_batch]))
            for (box, k), out in zip(meta[start : start + per_batch], logits):
                y1, y2, x1, x2 = box
                if k == 1:
                    out = out.flip(-1)  # back to the padded crop's layout: valid part first
                acc[k, :, y1:y2, x1:x2] += out[:, : y2 - y1, : x2 - x1]
                if k == 0:
                    count[0, 0, y1:y2, x1:x2] += 1
            del logits
        return acc / count

    def _pass_scores(self, image: np.ndarray) -> list[torch.Tensor]:
        """One CxhxW score tensor per scale; summing their upsampled versions gives the final scores.

        Without TTA it is the logits of the single pass; with TTA, softmax probabilities already divided
        by the number of passes (flips are undone and summed at the model's resolution).
        """
        image = _check_image(image)
        full = image.shape[:2]
        tta = self.flip or len(self.scales) > 1
        n_pass = len(self.scales) * (2 if self.flip else 1)
        result = []
        with torch.inference_mode():
            for scale in self.scales:
                base = self.input_size if self.mode == "whole" else full
                size = self._scaled_size(base, scale)
                x = self.input_tensor(image, size)
                logits = self._whole(x) if self.mode == "whole" else self._slide(x)
                if not tta:
                    result.append(logits[0])
                    continue
                probs = logits.softmax(1)
                s = probs[0] + probs[1].flip(-1) if self.flip and self.mode == "whole" else (probs[0] + probs[1] if self.flip else probs[0])
                result.append(s / n_pass)
        return result

    # -- public API ----------------------------------------------------------------------------
    def input_tensor(self, image: np.ndarray, size: Sequence[int] | None = None) -> torch.Tensor:
        """The network input (3xHxW float32) of a full-resolution uint8 RGB image at ``size`` (default
        ``input_size``): the checkpoint's own resize and normalisation, as every pass here uses it."""
        size = self.input_size if size is None else size
        return preprocess(_check_image(image), size, self.interpolation, self.mean, self.std, self.channel_order)

    def logits(self, image: np.ndarray) -> torch.Tensor:
        """Float32 CxHxW scores at the image's full size (logits; averaged softmax under TTA)."""
        full = np.asarray(image).shape[:2]
        with torch.inference_mode():
            parts = self._pass_scores(image)
            out = upsample(parts[0], full).clone() if len(parts) == 1 else None
            if out is None:
                out = sum(upsample(p, full) for p in parts)
        return out

    def predict(self, image: np.ndarray) -> np.ndarray:
        """HxW uint8 labelIds at the image's full size (trainId models mapped back to labelIds)."""
        full = np.asarray(image).shape[:2]
        with torch.inference_mode():
            pred = argmax_upsampled(self._pass_scores(image), full)
        return self._to_label_ids(pred)

    def predict_model_size(self, image: np.ndarray) -> np.ndarray:
        """labelIds at the model's resolution (``input_size`` in whole mode, the image size in slide mode)."""
        image = _check_image(image)
        size = self.input_size if self.mode == "whole" else image.shape[:2]
        with torch.inference_mode():
            pred = argmax_upsampled(self._pass_scores(image), size)
        return self._to_label_ids(pred)

    def _to_label_ids(self, pred: torch.Tensor) -> np.ndarray:
        ids = pred.to("cpu", torch.uint8).numpy()
        if self.void_class:  # the void output predicts "unlabeled" (labelId 0), as the official relabelling
            ids[ids == self.num_classes] = labels.IGNORE_INDEX if self.label_mode == "trainIds" else 0
        if self.label_mode == "trainIds":
            ids = labels.TRAINID_TO_LABELID[ids]
        return ids

    def __repr__(self) -> str:
        backend = "onnxruntime" if self.onnx else type(self.model).__name__
        return f"Predictor({backend}, {self.label_mode}, input_size={self.input_size}, mode={self.mode}, flip={self.flip}, scales={self.scales})"


def _preprocessing(info: dict[str, Any]) -> dict[str, Any]:
    """The Predictor arguments a checkpoint or an exported model's metadata records about its input."""
    return {
        "label_mode": info["label_mode"],
        "input_size": info["input_size"],
        "interpolation": info.get("interpolation") or "area",
        "mean": info.get("mean"),
        "std": info.get("std"),
        "num_classes": info.get("num_classes"),
        "mode": info.get("full_res_mode"),  # None for a checkpoint: the rebuilt model carries its own
        "channel_order": info.get("channel_order") or "RGB",
        "void_class": info.get("void_class"),  # None for a checkpoint: the rebuilt model carries it
    }
