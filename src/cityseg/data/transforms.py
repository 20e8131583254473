"""Preprocessing and paired augmentations on numpy uint8 arrays (image HxWx3 RGB, label HxW).

Preprocessing is the seed's: resize to HxW (image ``"area"`` = ``cv2.INTER_AREA`` as in the seed README,
or ``"bilinear"`` = ``cv2.INTER_LINEAR`` without antialiasing, like the seed code's ``tf.image.resize``),
labels nearest, image /255, optional ``(x - mean) / std`` with mean/std in [0, 1] units. Training,
evaluation and inference all call the helpers here, so preprocessing cannot drift apart.

Augmentations are callables ``t(image, label, rng=None) -> (image, label)``. ``rng`` is a
``numpy.random.Generator``; ``CityscapesDataset`` passes one seeded from ``(seed, epoch, index)`` so a
sample's augmentation does not depend on the worker that loads it or on resuming. Without ``rng`` a
generator is seeded from ``torch``'s RNG, which DataLoader seeds differently in every worker
(``base_seed + worker_id``), so ``torch.manual_seed`` alone also makes a run repeatable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from cityseg.errors import CitysegError

if TYPE_CHECKING:  # torch is imported lazily so that `cityseg check` / `prepare` start fast
    import torch

cv2.setNumThreads(1)

#: interpolation name -> OpenCV flag, for images (labels are always nearest)
INTERPOLATIONS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR}
#: resizes only inference uses, each the one a published model's own evaluation applies, so imported
#: weights see the inputs they were trained on: OpenCV bilinear on the float image (no rounding to
#: uint8; sacmehta/ESPNet) and Pillow's bilinear, which widens its filter when shrinking (EdgeNets)
EXACT_RESIZES = ("bilinear_float", "pil_bilinear")

CHANNEL_ORDERS = ("RGB", "BGR")

#: ImageNet statistics in [0, 1] units (MMSeg's 123.675/58.395 ... divided by 255)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_interpolation(name: str, exact: bool = False) -> str:
    """``name`` if it is a training interpolation (or, with ``exact``, an inference-only one)."""
    if name in EXACT_RESIZES and exact:
        return name
    if name not in INTERPOLATIONS:
        choices = (*INTERPOLATIONS, *EXACT_RESIZES) if exact else tuple(INTERPOLATIONS)
        raise CitysegError(f"unknown interpolation {name!r}: choose one of {', '.join(choices)}")
    return name


def check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """``(H, W)`` with positive ints, or None (full resolution)."""
    if size is None:
        return None
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise CitysegError(f"invalid size {size!r}: expected (height, width)") from None
    if h <= 0 or w <= 0:
        raise CitysegError(f"invalid size {size!r}: height and width must be positive")
    return h, w


# ---- preprocessing -----------------------------------------------------------------------------
def resize_image(image: np.ndarray, size: Sequence[int] | None, interpolation: str = "area") -> np.ndarray:
    """Resize an HxWx3 uint8 image to ``size`` = (H, W); None or the same size returns it unchanged.

    ``bilinear_float`` returns float32 values in 0..255 (unrounded), the others uint8."""
    check_interpolation(interpolation, exact=True)
    if size is None or tuple(image.shape[:2]) == tuple(size):
        return image
    h, w = size
    if interpolation == "pil_bilinear":
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if interpolation == "bilinear_float":
        return cv2.resize(image.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (w, h), interpolation=INTERPOLATIONS[interpolation])


def resize_label(label: np.ndarray, size: Sequence[int] | None) -> np.ndarray:
    """Resize an HxW label map with nearest neighbour (``cv2.INTER_NEAREST``, as in the seed)."""
    if size is None or tuple(label.shape[:2]) == tuple(size):
        return label
    h, w = size
    return cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)


def _stats(values: Sequence[float] | None, what: str) -> torch.Tensor | None:
    import torch

    if values is None:
        return None
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.repeat(3)
    if t.numel() != 3:
        raise CitysegError(f"{what} must have 1 or 3 values, got {t.numel()}")
    if what == "std" and bool((t <= 0).any()):
        raise CitysegError(f"std must be positive, got {t.tolist()}")
    return t.view(3, 1, 1)


def image_to_tensor(image: np.ndarray, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """HxWx3 uint8 (or float32 in 0..255) -> float32 3xHxW in [0, 1], then ``(x - mean) / std`` if given (mean/std in [0, 1] units)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    m, s = _stats(mean, "mean"), _stats(std, "std")
    if m is not None:
        x.sub_(m)
    if s is not None:
        x.div_(s)
    return x


def label_to_tensor(label: np.ndarray) -> torch.Tensor:
    """HxW integer map -> int64 tensor HxW."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(label)).long()


def preprocess(
    image: np.ndarray,
    size: Sequence[int] | None = (128, 256),
    interpolation: str = "area",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channel_order: str = "RGB",
) -> torch.Tensor:
    """Full-resolution uint8 RGB image -> the network input 3xHxW, exactly as the dataset prepares it.

    ``channel_order="BGR"`` feeds the channels reversed (weights trained on OpenCV's BGR frames);
    ``mean`` and ``std`` are then in BGR order too."""
    if channel_order not in CHANNEL_ORDERS:
        raise CitysegError(f"unknown channel order {channel_order!r}: choose {' or '.join(CHANNEL_ORDERS)}")
    if channel_order == "BGR":
        image = np.ascontiguousarray(image[..., ::-1])
    return image_to_tensor(resize_image(image, size, interpolation), mean, std)


# ---- paired augmentations ----------------------------------------------------------------------
def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is not None:
        return rng
    import torch

    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


class Compose:
    """Apply paired transforms in order, sharing one generator."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        for t in self.transforms:
            image, label = t(image, label, rng=rng)
        return image, label

    def __repr__(self):
        return f"Compose({self.transforms!r})"


class RandomScaleCrop:
    """Rescale by a factor drawn from ``scale`` (image bilinear, label nearest), pad, then crop ``crop``.

    As MMSeg's ``RandomResize(ratio_range)`` + ``RandomCrop``: the factor is relative to the incoming size;
    where the scaled image is smaller than ``crop`` it is padded bottom/right with ``image_fill`` and the
    label with ``ignore_index``. With labelIds (no ignore index) pass the id padding should get, e.g. 0.
    """

    def __init__(self, scale=(0.5, 2.0), crop=(128, 256), ignore_index: int = 255, image_fill: int = 0):
        lo, hi = (float(v) for v in scale)
        if not 0 < lo <= hi:
            raise CitysegError(f"invalid scale range {scale!r}: need 0 < min <= max")
        self.scale = (lo, hi)
        self.crop = check_size(crop)
        if not 0 <= int(ignore_index) <= 255:
            raise CitysegError(f"ignore_index {ignore_index} does not fit a uint8 label map")
        self.ignore_index = int(ignore_index)
        self.image_fill = int(image_fill)

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        s = rng.uniform(*self.scale)
        h, w = label.shape[:2]
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
        ch, cw = self.crop
        ph, pw = max(ch - nh, 0), max(cw - nw, 0)
        if ph or pw:
            image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(self.image_fill,) * 3)
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=self.ignore_index)
        y = int(rng.integers(0, label.shape[0] - ch + 1))
        x = int(rng.integers(0, label.shape[1] - cw + 1))
        return (np.ascontiguousarray(image[y : y + ch, x : x + cw]), np.ascontiguousarray(label[y : y + ch, x : x + cw]))

    def __repr__(self):
        return f"RandomScaleCrop(scale={self.scale}, crop={self.crop}, ignore_index={self.ignore_index})"


class RandomHorizontalFlip:
    """Mirror image and label left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image, label, rng=None):
        if _rng(rng).random() < self.p:
            # cv2.flip writes the mirrored rows directly; a reversed numpy view copied to contiguous is far slower
            image, label = cv2.flip(image, 1), cv2.flip(label, 1)
        return image, label

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class PhotometricJitter:
    """Brightness, contrast, saturation and hue jitter on the image only (torchvision ``ColorJitter`` semantics).

    Factors are drawn uniformly from ``[1 - b, 1 + b]`` (brightness, contrast, saturation) and the hue shift
    from ``[-hue, hue]`` turns (hue <= 0.5), applied in a random order; the label is returned untouched.
    """

    def __init__(self, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0):
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)
        self.hue = float(hue)
        if min(self.brightness, self.contrast, self.saturation) < 0 or not 0 <= self.hue <= 0.5:
            raise CitysegError("photometric jitter: brightness/contrast/saturation must be >= 0 and hue in 0..0.5")

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        # every step updates ``x`` in place; the clipped copy the statistics need reuses one buffer
        x = image.astype(np.float32)
        clipped = np.empty_like(x)
        for op in rng.permutation(4):
            if op == 0 and self.brightness > 0:
                x *= rng.uniform(1 - self.brightness, 1 + self.brightness)
            elif op == 1 and self.contrast > 0:
                f = rng.uniform(1 - self.contrast, 1 + self.contrast)
                mean = _gray_mean(np.clip(x, 0, 255, out=clipped))
                x *= f
                x += (1 - f) * mean
            elif op == 2 and self.saturation > 0:
                f = rng.uniform(1 - self.saturation, 1 + self.saturation)
                g = cv2.cvtColor(np.clip(x, 0, 255, out=clipped), cv2.COLOR_RGB2GRAY)  # the same ITU-R 601 luma
                g *= 1 - f
                x *= f
                x += g[..., None]
            elif op == 3 and self.hue > 0:
                shift = rng.uniform(-self.hue, self.hue)
                hsv = cv2.cvtColor(np.clip(x, 0, 255, out=clipped).astype(np.uint8), cv2.COLOR_RGB2HSV_FULL)
                hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(shift * 256))) % 256
                x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
        x += 0.5
        return np.clip(x, 0, 255, out=x).astype(np.uint8), label

    def __repr__(self):
        return f"PhotometricJitter(brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation}, hue={self.hue})"


def _gray_mean(x: np.ndarray) -> float:
    """Mean ITU-R 601 luma of an RGB float array (torchvision's rgb_to_grayscale, then the mean): the luma is
    linear, so it is the luma of the per-channel means."""
    r, g, b, _ = cv2.mean(x)
    return 0.299 * r + 0.587 * g + 0.114 * b


def classmix(
    image: np.ndarray, label: np.ndarray, image2: np.ndarray, label2: np.ndarray, rng: np.random.Generator, ignore_value: int = 255
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ClassMix (Olsson et al., WACV 2021) with ground-truth labels: paste every pixel of half of the
    classes present in ``label2`` (rounded up, chosen by ``rng``), image and label alike, onto copies of
    ``image`` / ``label``. ``ignore_value`` (void or padding) is never a class to paste, so its pixels keep
    the first frame. Returns (image, label, the pasted class values, sorted)."""
    if image.shape != image2.shape or label.shape != label2.shape:
        raise CitysegError(f"classmix needs frames of one size, got {image.shape} and {image2.shape}")
    present = np.unique(label2)
    present = present[present != ignore_value]
    chosen = np.sort(rng.choice(present, size=(len(present) + 1) // 2, replace=False)) if len(present) else present
    mask = np.isin(label2, chosen)
    image, label = image.copy(), label.copy()
    image[mask] = image2[mask]
    label[mask] = label2[mask]
    return image, label, chosen


# ---- appearance randomisation ------------------------------------------------------------------
# SynthCity's materials are few and clean, so a model trained on it learns colours and textures that real
# photographs do not share. These transforms change only the image's appearance (never its geometry or
# the label), each with its own probability, so the network has to rely on shape and context instead.


class MaybeAppearance:
    """An image-only change applied with probability ``self.p``: subclasses define ``apply(image, rng)``;
    the label passes through untouched, and at ``p = 0`` the image too."""

    p: float = 0.0

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        if rng.random() >= self.p:
            return image, label
        return self.apply(image, rng), label

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class ColourRandomise(MaybeAppearance):
    """Per-channel gains, a random gamma and, with probability ``shuffle``, a random channel order.

    Applied with probability ``p``: ``x`` in [0, 1] becomes ``(clip(x * gain_c, 0, 1)) ** gamma`` with
    ``gain_c`` uniform in ``[1 - gain, 1 + gain]`` per channel and ``gamma`` log-uniform in ``gamma``.
    """

    def __init__(self, p: float = 0.5, gain: float = 0.3, gamma=(0.6, 1.6), shuffle: float = 0.2):
        self.p, self.gain, self.shuffle = _probability(p, "colour"), float(gain), _probability(shuffle, "colour shuffle")
        self.gamma = (float(gamma[0]), float(gamma[1]))
        if not 0 <= self.gain < 1 or not 0 < self.gamma[0] <= self.gamma[1]:
            raise CitysegError("colour randomisation: gain must be in [0, 1) and gamma a range of positive values")

    def apply(self, image, rng):
        gains = rng.uniform(1 - self.gain, 1 + self.gain, 3)
        gamma = float(np.exp(rng.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))
        order = rng.permutation(3) if rng.random() < self.shuffle else np.arange(3)
        # uint8 in, uint8 out: one 256-entry table per channel computes the formula once per value
        lut = _to_uint8(np.clip(np.arange(256, dtype=np.float32)[:, None] / 255.0 * gains[None, :], 0, 1) ** gamma)
        out = cv2.LUT(image, lut[:, None, :])
        return np.ascontiguousarray(out[..., order])

    def __repr__(self):
        return f"ColourRandomise(p={self.p}, gain={self.gain}, gamma={self.gamma}, shuffle={self.shuffle})"


class RandomStyle(MaybeAppearance):
    """Random style statistics: with probability ``p`` each channel is re-normalised from its own mean and
    standard deviation to random targets, ``(x - mu_c) / sigma_c * sigma'_c + mu'_c``, with ``mu'_c = mu_c + u``,
    ``u`` uniform in ``[-shift, shift]`` (in [0, 1] units) and ``sigma'_c = sigma_c * s``, ``log s`` uniform in
    ``[-log scale, log scale]``."""

    def __init__(self, p: float = 0.5, shift: float = 0.15, scale: float = 1.5):
        self.p, self.shift, self.scale = _probability(p, "style"), float(shift), float(scale)
        if self.shift < 0 or self.scale < 1:
            raise CitysegError("random style: shift must be >= 0 and scale >= 1")

    def apply(self, image, rng):
        mean, std = cv2.meanStdDev(image)
        mu, sigma = mean.ravel() / 255.0, std.ravel() / 255.0 + 1e-6
        new_mu = mu + rng.uniform(-self.shift, self.shift, 3)
        new_sigma = sigma * np.exp(rng.uniform(-np.log(self.scale), np.log(self.scale), 3))
        values = np.arange(256, dtype=np.float64)[:, None] / 255.0
        lut = _to_uint8((values - mu) * (new_sigma / sigma) + new_mu)  # the affine map per channel, as a table
        return cv2.LUT(image, lut[:, None, :])

    def __repr__(self):
        return f"RandomStyle(p={self.p}, shift={self.shift}, scale={self.scale})"


class RandConv(MaybeAppearance):
    """Random convolution (RandConv, Xu et al., ICLR 2021): with probability ``p`` a k x k convolution
    (``k`` drawn from ``kernels``) mapping 3 channels to 3, weights ~ N(0, 1 / (3 k^2)), is applied to the
    image and mixed with it, ``alpha * conv(x) + (1 - alpha) * x`` with ``alpha`` uniform in [0, 1].

    As ``torch.nn.functional.conv2d`` (cross-correlation, "same" size; borders reflected without repeating
    the edge, OpenCV's default). The image is taken about mid-grey (``x - 0.5`` in [0, 1] units, and 0.5
    added back) so that a zero-mean kernel keeps the result a visible image instead of clipping it to black.
    """

    def __init__(self, p: float = 0.5, kernels=(1, 3, 5, 7)):
        self.p = _probability(p, "randconv")
        self.kernels = tuple(int(k) for k in kernels)
        if not self.kernels or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise CitysegError(f"randconv: kernel sizes must be odd and positive, got {kernels!r}")

    def apply(self, image, rng):
        k = int(rng.choice(self.kernels))
        weight = rng.normal(0.0, np.sqrt(1.0 / (3 * k * k)), (3, 3, k, k)).astype(np.float32)
        alpha = float(rng.uniform(0.0, 1.0))
        return random_convolution(image, weight, alpha)

    def __repr__(self):
        return f"RandConv(p={self.p}, kernels={self.kernels})"


def random_convolution(image: np.ndarray, weight: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * conv(x) + (1 - alpha) * x`` for an HxWx3 uint8 image and a 3x3xkxk weight (out, in, y, x),
    about mid-grey (see ``RandConv``); returns uint8."""
    x = image.astype(np.float32) / 255.0 - 0.5
    out = np.zeros_like(x)
    for o in range(3):
        for i in range(3):
            out[..., o] += cv2.filter2D(x[..., i], -1, weight[o, i], borderType=cv2.BORDER_REFLECT_101)
    return _to_uint8(alpha * out + (1.0 - alpha) * x + 0.5)


class RandomBlur(MaybeAppearance):
    """Gaussian blur with probability ``p``, sigma uniform in ``sigma`` pixels (kernel 2 * ceil(3 sigma) + 1)."""

    def __init__(self, p: float = 0.3, sigma=(0.3, 1.5)):
        self.p, self.sigma = _probability(p, "blur"), (float(sigma[0]), float(sigma[1]))
        if not 0 < self.sigma[0] <= self.sigma[1]:
            raise CitysegError("blur: sigma must be a range of positive values")

    def apply(self, image, rng):
        s = float(rng.uniform(*self.sigma))
        k = 2 * int(np.ceil(3 * s)) + 1
        return cv2.GaussianBlur(image, (k, k), s, borderType=cv2.BORDER_REFLECT_101)

    def __repr__(self):
        return f"RandomBlur(p={self.p}, sigma={self.sigma})"


class RandomNoise(MaybeAppearance):
    """Additive Gaussian noise with probability ``p``, standard deviation uniform in ``std`` (0..255 units),
    drawn per pixel and channel."""

    def __init__(self, p: float = 0.3, std=(2.0, 10.0)):
        self.p, self.std = _probability(p, "noise"), (float(std[0]), float(std[1]))
        if not 0 <= self.std[0] <= self.std[1]:
            raise CitysegError("noise: std must be a range of non-negative values")

    def apply(self, image, rng):
        s = float(rng.uniform(*self.std))
        noise = rng.standard_normal(image.shape, dtype=np.float32) * s
        return _to_uint8((image.astype(np.float32) + noise) / 255.0)

    def __repr__(self):
        return f"RandomNoise(p={self.p}, std={self.std})"


class RandomJpeg(MaybeAppearance):
    """JPEG compression artefacts with probability ``p``: encode and decode at a quality uniform in ``quality``."""

    def __init__(self, p: float = 0.3, quality=(30, 90)):
        self.p, self.quality = _probability(p, "jpeg"), (int(quality[0]), int(quality[1]))
        if not 1 <= self.quality[0] <= self.quality[1] <= 100:
            raise CitysegError("jpeg: quality must be a range within 1..100")

    def apply(self, image, rng):
        q = int(rng.integers(self.quality[0], self.quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])  # channel order does not matter to the codec's loss
        if not ok:
            raise CitysegError("jpeg: OpenCV could not encode the image")
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)

    def __repr__(self):
        return f"RandomJpeg(p={self.p}, quality={self.quality})"


def _probability(p: float, what: str) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise CitysegError(f"{what}: probability must be in [0, 1], got {p}")
    return p


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float image -> uint8, rounded and clipped."""
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Appearance:
    """Probabilities of the appearance randomisations (0 = off), in the order they run: colour, style,
    random convolution (the scene's look), then blur, noise and JPEG (the camera's)."""

    colour: float = 0.0
    style: float = 0.0
    randconv: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg: float = 0.0

    def transforms(self) -> list[Callable]:
        made = [ColourRandomise(self.colour), RandomStyle(self.style), RandConv(self.randconv)]
        made += [RandomBlur(self.blur), RandomNoise(self.noise), RandomJpeg(self.jpeg)]
        return [t for t in made if t.p > 0]


def train_transform(
    crop: Sequence[int],
    scale: Sequence[float] = (0.5, 2.0),
    flip: float = 0.5,
    photometric: bool = True,
    ignore_index: int = 255,
    appearance: Appearance | None = None,
) -> Compose:
    """The training recipes' paired augmentation: random scale + crop, h-flip (``flip`` > 0), photometric
    jitter (``photometric``), then the appearance randomisations with a probability above 0. ``ignore_index``
    fills the label where a down-scaled image is padded."""
    steps = [RandomScaleCrop(scale=tuple(scale), crop=tuple(crop), ignore_index=ignore_index)]
    if flip > 0:
        steps.append(RandomHorizontalFlip(flip))
    if photometric:
        steps.append(PhotometricJitter())
    if appearance is not None:
        steps.extend(appearance.transforms())
    return Compose(steps)
