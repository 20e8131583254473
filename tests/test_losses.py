"""Losses against plain references computed by hand on small cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cityseg.errors import CitysegError
from cityseg.train.losses import CrossEntropyLoss, DiceLoss, FocalLoss, LovaszSoftmaxLoss, OhemCrossEntropyLoss, build_loss, class_weights_from_counts


def case(seed=0, b=2, c=4, h=3, w=5, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * 2
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return logits, target


def pixels(logits, target):
    """List of (probability vector, label) for the non-ignored pixels, in plain Python."""
    p = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    t = target.reshape(-1)
    return [(p[i].tolist(), int(t[i])) for i in range(t.numel()) if int(t[i]) != 255]


def test_dice_matches_hand_formula():
    logits, target = case()
    px = pixels(logits, target)
    c = logits.shape[1]
    dices = []
    for k in range(c):
        inter = sum(p[k] for p, t in px if t == k)
        psum = sum(p[k] for p, _ in px)
        gsum = sum(1 for _, t in px if t == k)
        if gsum:
            dices.append((2 * inter + 1.0) / (psum + gsum + 1.0))
    expected = 1 - sum(dices) / len(dices)
    assert DiceLoss(smooth=1.0)(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_focal_matches_hand_formula_and_gamma0_is_ce():
    logits, target = case(1)
    px = pixels(logits, target)
    expected = sum(-((1 - p[t]) ** 2) * math.log(p[t]) for p, t in px) / len(px)
    assert FocalLoss(gamma=2.0)(logits, target).item() == pytest.approx(expected, rel=1e-5)
    ce = F.cross_entropy(logits, target, ignore_index=255)
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(ce.item(), rel=1e-5)


def test_cross_entropy_weights_ignore_and_all_ignored():
    logits, target = case(2)
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])
    px = pixels(logits, target)
    num = sum(-w[t].item() * math.log(p[t]) for p, t in px)
    den = sum(w[t].item() for _, t in px)
    assert CrossEntropyLoss(class_weights=w)(logits, target).item() == pytest.approx(num / den, rel=1e-5)
    none = torch.full_like(target, 255)
    for loss in (CrossEntropyLoss(), OhemCrossEntropyLoss(), DiceLoss(), FocalLoss(), LovaszSoftmaxLoss()):
        value = loss(logits.requires_grad_(), none)
        assert value.item() == 0.0 and math.isfinite(value.item())


def _lovasz_direct(prob_k, fg):
    """Lovász extension of the Jaccard loss by definition: sort errors, evaluate the set function on
    the growing sets of the largest errors and sum error * increment."""
    errors = [abs(f - p) for p, f in zip(prob_k, fg)]
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    gt = {i for i, f in enumerate(fg) if f}

    def jaccard_loss(mispredicted):
        inter = len(gt - mispredicted)
        union = len(gt | mispredicted)
        return 1 - inter / union if union else 0.0

    total, prev, chosen = 0.0, 0.0, set()
    for i in order:
        chosen.add(i)
        cur = jaccard_loss(chosen)
        total += errors[i] * (cur - prev)
        prev = cur
    return total


def test_lovasz_matches_direct_sorted_errors_computation():
    logits, target = case(3, b=1, c=3, h=4, w=4, ignore_frac=0.1)
    px = pixels(logits, target)
    per_class = []
    for k in range(3):
        fg = [1.0 if t == k else 0.0 for _, t in px]
        if sum(fg):
            per_class.append(_lovasz_direct([p[k] for p, _ in px], fg))
    expected = sum(per_class) / len(per_class)
    assert LovaszSoftmaxLoss()(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_lovasz_on_hard_predictions_is_one_minus_iou():
    target = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 2, 0, 1]]])
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 100.0  # softmax is one-hot
    ious = []
    for k in range(3):
        inter = ((pred == k) & (target == k)).sum().item()
        union = ((pred == k) | (target == k)).sum().item()
        ious.append(inter / union)
    expected = 1 - sum(ious) / 3
    assert LovaszSoftmaxLoss()(logits, target).item() == pytest.approx(expected, abs=1e-6)
    assert LovaszSoftmaxLoss(per_image=True)(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_ohem_keeps_the_hardest_pixels():
    logits, target = case(4, ignore_frac=0.0)
    per_pixel = F.cross_entropy(logits, target, reduction="none").flatten()
    n = per_pixel.numel()
    hardest = per_pixel.sort(descending=True).values
    # thresh tiny: no pixel is "hard enough" by probability, so exactly the min_kept hardest are used
    k = 7
    ohem = OhemCrossEntropyLoss(thresh=1e-12, min_kept=k)(logits, target)
    assert ohem.item() == pytest.approx(hardest[:k].mean().item(), rel=1e-6)
    # thresh 1.0: every pixel with p_true < 1 is kept -> plain CE
    assert OhemCrossEntropyLoss(thresh=1.0, min_kept=1)(logits, target).item() == pytest.approx(per_pixel.mean().item(), rel=1e-6)
    # thresh 0.5: the pixels with p_true < 0.5 (CE > log 2), at least min_kept
    sel = per_pixel[per_pixel > math.log(2)]
    assert len(sel) > 3
    assert OhemCrossEntropyLoss(thresh=0.5, min_kept=3)(logits, target).item() == pytest.approx(sel.mean().item(), rel=1e-6)
    # min_kept as a fraction of the valid pixels
    frac = OhemCrossEntropyLoss(thresh=1e-12, min_kept=0.5)(logits, target)
    assert frac.item() == pytest.approx(hardest[: round(0.5 * n)].mean().item(), rel=1e-6)


def test_build_loss_combines_with_weights_and_backprops():
    logits, target = case(5)
    logits.requires_grad_()
    specs = [
        {"name": "ce", "weight": 1.0},
        {"name": "dice", "weight": 0.5},
        {"name": "focal", "weight": 0.25, "gamma": 1.0},
        {"name": "lovasz", "weight": 0.1},
        {"name": "ohem", "weight": 0.3, "thresh": 0.7, "min_kept": 0.2},
    ]
    loss = build_loss(specs, num_classes=4)
    value = loss(logits, target)
    expected = (
        CrossEntropyLoss()(logits, target)
        + 0.5 * DiceLoss()(logits, target)
        + 0.25 * FocalLoss(gamma=1.0)(logits, target)
        + 0.1 * LovaszSoftmaxLoss()(logits, target)
        + 0.3 * OhemCrossEntropyLoss(thresh=0.7, min_kept=0.2)(logits, target)
    )
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_losses_compute_in_float32_under_bf16_logits():
    logits, target = case(6)
    for fn in (CrossEntropyLoss(), DiceLoss(), FocalLoss(), LovaszSoftmaxLoss(), OhemCrossEntropyLoss()):
        assert fn(logits.bfloat16(), target).dtype == torch.float32


def test_class_weights_auto_and_explicit():
    counts = torch.tensor([900.0, 90.0, 10.0, 0.0])
    w = class_weights_from_counts(counts)
    freq = counts / counts.sum()
    assert torch.allclose(w, 1 / torch.log(1.02 + freq))
    assert w[0] < w[1] < w[2] < w[3]
    loss = build_loss([{"name": "ce", "class_weights": "auto"}], 4, class_counts=counts)
    assert torch.allclose(loss.terms[0].loss.class_weights, w)
    loss = build_loss([{"name": "ohem", "class_weights": [1.0, 2.0, 3.0, 4.0]}], 4)
    assert loss.terms[0].loss.class_weights.tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(CitysegError, match="3 values"):
        build_loss([{"name": "ce", "class_weights": [1.0, 2.0, 3.0]}], 4)
    with pytest.raises(CitysegError, match="unknown loss"):
        build_loss([{"name": "hinge"}], 4)


# ---- models with training-only heads: a dict of outputs, each term reads the one it names ------------
def test_multi_output_weighted_sum_by_hand():
    """Two 1-pixel, 2-class outputs: CE(out) = ln(1 + e^-2), CE(aux) = ln(2); total = 1.0 * CE(out) + 0.4 * CE(aux)."""
    target = torch.tensor([[[0]]])
    out = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)
    aux = torch.tensor([0.0, 0.0]).view(1, 2, 1, 1)
    loss = build_loss([{"name": "ce", "weight": 1.0}, {"name": "ce", "weight": 0.4, "output": "aux"}], num_classes=2)
    value = loss({"out": out, "aux": aux}, target)
    assert value.item() == pytest.approx(math.log(1 + math.exp(-2)) + 0.4 * math.log(2), rel=1e-6)
    # a plain tensor is the "out" output: the aux term has nothing to read
    with pytest.raises(CitysegError, match=r"loss\[1\] \(ce\) reads model output 'aux'"):
        loss(out, target)
    # validation (eval mode, one tensor): only the terms whose outputs exist
    assert loss.validation_loss(out, target).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def test_outputs_are_resized_to_the_loss_scale_and_labels_nearest_downsampled():
    """scale 1/4 of 16x32 labels: a 4x8 output is used as it is against the labels at rows/columns 4i + 2
    (the pixel nearest each output pixel's centre); scale 1: it is upsampled bilinearly to 16x32."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 8, generator=g, requires_grad=True)
    target = torch.randint(0, 5, (2, 16, 32), generator=g)
    target[0, :3] = 255
    specs = [{"name": "ce", "weight": 1.0}, {"name": "ce", "weight": 0.5, "output": "aux"}]
    quarter = build_loss(specs, num_classes=5, scale=0.25)({"out": logits, "aux": logits.flip(1)}, target)
    small = target[:, 2::4, 2::4]
    want = F.cross_entropy(logits, small, ignore_index=255) + 0.5 * F.cross_entropy(logits.flip(1), small, ignore_index=255)
    torch.testing.assert_close(quarter, want)
    full = build_loss(specs[:1], num_classes=5)(logits, target)
    up = F.interpolate(logits, size=(16, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(full, F.cross_entropy(up, target, ignore_index=255))
    half = build_loss(specs[:1], num_classes=5, scale=0.5)(logits, target)
    up = F.interpolate(logits, size=(8, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(half, F.cross_entropy(up, target[:, 1::2, 1::2], ignore_index=255))
    quarter.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # validation always scores at the labels' full size, whatever the scale
    val = build_loss(specs[:1], num_classes=5, scale=0.25).validation_loss(logits.detach(), target)
    torch.testing.assert_close(val, F.cross_entropy(F.interpolate(logits.detach(), size=(16, 32), mode="bilinear"), target, ignore_index=255))
    with pytest.raises(ValueError, match="loss scale"):
        build_loss(specs, num_classes=5, scale=0.0)


def test_a_loss_reading_several_outputs_gets_the_dict():
    from cityseg.train.losses import CombinedLoss, LossTerm

    class BoundaryOnly(torch.nn.Module):
        outputs = ("out", "boundary")

        def forward(self, outputs, target):
            return outputs["boundary"].sum() + 0 * outputs["out"].sum()

    loss = CombinedLoss([LossTerm("boundary", 2.0, BoundaryOnly())])
    out, boundary = torch.zeros(1, 2, 1, 1), torch.ones(1, 1, 1, 1)
    assert loss({"out": out, "boundary": boundary}, torch.tensor([[[0]]])).item() == 2.0
    with pytest.raises(CitysegError, match="'boundary'"):
        loss({"out": out}, torch.tensor([[[0]]]))


def test_ohem_with_ignored_pixels_and_class_weights_equals_the_sorted_definition():
    """The pixels kept are the valid ones above the threshold, else the min_kept hardest valid ones."""
    logits, target = case(7, b=2, c=5, h=6, w=7, ignore_frac=0.3)
    weights = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0])
    valid = target != 255
    per_pixel = F.cross_entropy(logits, target.clamp(max=4), weight=weights, reduction="none")[valid]
    hardest = per_pixel.sort(descending=True).values
    for thresh, k in ((0.6, 3), (1e-12, 11), (0.9, 0.25)):
        kept_n = max(1, round(k * valid.sum().item())) if k <= 1 else int(k)
        above = hardest[hardest > -math.log(thresh)]
        want = above.mean() if len(above) >= kept_n else hardest[:kept_n].mean()
        got = OhemCrossEntropyLoss(thresh=thresh, min_kept=k, class_weights=weights)(logits, target)
        assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_boundary_target_marks_label_changes_within_the_window():
    """An independent window scan in plain Python: a pixel is an edge when its 4x4 window (offsets -2..+1,
    clipped at the border) holds two label values."""
    from cityseg.train.losses import boundary_target

    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 3, (2, 7, 9), generator=g)
    target[0, :, :5] = 1  # a large uniform area: no edges inside it
    target[1, 2, 3] = 255
    edge = boundary_target(target, width=4)
    assert edge.shape == (2, 1, 7, 9)
    for b in range(2):
        for y in range(7):
            for x in range(9):
                window = {int(target[b, yy, xx]) for yy in range(max(0, y - 2), min(7, y + 2)) for xx in range(max(0, x - 2), min(9, x + 2))}
                assert edge[b, 0, y, x].item() == float(len(window) > 1), (b, y, x)


def test_boundary_loss_by_hand():
    """Zero logits: every pixel's BCE is ln 2; edge pixels weigh (n - pos) / n, the others pos / n."""
    from cityseg.train.losses import BoundaryLoss, boundary_target

    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :, 4:] = 1
    edge = boundary_target(target)
    n, pos = edge.numel(), edge.sum().item()
    assert 0 < pos < n
    want = math.log(2) * (pos * (n - pos) / n + (n - pos) * pos / n) / n
    got = BoundaryLoss()({"boundary": torch.zeros(1, 1, 8, 8)}, target)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_boundary_aware_ce_reads_only_where_the_boundary_head_fires():
    from cityseg.train.losses import BoundaryAwareCE

    logits, target = case(5, b=1, c=3, h=4, w=4, ignore_frac=0.0)
    boundary = torch.full((1, 1, 4, 4), -10.0)
    boundary[0, 0, 1, :] = 10.0  # confident edge on row 1 only
    got = BoundaryAwareCE(thresh=0.8, ohem_thresh=1.0, min_kept=1)({"out": logits, "boundary": boundary}, target)
    want = F.cross_entropy(logits[:, :, 1], target[:, 1])
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_prefix_output_sums_every_matching_head_and_tolerates_none():
    target = torch.tensor([[[0]]])
    out = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)
    zero = torch.zeros(1, 2, 1, 1)
    loss = build_loss([{"name": "ce", "weight": 1.0}, {"name": "ce", "weight": 0.5, "output": "aux*"}], num_classes=2)
    ce_out, ce_zero = math.log(1 + math.exp(-2)), math.log(2)
    assert loss({"out": out, "aux2": zero, "aux3": zero}, target).item() == pytest.approx(ce_out + 0.5 * 2 * ce_zero, rel=1e-6)
    assert loss({"out": out, "boundary": zero[:, :1]}, target).item() == pytest.approx(ce_out, rel=1e-6)
    assert loss(out, target).item() == pytest.approx(ce_out, rel=1e-6)


def test_terms_count_only_inside_their_during_window():
    """CE on [0, 0.8), Lovász on [0.8, 1]: at 0.5 the total is the CE alone, at 0.8 and at the last step
    (progress 1.0) the Lovász alone; without a progress (None) both count."""
    logits, target = case(seed=3)
    loss = build_loss([{"name": "ce", "during": [0.0, 0.8]}, {"name": "lovasz", "during": [0.8, 1.0]}], num_classes=4)
    ce = F.cross_entropy(logits, target, ignore_index=255)
    lovasz = LovaszSoftmaxLoss()(logits, target)
    assert loss(logits, target, 0.5).item() == pytest.approx(ce.item(), rel=1e-6)
    assert loss(logits, target, 0.8).item() == pytest.approx(lovasz.item(), rel=1e-6)
    assert loss(logits, target, 1.0).item() == pytest.approx(lovasz.item(), rel=1e-6)
    assert loss(logits, target).item() == pytest.approx((ce + lovasz).item(), rel=1e-6)
    assert loss.validation_loss(logits, target, 0.9).item() == pytest.approx(lovasz.item(), rel=1e-6)
    gap = build_loss([{"name": "ce", "during": [0.0, 0.5]}, {"name": "dice", "during": [0.0, 1.0]}], num_classes=4)
    gap.terms[1].during = (0.0, 0.5)  # config.check_losses refuses this; the loss still says it plainly
    with pytest.raises(CitysegError, match="no loss term is active at 60.0% of the run"):
        gap(logits, target, 0.6)


def test_an_output_finer_than_the_loss_grid_is_averaged_down():
    """BiSeNetV2's auxiliary heads at 1/2 under a loss at 1/4: bilinear (align_corners=False) halving
    samples between each 2x2 block's pixels, so the output the loss sees is the blocks' mean."""
    g = torch.Generator().manual_seed(4)
    out = torch.randn(2, 5, 4, 8, generator=g)
    aux = torch.randn(2, 5, 8, 16, generator=g)
    target = torch.randint(0, 5, (2, 16, 32), generator=g)
    target[1, 5:9] = 255
    specs = [{"name": "ce", "weight": 1.0}, {"name": "ce", "weight": 0.4, "output": "aux*"}]
    got = build_loss(specs, num_classes=5, scale=0.25)({"out": out, "aux": aux}, target)
    small = target[:, 2::4, 2::4]
    want = F.cross_entropy(out, small, ignore_index=255) + 0.4 * F.cross_entropy(F.avg_pool2d(aux, 2), small, ignore_index=255)
    torch.testing.assert_close(got, want)


def test_ohem_absolute_min_kept_counts_full_resolution_pixels():
    """``min_kept`` = 256 label pixels of 2x16x32 labels at loss scale 1/4 (64 loss pixels) keeps the 16
    hardest loss pixels, the same share of the frame; a fraction is a fraction at every scale."""
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 5, 4, 8, generator=g) * 3
    target = torch.randint(0, 5, (2, 16, 32), generator=g)
    per_pixel = F.cross_entropy(logits, target[:, 2::4, 2::4], reduction="none").flatten()
    hardest = per_pixel.sort(descending=True).values
    spec = {"name": "ohem", "thresh": 1e-12}  # no pixel passes the threshold: exactly min_kept are kept
    got = build_loss([{**spec, "min_kept": 256}], num_classes=5, scale=0.25)(logits, target)
    assert got.item() == pytest.approx(hardest[:16].mean().item(), rel=1e-6)
    got = build_loss([{**spec, "min_kept": 0.25}], num_classes=5, scale=0.25)(logits, target)
    assert got.item() == pytest.approx(hardest[:16].mean().item(), rel=1e-6)
    # at full scale the same absolute count is 256 of the 1024 label pixels
    up = F.interpolate(logits, size=(16, 32), mode="bilinear", align_corners=False)
    full = F.cross_entropy(up, target, reduction="none").flatten().sort(descending=True).values
    got = build_loss([{**spec, "min_kept": 256}], num_classes=5)(logits, target)
    assert got.item() == pytest.approx(full[:256].mean().item(), rel=1e-6)


def test_boundary_band_width_is_in_label_pixels_at_a_reduced_scale():
    """A vertical label edge at column 16 of 32x32 labels, loss scale 1/2: the 4-pixel band becomes a
    2-pixel window on the 16x16 loss grid, which marks column 8 alone (where columns 7 and 8 differ).
    Zero logits: the weighted BCE is ln 2 * 2 pos (n - pos) / n^2."""
    from cityseg.train.losses import BoundaryLoss

    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[:, :, 16:] = 1
    n, pos = 256, 16
    want = math.log(2) * 2 * pos * (n - pos) / n**2
    loss = build_loss([{"name": "boundary", "width": 4}], num_classes=2, scale=0.5)
    assert loss({"out": torch.zeros(1, 2, 16, 16), "boundary": torch.zeros(1, 1, 16, 16)}, target).item() == pytest.approx(want, rel=1e-6)
    # at full size the window (offsets -2..+1) straddles columns 15 and 16 from columns 15, 16 and 17
    n, pos = 1024, 3 * 32
    assert BoundaryLoss(width=4)({"boundary": torch.zeros(1, 1, 32, 32)}, target).item() == pytest.approx(math.log(2) * 2 * pos * (n - pos) / n**2, rel=1e-6)
