"""Appearance randomisation (data/transforms.py) against hand computations, and its recipe keys."""

from __future__ import annotations

import numpy as np
import pytest

from cityseg.data import transforms as T
from cityseg.errors import CitysegError
from cityseg.train.config import DEFAULTS, apply_overrides


def _frame(seed=0, shape=(20, 28)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8), rng.integers(0, 19, shape, dtype=np.uint8)


def _correlate(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'Same' cross-correlation of an HxW array, borders mirrored without the edge (numpy 'reflect'), by loops."""
    r = kernel.shape[0] // 2
    padded = np.pad(x, r, mode="reflect")
    out = np.zeros_like(x, dtype=np.float64)
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            out += kernel[dy, dx] * padded[dy : dy + x.shape[0], dx : dx + x.shape[1]]
    return out


def test_random_convolution_is_the_3_to_3_correlation_mixed_with_the_image():
    image, _ = _frame(1)
    weight = np.random.default_rng(2).normal(0, 0.2, (3, 3, 5, 5)).astype(np.float32)
    x = image / 255.0 - 0.5
    conv = np.stack([sum(_correlate(x[..., i], weight[o, i]) for i in range(3)) for o in range(3)], axis=-1)
    for alpha in (1.0, 0.3):
        want = np.clip((alpha * conv + (1 - alpha) * x + 0.5) * 255 + 0.5, 0, 255).astype(np.uint8)
        got = T.random_convolution(image, weight, alpha)
        assert np.abs(got.astype(int) - want).max() <= 1 and (got != want).mean() < 0.01
    np.testing.assert_array_equal(T.random_convolution(image, weight, 0.0), image)  # alpha 0 is the identity
    one = np.eye(3, dtype=np.float32)[:, :, None, None]  # a 1x1 identity kernel leaves the image as it is
    np.testing.assert_array_equal(T.random_convolution(image, one, 1.0), image)


def test_randconv_draws_the_papers_weights_and_leaves_the_label():
    image, label = _frame(3, (40, 60))
    out, lab = T.RandConv(p=1.0, kernels=(3,))(image, label, rng=np.random.default_rng(4))
    assert lab is label and out.shape == image.shape and out.dtype == np.uint8
    replay = np.random.default_rng(4)
    replay.random()
    k = int(replay.choice((3,)))
    weight = replay.normal(0.0, np.sqrt(1.0 / (3 * k * k)), (3, 3, k, k)).astype(np.float32)
    alpha = replay.uniform(0.0, 1.0)
    np.testing.assert_array_equal(out, T.random_convolution(image, weight, alpha))
    ident, lab = T.RandConv(p=0.0)(image, label, rng=np.random.default_rng(4))
    assert ident is image and lab is label
    with pytest.raises(CitysegError):
        T.RandConv(kernels=(2,))


def test_colour_randomise_is_gain_then_gamma_then_channel_order():
    image, label = _frame(5)
    for seed in range(6):
        out, lab = T.ColourRandomise(p=1.0, gain=0.4, gamma=(0.5, 2.0), shuffle=0.5)(image, label, rng=np.random.default_rng(seed))
        replay = np.random.default_rng(seed)
        replay.random()
        gains = replay.uniform(0.6, 1.4, 3)
        gamma = np.exp(replay.uniform(np.log(0.5), np.log(2.0)))
        order = replay.permutation(3) if replay.random() < 0.5 else np.arange(3)
        want = np.clip(image / 255.0 * gains, 0, 1) ** gamma * 255
        want = want[..., order]
        assert lab is label and np.abs(out - want).max() <= 0.5 + 1e-6


def test_random_style_moves_each_channel_to_its_drawn_mean_and_std():
    rng = np.random.default_rng(6)
    image = np.clip(rng.normal(120, 20, (64, 64, 3)), 0, 255).astype(np.uint8)  # mid-range: no clipping after the shift
    out, _ = T.RandomStyle(p=1.0, shift=0.1, scale=1.3)(image, None, rng=np.random.default_rng(7))
    replay = np.random.default_rng(7)
    replay.random()
    x = image.reshape(-1, 3) / 255.0
    mu, sigma = x.mean(0), x.std(0)
    new_mu = mu + replay.uniform(-0.1, 0.1, 3)
    new_sigma = sigma * np.exp(replay.uniform(-np.log(1.3), np.log(1.3), 3))
    y = out.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(y.mean(0), new_mu, atol=1.0 / 255)
    np.testing.assert_allclose(y.std(0), new_sigma, atol=1.0 / 255)
    same, _ = T.RandomStyle(p=1.0, shift=0.0, scale=1.0)(image, None, rng=np.random.default_rng(0))
    assert np.abs(same.astype(int) - image).max() <= 1


def test_blur_is_a_normalised_gaussian_with_the_drawn_sigma():
    image, label = _frame(8)
    out, lab = T.RandomBlur(p=1.0, sigma=(0.5, 1.2))(image, label, rng=np.random.default_rng(9))
    replay = np.random.default_rng(9)
    replay.random()
    s = replay.uniform(0.5, 1.2)
    r = int(np.ceil(3 * s))
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * s * s))
    kernel = np.outer(g, g) / g.sum() ** 2
    want = np.stack([_correlate(image[..., c].astype(np.float64), kernel) for c in range(3)], axis=-1)
    err = np.abs(out - want)  # OpenCV blurs uint8 with fixed-point kernel weights
    assert lab is label and err.max() <= 1.5 and err.mean() < 0.5


def test_noise_has_zero_mean_and_the_drawn_std():
    image = np.full((128, 128, 3), 128, np.uint8)
    out, _ = T.RandomNoise(p=1.0, std=(4.0, 8.0))(image, None, rng=np.random.default_rng(10))
    replay = np.random.default_rng(10)
    replay.random()
    s = replay.uniform(4.0, 8.0)
    d = out.astype(np.float64) - 128
    assert abs(d.mean()) < 0.1 and abs(d.std() - s) < 0.05 * s


def test_jpeg_changes_the_image_but_keeps_it_close():
    x = np.linspace(0, 255, 64)
    image = np.stack(np.broadcast_arrays(x[None, :], x[:, None], 255 - x[None, :]), axis=-1).astype(np.uint8)
    image = np.ascontiguousarray(np.broadcast_to(image, (64, 64, 3)))
    out, lab = T.RandomJpeg(p=1.0, quality=(30, 30))(image, "label", rng=np.random.default_rng(0))
    mse = ((out.astype(float) - image) ** 2).mean()
    assert lab == "label" and out.shape == image.shape and 0 < mse and 10 * np.log10(255**2 / mse) > 25


def test_appearance_builds_only_what_is_switched_on():
    assert T.Appearance().transforms() == []
    made = T.Appearance(randconv=0.5, jpeg=0.2).transforms()
    assert [type(t) for t in made] == [T.RandConv, T.RandomJpeg] and [t.p for t in made] == [0.5, 0.2]
    image, label = _frame(11)
    plain = T.train_transform((16, 24), scale=(1, 1), flip=0.0, photometric=False)
    off = T.train_transform((16, 24), scale=(1, 1), flip=0.0, photometric=False, appearance=T.Appearance())
    a, b = plain(image, label, rng=np.random.default_rng(1)), off(image, label, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a[0], b[0])
    on = T.train_transform((20, 28), scale=(1, 1), flip=0.0, photometric=False, appearance=T.Appearance(colour=1, noise=1))
    out, lab = on(image, label, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(lab, label)
    assert not np.array_equal(out, image)


def test_recipe_keys_are_probabilities():
    cfg = apply_overrides(DEFAULTS, ["augment.randconv=0.5", "augment.jpeg=0.25"])
    assert cfg["augment"]["randconv"] == 0.5 and cfg["augment"]["jpeg"] == 0.25 and cfg["augment"]["blur"] == 0.0
    with pytest.raises(CitysegError, match=r"augment\.style is a probability"):
        apply_overrides(DEFAULTS, ["augment.style=1.5"])
    with pytest.raises(CitysegError):
        T.RandomBlur(p=-0.1)
