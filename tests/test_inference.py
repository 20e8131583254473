"""Predictor: preprocessing, bilinear upsampling, banded argmax, TTA, sliding window, backends."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cityseg import labels
from cityseg.data.transforms import preprocess
from cityseg.errors import CitysegError
from cityseg.infer import upsample as inference
from cityseg.infer.predictor import Predictor
from cityseg.infer.upsample import argmax_upsampled


class TinyNet(nn.Module):
    """Stand-in segmentation model: logits at the input size; ``k=1`` makes it per-pixel."""

    def __init__(self, num_classes=34, k=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Conv2d(3, 8, k, padding=k // 2)
        self.b = nn.Conv2d(8, num_classes, k, padding=k // 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class RampNet(nn.Module):
    """Per-pixel model plus a ramp over the window's columns: exposes where windows start and end."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.inner = TinyNet(num_classes, k=1, seed=3)

    def forward(self, x):
        ramp = torch.linspace(0, 1, x.shape[-1]).view(1, 1, 1, -1)
        return self.inner(x) + ramp * torch.arange(x.shape[1] * 0 + 5).view(1, -1, 1, 1)


def rng_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img)


def assert_same_argmax(got: torch.Tensor, ref: torch.Tensor, tie: float = 1e-5) -> None:
    """``got`` (H x W labels) equals ``ref.argmax(0)`` (C x H x W scores) at every pixel whose two best
    reference scores differ by more than ``tie``: summation order may only flip a float-rounding tie."""
    top2 = ref.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > tie
    assert got.shape == ref.shape[1:]
    wrong = (got != ref.argmax(0)) & decided
    assert not bool(wrong.any()), f"{int(wrong.sum())} decided pixels differ, first at {wrong.nonzero()[0].tolist()}"


def test_argmax_upsampled_matches_interpolate_then_argmax():
    g = torch.Generator().manual_seed(0)
    for (h, w), (H, W) in [((16, 32), (128, 256)), ((12, 20), (97, 203)), ((40, 50), (20, 30)), ((8, 8), (8, 8))]:
        a = torch.randn(7, h, w, generator=g)
        b = torch.randn(7, h // 2 + 1, w // 2 + 1, generator=g)
        ref = F.interpolate(a[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        ref2 = ref + F.interpolate(b[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        assert_same_argmax(argmax_upsampled([a], (H, W)), ref)
        assert_same_argmax(argmax_upsampled([a, b], (H, W)), ref2)


def test_argmax_upsampled_sparse_path_is_exact(monkeypatch):
    """Piecewise-constant labels (as real predictions are): only boundary cells are blended."""
    calls = []
    monkeypatch.setattr(inference, "_argmax_upsampled_bands", lambda *a: calls.append(a))
    g = torch.Generator().manual_seed(1)
    lab = F.interpolate(torch.randn(1, 12, 4, 8, generator=g), size=(64, 128), mode="bilinear")[0].argmax(0)
    smooth = F.interpolate(torch.randn(1, 12, 8, 16, generator=g), size=(64, 128), mode="bilinear")[0]
    a = F.one_hot(lab, 12).permute(2, 0, 1).float() * 3 + smooth
    b = a[:, ::2, ::2].contiguous()  # a second TTA part at another resolution
    for parts, (H, W) in [([a], (256, 512)), ([a], (77, 130)), ([a, b], (256, 512)), ([b], (32, 64))]:
        ref = sum(F.interpolate(p[None], size=(H, W), mode="bilinear", align_corners=False)[0] for p in parts)
        got = argmax_upsampled(parts, (H, W))
        assert torch.equal(got, ref.argmax(0))  # no near-ties in these scores: every pixel
    assert not calls  # really the sparse path


def test_argmax_upsampled_small_bands(monkeypatch):
    monkeypatch.setattr(inference, "_DENSE_BAND_ELEMENTS", 7 * 50 * 3)  # 3 rows per band, ragged last band
    calls = []
    real_bands = inference._argmax_upsampled_bands
    monkeypatch.setattr(inference, "_argmax_upsampled_bands", lambda *a: (calls.append(1), real_bands(*a))[1])
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(7, 10, 25, generator=g), torch.randn(7, 6, 13, generator=g)
    for parts in ([a], [a, b]):
        ref = sum(F.interpolate(p[None], size=(61, 50), mode="bilinear", align_corners=False)[0] for p in parts)
        assert torch.equal(argmax_upsampled(parts, (61, 50)), ref.argmax(0))
    assert len(calls) == 2  # noisy scores: really the dense path


def test_logits_whole_image_equal_manual_pipeline():
    torch.manual_seed(0)
    model = TinyNet().eval()
    img = rng_image(96, 200)
    mean, std = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]
    p = Predictor(model, "labelIds", (32, 64), interpolation="area", mean=mean, std=std)
    small = cv2.resize(img, (64, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = (torch.from_numpy(small).permute(2, 0, 1) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    with torch.no_grad():
        ref = F.interpolate(model(x[None]), size=(96, 200), mode="bilinear", align_corners=False)[0]
    out = p.logits(img)
    assert out.shape == (34, 96, 200) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    pred = p.predict(img)
    assert pred.shape == (96, 200) and pred.dtype == np.uint8
    assert (pred == ref.argmax(0).numpy()).mean() > 0.999
    small_pred = p.predict_model_size(img)
    assert small_pred.shape == (32, 64)
    with torch.no_grad():
        assert (small_pred == model(x[None])[0].argmax(0).numpy()).mean() > 0.999


def test_bilinear_interpolation_option_changes_preprocessing():
    img = rng_image(64, 128)
    a = preprocess(img, (16, 32), "area")
    b = preprocess(img, (16, 32), "bilinear")
    ref = cv2.resize(img, (32, 16), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    torch.testing.assert_close(b, torch.from_numpy(ref).permute(2, 0, 1))
    assert not torch.allclose(a, b)


def test_trainid_model_is_mapped_back_to_labelids():
    model = TinyNet(num_classes=19).eval()
    img = rng_image(64, 128, seed=1)
    p = Predictor(model, "trainIds", (32, 64))
    assert p.num_classes == 19
    pred = p.predict(img)
    train = p.logits(img).argmax(0).numpy().astype(np.uint8)
    np.testing.assert_array_equal(pred, labels.TRAINID_TO_LABELID[train])
    assert set(np.unique(pred)) <= set(int(v) for v in labels.TRAINID_TO_LABELID[:19])
    assert len(np.unique(train)) > 1 and pred.max() > 18  # really mapped, not passed through


def test_flip_tta_averages_softmax_of_both_passes():
    model = TinyNet(num_classes=6).eval()
    img = rng_image(48, 80, seed=2)
    p = Predictor(model, "labelIds", (16, 32), flip=True, num_classes=6)
    x = preprocess(img, (16, 32))
    with torch.no_grad():
        a = model(x[None]).softmax(1)[0]
        b = model(x.flip(-1)[None]).softmax(1)[0].flip(-1)
    ref = F.interpolate(((a + b) / 2)[None], size=(48, 80), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(p.logits(img), ref, atol=1e-5, rtol=1e-5)
    assert (p.predict(img) == ref.argmax(0).numpy()).mean() > 0.999
    # a flip-equivariant (per-pixel) model: flip TTA gives exactly its plain softmax (flip undone correctly)
    m1 = TinyNet(num_classes=6, k=1).eval()
    with torch.no_grad():
        prob = m1(x[None]).softmax(1)
    ref1 = F.interpolate(prob, size=(48, 80), mode="bilinear", align_corners=False)[0]
    flipped = Predictor(m1, "labelIds", (16, 32), num_classes=6, flip=True)
    torch.testing.assert_close(flipped.logits(img), ref1, atol=1e-5, rtol=1e-5)


def test_multiscale_tta_averages_upsampled_softmax():
    model = TinyNet(num_classes=6).eval()
    img = rng_image(64, 128, seed=3)
    p = Predictor(model, "labelIds", (32, 64), scales=(0.5, 1.0, 1.5), num_classes=6)
    ref = 0
    for size in [(16, 32), (32, 64), (48, 96)]:
        with torch.no_grad():
            prob = model(preprocess(img, size)[None]).softmax(1)
        ref = ref + F.interpolate(prob, size=(64, 128), mode="bilinear", align_corners=False)[0] / 3
    torch.testing.assert_close(p.logits(img), ref, atol=1e-5, rtol=1e-5)
    assert (p.predict(img) == ref.argmax(0).numpy()).mean() > 0.999


def test_scaled_size_respects_model_shape_check():
    class Strict(TinyNet):
        def check_input_shape(self, h, w):
            if h % 32 or w % 32:
                raise CitysegError(f"input {h}x{w}: height and width must be multiples of 32")

    p = Predictor(Strict(num_classes=4).eval(), "labelIds", (64, 128), scales=(0.75,), num_classes=4)
    assert p._scaled_size((64, 128), 0.75) == (64, 96)
    assert p.predict(rng_image(40, 70)).shape == (40, 70)


def slide_reference(model, x, window, stride, num_classes):
    """mmsegmentation ``slide_inference`` written out naively (the oracle for the count-map average)."""
    _, H, W = x.shape
    (wh, ww), (sh, sw) = window, stride
    preds = torch.zeros(num_classes, H, W)
    count = torch.zeros(1, H, W)
    h_grids = max(H - wh + sh - 1, 0) // sh + 1
    w_grids = max(W - ww + sw - 1, 0) // sw + 1
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * sh, wi * sw
            y2, x2 = min(y1 + wh, H), min(x1 + ww, W)
            y1, x1 = max(y2 - wh, 0), max(x2 - ww, 0)
            with torch.no_grad():
                out = model(x[None, :, y1:y2, x1:x2])[0]
            preds[:, y1:y2, x1:x2] += out
            count[:, y1:y2, x1:x2] += 1
    return preds / count


def test_slide_matches_mmseg_reference_and_whole_for_per_pixel_model():
    img = rng_image(50, 130, seed=4)
    x = preprocess(img, (50, 130))
    ramp = RampNet().eval()
    for batch in (1, 3):
        p = Predictor(ramp, "labelIds", (16, 32), mode="slide", window=(20, 48), stride=(12, 30), batch_size=batch, num_classes=5)
        torch.testing.assert_close(p.logits(img), slide_reference(ramp, x, (20, 48), (12, 30), 5))
    # a per-pixel model: slide inference equals one whole pass at full resolution
    m1 = TinyNet(num_classes=5, k=1).eval()
    p = Predictor(m1, "labelIds", (16, 32), mode="slide", window=(16, 32), stride=(10, 20), num_classes=5)
    with torch.no_grad():
        torch.testing.assert_close(p.logits(img), m1(x[None])[0], atol=1e-5, rtol=1e-5)
    # flip TTA in slide mode == average of softmax over the image and its mirror
    p = Predictor(m1, "labelIds", (16, 32), mode="slide", window=(16, 32), stride=(10, 20), flip=True, num_classes=5)
    with torch.no_grad():
        ref = (m1(x[None]).softmax(1) + m1(x.flip(-1)[None]).softmax(1).flip(-1))[0] / 2
    torch.testing.assert_close(p.logits(img), ref, atol=1e-5, rtol=1e-5)


def test_slide_pads_images_smaller_than_the_window():
    m1 = TinyNet(num_classes=5, k=1).eval()
    img = rng_image(20, 30, seed=5)
    p = Predictor(m1, "labelIds", (32, 64), mode="slide", flip=True, num_classes=5)
    x = preprocess(img, (20, 30))
    with torch.no_grad():
        ref = (m1(x[None]).softmax(1) + m1(x.flip(-1)[None]).softmax(1).flip(-1))[0] / 2
    torch.testing.assert_close(p.logits(img), ref, atol=1e-5, rtol=1e-5)
    assert p.predict_model_size(img).shape == (20, 30)


def test_bf16_channels_last_agrees_with_fp32():
    model = TinyNet(num_classes=34).eval()
    img = rng_image(128, 256, seed=6)
    ref = Predictor(model, "labelIds", (64, 128)).predict(img)
    fast = Predictor(model, "labelIds", (64, 128), bf16=True, channels_last=True).predict(img)
    agree = (ref == fast).mean()
    assert agree > 0.97, agree


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.uint16)])
def test_bad_image_arrays_are_rejected(bad):
    p = Predictor(TinyNet(num_classes=4).eval(), "labelIds", (8, 8), num_classes=4)
    with pytest.raises(CitysegError, match="RGB"):
        p.predict(bad)


def test_wrong_class_count_is_reported():
    p = Predictor(TinyNet(num_classes=19).eval(), "labelIds", (8, 8))
    with pytest.raises(CitysegError, match="34 classes"):
        p.predict(rng_image(16, 16))


def test_invalid_options():
    m = TinyNet(num_classes=4).eval()
    with pytest.raises(CitysegError, match="mode"):
        Predictor(m, "labelIds", (8, 8), mode="tiles")
    with pytest.raises(CitysegError, match="label mode"):
        Predictor(m, "ids", (8, 8))
    with pytest.raises(CitysegError, match="scales"):
        Predictor(m, "labelIds", (8, 8), scales=(0,))


class _LargestTensor:
    """Context manager recording the largest tensor any torch op produces (a TorchDispatchMode)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor):
                        outer.largest = max(outer.largest, t.numel())
                return out

        self.largest = 0
        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


class FixedLogits(nn.Module):
    """Returns the same 1xCxhxw logits for any input of that size (a fixed prediction to upsample)."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x):
        assert x.shape[-2:] == self.logits.shape[-2:]
        return self.logits.expand(x.shape[0], -1, -1, -1)


@pytest.mark.parametrize("blocky", [True, False])
def test_full_resolution_predict_never_holds_the_score_volume(blocky, monkeypatch):
    """Whole-image mode at 1024x2048: no tensor reaches the C x H x W upsampled score volume (not even a
    quarter of it), and the labels equal interpolate-then-argmax. Blocky logits (as real predictions are)
    take the sparse boundary path, noise logits the banded dense path."""
    g = torch.Generator().manual_seed(0)
    if blocky:
        coarse = torch.randint(0, 19, (1, 8, 16), generator=g)
        lab = F.interpolate(coarse[None].float(), size=(64, 128), mode="nearest")[0].long()
        logits = F.one_hot(lab, 19).permute(0, 3, 1, 2).float() * 4 + torch.randn(1, 19, 64, 128, generator=g)
    else:
        logits = torch.randn(1, 19, 64, 128, generator=g)
    p = Predictor(FixedLogits(logits), "trainIds", (64, 128))
    calls = []
    real_bands = inference._argmax_upsampled_bands
    monkeypatch.setattr(inference, "_argmax_upsampled_bands", lambda *a: (calls.append(1), real_bands(*a))[1])
    img = rng_image(1024, 2048, seed=7)
    with _LargestTensor() as probe:
        pred = p.predict(img)
    assert bool(calls) != blocky  # the path under test really ran
    assert probe.largest <= 19 * 1024 * 2048 // 4, probe.largest
    ref = F.interpolate(logits, size=(1024, 2048), mode="bilinear", align_corners=False)[0]
    # the trainId -> labelId map is one-to-one, so label ids compare as the trainIds do
    assert_same_argmax(torch.from_numpy(labels.LABELID_TO_TRAINID[pred].astype(np.int64)), ref)


def test_slide_runs_the_model_only_on_window_sized_batches():
    """Sliding windows bound the model's activation memory: every forward sees at most ``batch_size`` crops
    of exactly the window size, whatever the image size."""
    seen = []

    class Recording(TinyNet):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return super().forward(x)

    m = Recording(num_classes=5, k=1).eval()
    img = rng_image(300, 520, seed=8)
    for flip, batch in ((False, 2), (True, 4)):
        seen.clear()
        p = Predictor(m, "labelIds", (16, 32), mode="slide", window=(64, 96), stride=(40, 64), flip=flip, batch_size=batch, num_classes=5)
        assert p.predict(img).shape == (300, 520)
        assert seen and all(s[0] <= batch and s[1:] == (3, 64, 96) for s in seen), seen
        n_windows = (-(-(300 - 64) // 40) + 1) * (-(-(520 - 96) // 64) + 1)
        assert sum(s[0] for s in seen) == n_windows * (2 if flip else 1)
