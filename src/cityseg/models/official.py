"""Official trained weights -> a cityseg checkpoint: one key-map table per published layout.

ESPNet, ESPNet-C and ESPNetv2 have module names of their own here and a table of renames each;
DDRNet, PIDNet, BiSeNetV2 and SegFormer (NVlabs) were ported with the official names, so their
tables only remove the projects' wrapping; Hugging Face's SegFormer renames the MiT encoder through
``segformer.MIT_LAYOUTS`` and its head by the rules below.

Each ``Layout`` says how the authors' state_dict names map onto a cityseg model's (regular
expressions applied in order to every key), which of their tensors their own forward never reads,
how the variant (options and output count) follows from the tensor shapes, and the preprocessing
their evaluation applies. ``import_official`` loads strictly: every official tensor is used or
named as unused, every model tensor is filled, shapes agree; the first problem is one
``CitysegError`` line naming the key. Nothing is downloaded.

Output counts: 19 are the Cityscapes trainIds; 20 are the trainIds plus the authors' trained
"void" class (``void=True``: its argmax predicts labelId 0, unlabeled, as their ``relabel`` does,
so on a valid pixel it scores as a miss, like any unlabeled prediction in the official evaluator);
34 are labelIds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cityseg import labels
from cityseg.checkpoint import Checkpoint
from cityseg.errors import CitysegError
from cityseg.models.espnetv2 import WIDTHS
from cityseg.models.registry import build_model, model_options
from cityseg.models.segformer import MIT_LAYOUTS
from cityseg.models.weights import read_state_dict

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class Preprocessing:
    """What the authors' evaluation does to a frame, in the checkpoint's terms: channels in
    ``channel_order``, resized to ``input_size`` (H, W) with ``interpolation``, then
    ``(x / 255 - mean) / std`` per channel (mean and std in [0, 1] units, in that channel order)."""

    channel_order: str
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int]


Rule = tuple[str, str | Callable[[re.Match], str]]


@dataclass(frozen=True)
class Layout:
    """One published state_dict layout and how it becomes a cityseg model."""

    name: str  # where the weights come from, for messages
    rules: tuple[Rule, ...]  # (pattern, replacement), applied in order to every key
    unused: tuple[str, ...]  # patterns of official tensors their forward never reads
    variant: Callable[[Shapes], tuple[int, dict[str, Any]]]  # shapes -> (outputs, options)
    preprocessing: Preprocessing
    marker: str = ""  # a pattern some key of this layout matches (tells layouts of one model apart)
    prepare: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None  # before the rules
    hint: str = ""  # what to do with a file of the same project that is not this layout


def _count(shapes: Shapes, pattern: str) -> int:
    """How many distinct indices ``(\\d+)`` in ``pattern`` the keys hold."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in shapes if (m := rx.match(k))})


def _shape(shapes: Shapes, key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CitysegError(f"no {key} in the file")
    return shapes[key]


def _espnet_variant(prefix: str) -> Callable[[Shapes], tuple[int, dict[str, Any]]]:
    def variant(shapes: Shapes) -> tuple[int, dict[str, Any]]:
        outputs = _shape(shapes, f"{prefix}classifier.conv.weight")[0]
        return outputs, {"p": _count(shapes, rf"{prefix}level2\.(\d+)\."), "q": _count(shapes, rf"{prefix}level3\.(\d+)\.")}

    return variant


def _espnetv2_variant(shapes: Shapes) -> tuple[int, dict[str, Any]]:
    widths = tuple(_shape(shapes, f"base_net.{k}.act.weight")[0] for k in ("level1", "level2_0", "level3_0", "level4_0"))
    s = next((s for s, w in WIDTHS.items() if w == widths), None)
    if s is None:
        raise CitysegError(f"encoder widths {list(widths)} match no ESPNetv2 scale")
    return _shape(shapes, "bu_dec_l4.merge_layer.3.weight")[0], {"s": s}


_ESP_BLOCK = (
    (r"\.(c1|d1)\.conv\.", r".\1."),
    (r"\.d2\.conv\.", ".dilated.0."),
    (r"\.d4\.conv\.", ".dilated.1."),
    (r"\.d8\.conv\.", ".dilated.2."),
    (r"\.d16\.conv\.", ".dilated.3."),
    (r"(level[23]_0)\.(bn|act)\.", r"\1.br.\2."),  # the strided ESP's own BN and PReLU
    (r"\.bn\.(bn|act)\.", r".br.\1."),  # the residual ESP's BR module
    (r"^encoder\.classifier\.conv\.", "encoder.classifier."),
)
#: sacmehta/ESPNet ``test/Model.py``: the authors' test preprocessing (``VisualizeResults.py``) reads
#: BGR, subtracts their mean and divides by their std in 0..255 units, resizes (cv2, bilinear) to
#: 1024x512 and divides by 255 once more, i.e. (x / 255 - mean / 255) / std with x in 0..255.
_ESPNET_PREPROCESSING = Preprocessing(
    channel_order="BGR",
    interpolation="bilinear_float",
    mean=(72.3923111 / 255, 82.90893555 / 255, 73.15840149 / 255),
    std=(45.3192215, 46.15289307, 44.91483307),
    input_size=(512, 1024),
)

_ESP_LAYOUTS: dict[str, Layout] = {
    "espnet": Layout(
        "sacmehta/ESPNet decoder",
        (
            *_ESP_BLOCK,
            (r"^level3_C\.conv\.", "project_l2."),
            (r"^br\.", "bn_l3."),
            (r"^conv\.", "merge_l1."),
            (r"^up_l3\.0\.", "up_l3."),
            (r"^combine_l2_l3\.0\.", "merge_br."),
            (r"^combine_l2_l3\.1\.", "merge_l2."),
            (r"^up_l2\.0\.", "up_l2."),
            (r"^up_l2\.1\.", "up_l2_br."),
            (r"^classifier\.", "up_l1."),
        ),
        (),
        _espnet_variant("encoder."),
        _ESPNET_PREPROCESSING,
    ),
    "espnet_c": Layout("sacmehta/ESPNet encoder", ((r"^", "encoder."), *_ESP_BLOCK), (), _espnet_variant(""), _ESPNET_PREPROCESSING),
    "espnetv2": Layout(
        "sacmehta/EdgeNets ESPNetv2 segmentation",
        (
            (r"^base_net\.", ""),
            (r"\.spp_dw\.(\d+)\.conv\.", r".spp_dw.\1."),
            (r"\.merge_layer\.0\.br\.0\.", ".merge_br.bn."),
            (r"\.merge_layer\.0\.br\.1\.", ".merge_br.act."),
            (r"\.merge_layer\.2\.", ".merge_conv."),
            (r"\.merge_layer\.3\.", ".merge_out."),
            (r"\.cbr\.0\.", ".conv."),
            (r"\.cbr\.1\.", ".bn."),
            (r"\.cbr\.2\.", ".act."),
            (r"\.br\.br\.0\.", ".br.bn."),
            (r"\.br\.br\.1\.", ".br.act."),
            (r"\.wt_layer\.1\.", ".gate."),
            (r"^(bu_br_l\d)\.0\.", r"\1.bn."),
            (r"^(bu_br_l\d)\.1\.", r"\1.act."),
        ),
        (r"_0\.eesp\.module_act\.weight$",),  # the strided EESP returns before its PReLU
        _espnetv2_variant,
        # sacmehta/EdgeNets ``test_segmentation.py``: PIL RGB, bilinear resize to 1024x512, their
        # ``MEAN`` / ``STD`` (the ImageNet statistics) in [0, 1] units
        Preprocessing("RGB", "pil_bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (512, 1024)),
    ),
}


def _outputs_of(key: str) -> Callable[[Shapes], tuple[int, dict[str, Any]]]:
    """The variant of a model whose only free choice is the class count, read at ``key``."""
    return lambda shapes: (_shape(shapes, key)[0], {})


#: HRNet-Semantic-Segmentation's evaluation, which DDRNet and PIDNet train and test with: OpenCV BGR
#: reversed to RGB, /255, ImageNet mean/std, the full 1024x2048 frame
_HRNET_PREPROCESSING = Preprocessing("RGB", "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (1024, 2048))
#: the HRNet-style training wrapper saves the network under ``model.`` (stripped on reading) beside its
#: losses' class-weight buffers
_LOSS_BUFFERS = (r"^(loss|sem_loss|bd_loss)\.",)


def _hf_segformer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``SegformerForSemanticSegmentation``: the encoder through the MiT key map
    (``segformer.models.segformer``), under ``backbone.``; the decode head left for the rules."""
    encoder = MIT_LAYOUTS["Hugging Face Segformer"](state) or {}
    head = {k: v for k, v in state.items() if not k.startswith("segformer.encoder.")}
    return {**{f"backbone.{k}": v for k, v in encoder.items()}, **head}


#: Hugging Face's SegFormer head: ``linear_c.{0..3}`` for stages 1..4, the fuse conv without its
#: module wrapper, ``batch_norm`` and ``classifier``
_HF_HEAD: tuple[Rule, ...] = (
    (r"^decode_head\.linear_c\.(\d)\.", lambda m: f"decode_head.linear_c{int(m[1]) + 1}."),
    (r"^decode_head\.linear_fuse\.weight$", "decode_head.linear_fuse.conv.weight"),
    (r"^decode_head\.batch_norm\.", "decode_head.linear_fuse.bn."),
    (r"^decode_head\.classifier\.", "decode_head.linear_pred."),
)
#: mmsegmentation (0.x, NVlabs/SegFormer) tests Cityscapes at 1024x2048 with ImageNet mean/std on RGB;
#: Hugging Face's image processor uses the same statistics
_MMSEG_PREPROCESSING = Preprocessing("RGB", "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (1024, 2048))


def _segformer(name: str) -> tuple[Layout, ...]:
    nvlabs = Layout(
        f"NVlabs/SegFormer ({name}, mmsegmentation 0.x)",
        (),
        (r"^decode_head\.conv_seg\.",),  # mmseg's BaseDecodeHead creates it; SegFormerHead never calls it
        _outputs_of("decode_head.linear_pred.weight"),
        _MMSEG_PREPROCESSING,
        marker=r"^backbone\.patch_embed1\.",
    )
    hf = Layout(
        f"Hugging Face SegformerForSemanticSegmentation ({name})",
        _HF_HEAD,
        (),
        _outputs_of("decode_head.classifier.weight"),
        _MMSEG_PREPROCESSING,
        marker=r"^segformer\.encoder\.",
        prepare=_hf_segformer,
    )
    return nvlabs, hf


def _identity(name: str, classifier: str, unused: tuple[str, ...], pre: Preprocessing) -> tuple[Layout, ...]:
    """A layout whose names are cityseg's own (the model was ported with the official module names)."""
    return (Layout(name, (), unused, _outputs_of(classifier), pre, hint=_BACKBONE_HINT),)


_BACKBONE_HINT = "; an ImageNet backbone file trains with model.options.encoder_weights=FILE instead"
_BISENET_PREPROCESSING = Preprocessing("RGB", "bilinear", (0.3257, 0.3690, 0.3223), (0.2112, 0.2148, 0.2115), (1024, 2048))

#: model name -> the published layouts it can be filled from, tried in order (by ``marker``)
LAYOUTS: dict[str, tuple[Layout, ...]] = {
    **{name: (layout,) for name, layout in _ESP_LAYOUTS.items()},
    "ddrnet23_slim": _identity("ydhongHIT/DDRNet Cityscapes (DDRNet-23-slim)", "final_layer.conv2.weight", _LOSS_BUFFERS, _HRNET_PREPROCESSING),
    "ddrnet23": _identity("ydhongHIT/DDRNet Cityscapes (DDRNet-23)", "final_layer.conv2.weight", _LOSS_BUFFERS, _HRNET_PREPROCESSING),
    "pidnet_s": _identity("XuJiacong/PIDNet Cityscapes (PIDNet-S)", "final_layer.conv2.weight", _LOSS_BUFFERS, _HRNET_PREPROCESSING),
    "pidnet_m": _identity("XuJiacong/PIDNet Cityscapes (PIDNet-M)", "final_layer.conv2.weight", _LOSS_BUFFERS, _HRNET_PREPROCESSING),
    "pidnet_l": _identity("XuJiacong/PIDNet Cityscapes (PIDNet-L)", "final_layer.conv2.weight", _LOSS_BUFFERS, _HRNET_PREPROCESSING),
    # CoinCheung/BiSeNet: cv2 BGR reversed to RGB, their Cityscapes mean/std, the full frame
    "bisenetv2": _identity("CoinCheung/BiSeNet (BiSeNetV2)", "head.conv_out.1.weight", (), _BISENET_PREPROCESSING),
    "segformer_b0": _segformer("B0"),
    "segformer_b1": _segformer("B1"),
}


def _pick_layout(model: str, state: Mapping[str, torch.Tensor], where: str) -> Layout:
    """The first layout of ``model`` whose marker a key of the file matches."""
    layouts = LAYOUTS[model]
    for layout in layouts:
        if not layout.marker or any(re.search(layout.marker, k) for k in state):
            return layout
    names = " or ".join(layout.name for layout in layouts)
    raise CitysegError(f"{where}: not a {names} state_dict (e.g. {next(iter(state))!r})")


def _label_mode(outputs: int, model: str, where: str) -> tuple[str, bool]:
    """(label mode, void) for a network with ``outputs`` outputs."""
    if outputs == labels.num_classes("labelIds"):
        return "labelIds", False
    n = labels.num_classes("trainIds")
    if outputs == n + 1 and "void" in model_options(model):
        return "trainIds", True
    if outputs == n:
        return "trainIds", False
    raise CitysegError(f"{where}: {outputs} outputs is no Cityscapes model (19 trainIds, 19 + void, or 34 labelIds)")


def map_keys(state: Mapping[str, torch.Tensor], layout: Layout, where: str = "weights") -> dict[str, tuple[str, torch.Tensor]]:
    """Official ``{key: tensor}`` -> ``{cityseg key: (official key, tensor)}``, the unused ones left out."""
    rules = [(re.compile(p), r) for p, r in layout.rules]
    unused = [re.compile(p) for p in layout.unused]
    out: dict[str, tuple[str, torch.Tensor]] = {}
    for key, value in state.items():
        if any(rx.search(key) for rx in unused):
            continue
        new = key
        for rx, repl in rules:
            new = rx.sub(repl, new)
        if new in out:  # two official tensors for one place: the table is wrong for this file
            raise CitysegError(f"{where}: {out[new][0]} and {key} both map to {new}")
        out[new] = (key, value)
    return out


def load_mapped(model: torch.nn.Module, mapped: Mapping[str, tuple[str, torch.Tensor]], where: str) -> dict[str, torch.Tensor]:
    """The model's state_dict filled from ``mapped``, strictly: one line naming the first bad key."""
    own = model.state_dict()
    for new, (key, _) in mapped.items():
        if new not in own:
            raise CitysegError(f"{where}: {key}: no such tensor in {model.name} (another layout or variant?)")
    state = {}
    for k, v in own.items():
        if k not in mapped:
            if k.endswith("num_batches_tracked"):  # older PyTorch did not save it
                state[k] = v
                continue
            raise CitysegError(f"{where}: no tensor for {k} of {model.name} (an incomplete file?)")
        key, value = mapped[k]
        if tuple(value.shape) != tuple(v.shape):
            raise CitysegError(f"{where}: {key} has shape {list(value.shape)}, {model.name} needs {list(v.shape)}")
        state[k] = value.detach().to(v.dtype).clone()
    model.load_state_dict(state)
    return state


def _check_options(given: Mapping[str, Any], inferred: Mapping[str, Any], where: str) -> dict[str, Any]:
    for key, value in given.items():
        if key in inferred and value != inferred[key]:
            raise CitysegError(f"{where}: the weights are {key}={inferred[key]}, not {key}={value}")
    return {**given, **inferred}


def import_official(path: str | os.PathLike, model: str, options: Mapping[str, Any] | None = None, input_size: tuple[int, int] | None = None) -> Checkpoint:
    """A cityseg ``Checkpoint`` of ``model`` holding the official weights in ``path``."""
    where = os.fspath(path)
    if model not in LAYOUTS:
        raise CitysegError(f"no official layout for model {model!r}; importable: {', '.join(LAYOUTS)}")
    state = read_state_dict(path, " or ".join(layout.name for layout in LAYOUTS[model]), what="weights")
    layout = _pick_layout(model, state, where)
    if layout.prepare is not None:
        state = layout.prepare(state)
    try:
        outputs, inferred = layout.variant({k: tuple(v.shape) for k, v in state.items()})
    except CitysegError as e:
        raise CitysegError(f"{where}: not a {layout.name} state_dict ({e}){layout.hint}") from None
    mode, void = _label_mode(outputs, model, where)
    if "void" in model_options(model):
        inferred["void"] = void
    opts = _check_options(dict(options or {}), inferred, where)
    net = build_model(model, num_classes=labels.num_classes(mode), **opts)
    weights = load_mapped(net, map_keys(state, layout, where), where)
    pre = layout.preprocessing
    size = tuple(input_size or pre.input_size)
    net.check_input_shape(*size)
    return Checkpoint(
        model=weights,
        model_name=model,
        label_mode=mode,
        num_classes=labels.num_classes(mode),
        model_options=opts,
        class_names=list(labels.class_names(mode)),
        input_size=[int(size[0]), int(size[1])],
        interpolation=pre.interpolation,
        mean=list(pre.mean),
        std=list(pre.std),
        channel_order=pre.channel_order,
    )
