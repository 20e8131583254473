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


def train_transform(crop: Sequence[int], scale: Sequence[float] = (0.5, 2.0), flip: float = 0.5, photometric: bool = True, ignore_index: int = 255) -> Compose:
    """The training recipes' paired augmentation: random scale + crop, h-flip (``flip`` > 0), photometric
    jitter (``photometric``). ``ignore_index`` fills the label where a down-scaled image is padded."""
    steps = [RandomScaleCrop(scale=tuple(scale), crop=tuple(crop), ignore_index=ignore_index)]
    if flip > 0:
        steps.append(RandomHorizontalFlip(flip))
    if photometric:
        steps.append(PhotometricJitter())
    return Compose(steps)
