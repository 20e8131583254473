"""Bilinear upsampling of class scores to full resolution, and its argmax without the CxHxW volume.

PyTorch's ``align_corners=False`` bilinear semantics throughout, so every path equals
``F.interpolate(...).argmax(0)`` of the summed scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: floats per row band in ``predict`` (C x band x W); 4 M floats = 16 MiB, stays near the L2/L3 caches
_BAND_ELEMENTS = 4 * 1024 * 1024
#: floats per band of the dense upsample-argmax (band x W x C): a few full-width rows, measured fastest
_DENSE_BAND_ELEMENTS = 256 * 1024


def _source_index(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's bilinear (align_corners=False) source rows for each output row: (i0, i1, lambda)."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_(min=0)
    i0 = src.floor().long().clamp_(max=n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    lam = (src - i0).to(torch.float32)
    return i0, i1, lam


def upsample(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """CxHxW -> CxhxW bilinear, align_corners=False (no-op when the size already matches)."""
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def argmax_upsampled(scores: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """argmax over classes of ``sum(upsample(s, size) for s in scores)`` without the CxHxW volume.

    Bilinear interpolation is a convex combination of the 4 neighbouring source pixels, so wherever all of
    them (in every tensor) have the same argmax k, the upsampled argmax is k too: those pixels are looked up
    directly, and the exact blend is computed only for pixels in cells where the labels change. When that
    is most of the image (noisy scores) the blend is computed band by band for every pixel instead.
    Either way the result equals interpolating (align_corners=False) and taking the argmax, up to float
    rounding at exact ties. Returns an HxW int64 tensor.
    """
    H, W = size
    scores = [s.float() for s in scores]
    device = scores[0].device
    geo = [(_source_index(s.shape[1], H, device), _source_index(s.shape[2], W, device)) for s in scores]
    lab = ok = None
    for s, ((i0, _, _), (j0, _, _)) in zip(scores, geo):
        am = s.argmax(0)
        h, w = am.shape
        ip = (torch.arange(h, device=device) + 1).clamp_(max=h - 1)
        jp = (torch.arange(w, device=device) + 1).clamp_(max=w - 1)
        below = am.index_select(0, ip)
        uniform = (am == below) & (am == am.index_select(1, jp)) & (am == below.index_select(1, jp))
        part_lab = am.index_select(0, i0).index_select(1, j0)
        part_ok = uniform.index_select(0, i0).index_select(1, j0)
        if lab is None:
            lab, ok = part_lab, part_ok
        else:
            ok &= part_ok & (part_lab == lab)
    flat = (~ok).view(-1).nonzero().squeeze(1)
    if flat.numel() > 0.4 * H * W:
        return _argmax_upsampled_bands(scores, size)
    # pixel-major copies (h*w x C) make every gather below a contiguous row copy
    tables = [s.permute(1, 2, 0).reshape(-1, s.shape[0]).contiguous() for s in scores]
    out = lab.view(-1)
    chunk = max(1, _BAND_ELEMENTS // scores[0].shape[0])
    for k in range(0, flat.numel(), chunk):
        f = flat[k : k + chunk]
        y = torch.div(f, W, rounding_mode="floor")
        x = f - y * W
        acc = None
        for s, t, ((i0, i1, ly), (j0, j1, lx)) in zip(scores, tables, geo):
            w = s.shape[2]
            r0, r1 = i0.index_select(0, y) * w, i1.index_select(0, y) * w
            c0, c1 = j0.index_select(0, x), j1.index_select(0, x)
            wx, wy = lx.index_select(0, x).unsqueeze(1), ly.index_select(0, y).unsqueeze(1)
            top = torch.lerp(t.index_select(0, r0 + c0), t.index_select(0, r0 + c1), wx)
            bottom = torch.lerp(t.index_select(0, r1 + c0), t.index_select(0, r1 + c1), wx)
            v = torch.lerp(top, bottom, wy)
            acc = v if acc is None else acc.add_(v)
        out.index_copy_(0, f, acc.argmax(1))
    return lab


def _argmax_upsampled_bands(scores: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """The dense path of ``argmax_upsampled``: width pass per tensor, kept pixel-major (h x W x C), then a
    few rows at a time the height pass and an argmax over the contiguous class axis, because reducing over
    a contiguous axis is faster than over a strided C x band x W block (docs/benchmarks.md)."""
    H, W = size
    device = scores[0].device
    C = scores[0].shape[0]
    wide = [upsample(s, (s.shape[1], W)).permute(1, 2, 0).contiguous() for s in scores]
    rows = [_source_index(s.shape[0], H, device) for s in wide]
    band = max(1, min(H, _DENSE_BAND_ELEMENTS // max(1, C * W)))
    out = torch.empty((H, W), dtype=torch.int64, device=device)
    for y0 in range(0, H, band):
        y1 = min(H, y0 + band)
        acc = None
        for s, (i0, i1, lam) in zip(wide, rows):
            v = torch.lerp(s.index_select(0, i0[y0:y1]), s.index_select(0, i1[y0:y1]), lam[y0:y1].view(-1, 1, 1))
            acc = v if acc is None else acc.add_(v)
        torch.argmax(acc, -1, out=out[y0:y1])
    return out
