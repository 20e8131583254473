"""``cityseg import``: the authors' ESPNet / ESPNetv2 layouts loaded strictly, the variant read from the
shapes, their preprocessing and void output carried through predict, evaluate and export.

The state_dicts are written here from the authors' module structure (sacmehta/ESPNet
``test/Model.py``; sacmehta/EdgeNets ``nn_layers/*.py``, ``model/*/espnetv2.py``), names and shapes
only, with random values: never their weights.
"""

from __future__ import annotations

import io
import json
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from cityseg.checkpoint import load_checkpoint
from cityseg.cli import main
from cityseg.data.transforms import preprocess
from cityseg.errors import CitysegError
from cityseg.infer.predictor import Predictor
from cityseg.models import build_model, model_from_checkpoint
from cityseg.models.official import import_official


class Official:
    """Collects ``{name: shape}`` of one official network as its modules would register them."""

    def __init__(self, tracked: bool):
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.tracked = tracked  # newer PyTorch saves BatchNorm's num_batches_tracked

    def bn(self, p: str, c: int) -> None:
        for k in ("weight", "bias", "running_mean", "running_var"):
            self.shapes[f"{p}.{k}"] = (c,)
        if self.tracked:
            self.shapes[f"{p}.num_batches_tracked"] = ()

    def conv(self, p: str, cout: int, cin: int, k: int, groups: int = 1) -> None:
        self.shapes[f"{p}.weight"] = (cout, cin // groups, k, k)

    def prelu(self, p: str, c: int) -> None:
        self.shapes[f"{p}.weight"] = (c,)

    def state(self, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        out = {}
        for k, shape in self.shapes.items():
            if k.endswith("num_batches_tracked"):
                out[k] = torch.tensor(7)
            elif k.endswith("running_var"):
                out[k] = torch.rand(shape, generator=g) + 0.5
            else:
                out[k] = torch.randn(shape, generator=g) * 0.1
        return out


# ---- sacmehta/ESPNet test/Model.py ----------------------------------------------------------------
def espnet_official(classes: int = 20, p: int = 2, q: int = 3, decoder: bool = True) -> Official:
    o = Official(tracked=False)  # the authors' files predate num_batches_tracked
    e = "encoder." if decoder else ""

    def cbr(name, cin, cout, k):
        o.conv(f"{name}.conv", cout, cin, k)
        o.bn(f"{name}.bn", cout)
        o.prelu(f"{name}.act", cout)

    def br(name, c):
        o.bn(f"{name}.bn", c)
        o.prelu(f"{name}.act", c)

    def esp(name, cin, cout, down=False):  # DownSamplerB / DilatedParllelResidualBlockB
        n = cout // 5
        o.conv(f"{name}.c1.conv", n, cin, 3 if down else 1)
        o.conv(f"{name}.d1.conv", cout - 4 * n, n, 3)
        for d in (2, 4, 8, 16):
            o.conv(f"{name}.d{d}.conv", n, n, 3)
        if down:
            o.bn(f"{name}.bn", cout)
            o.prelu(f"{name}.act", cout)
        else:
            br(f"{name}.bn", cout)

    cbr(f"{e}level1", 3, 16, 3)
    br(f"{e}b1", 19)
    esp(f"{e}level2_0", 19, 64, down=True)
    for i in range(p):
        esp(f"{e}level2.{i}", 64, 64)
    br(f"{e}b2", 131)
    esp(f"{e}level3_0", 131, 128, down=True)
    for i in range(q):
        esp(f"{e}level3.{i}", 128, 128)
    br(f"{e}b3", 256)
    o.conv(f"{e}classifier.conv", classes, 256, 1)
    if decoder:
        c = classes
        o.conv("level3_C.conv", c, 131, 1)
        o.bn("br", c)
        cbr("conv", 16 + c, c, 3)
        o.shapes["up_l3.0.weight"] = (c, c, 2, 2)
        br("combine_l2_l3.0", 2 * c)
        esp("combine_l2_l3.1", 2 * c, c)
        o.shapes["up_l2.0.weight"] = (c, c, 2, 2)
        br("up_l2.1", c)
        o.shapes["classifier.weight"] = (c, c, 2, 2)
    return o


# ---- sacmehta/EdgeNets ESPNetv2 segmentation ------------------------------------------------------
V2_WIDTHS = {0.5: [16, 32, 64, 128], 1.0: [32, 64, 128, 256], 2.0: [32, 128, 256, 512]}


def espnetv2_official(classes: int = 20, s: float = 0.5) -> Official:
    o = Official(tracked=True)

    def cbr(name, cin, cout, k, groups=1, act=True):  # nn_layers/espnet_utils CBR / CB
        o.conv(f"{name}.conv", cout, cin, k, groups)
        o.bn(f"{name}.bn", cout)
        if act:
            o.prelu(f"{name}.act", cout)

    def seq_cbr(name, cin, cout, k, groups=1):  # nn_layers/cnn_utils CBR (a Sequential)
        o.conv(f"{name}.cbr.0", cout, cin, k, groups)
        o.bn(f"{name}.cbr.1", cout)
        o.prelu(f"{name}.cbr.2", cout)

    def eesp(name, cin, cout):
        n = cout // 4
        cbr(f"{name}.proj_1x1", cin, n, 1, groups=4)
        for i in range(4):
            o.conv(f"{name}.spp_dw.{i}.conv", n, n, 3, groups=n)
        cbr(f"{name}.conv_1x1_exp", cout, cout, 1, groups=4, act=False)
        o.bn(f"{name}.br_after_cat.bn", cout)
        o.prelu(f"{name}.br_after_cat.act", cout)
        o.prelu(f"{name}.module_act", cout)

    def down(name, cin, cout):
        eesp(f"{name}.eesp", cin, cout - cin)
        cbr(f"{name}.inp_reinf.0", 3, 3, 3)
        cbr(f"{name}.inp_reinf.1", 3, cout, 1, act=False)
        o.prelu(f"{name}.act", cout)

    def pyramid(name, cin, proj, cout, last=False):
        seq_cbr(f"{name}.projection_layer", cin, proj, 1)
        for i in range(5):
            o.conv(f"{name}.stages.{i}", proj, proj, 3, groups=proj)
        o.bn(f"{name}.merge_layer.0.br.0", 5 * proj)
        o.prelu(f"{name}.merge_layer.0.br.1", 5 * proj)
        seq_cbr(f"{name}.merge_layer.2", 5 * proj, proj, 3, groups=proj)
        o.conv(f"{name}.merge_layer.3", cout, proj, 1)
        if last:
            o.shapes[f"{name}.merge_layer.3.bias"] = (cout,)
        else:
            o.bn(f"{name}.br.br.0", cout)
            o.prelu(f"{name}.br.br.1", cout)

    c1, c2, c3, c4 = V2_WIDTHS[s]
    cbr("base_net.level1", 3, c1, 3)
    down("base_net.level2_0", c1, c2)
    down("base_net.level3_0", c2, c3)
    for i in range(3):
        eesp(f"base_net.level3.{i}", c3, c3)
    down("base_net.level4_0", c3, c4)
    for i in range(7):
        eesp(f"base_net.level4.{i}", c4, c4)
    proj = min(classes // 2, 16)
    for i, (cin, cout) in enumerate([(c4, 64), (64, 48), (48, 32), (32, classes)], 1):
        pyramid(f"bu_dec_l{i}", cin, proj, cout, last=i == 4)
    for i, (cin, cout) in zip((2, 3, 4), [(c3, 64), (c2, 48), (c1, 32)]):
        o.conv(f"merge_enc_dec_l{i}.wt_layer.1", cout, cin, 1)
        seq_cbr(f"merge_enc_dec_l{i}.expansion_layer", cin, cout, 3, groups=math.gcd(cin, cout))
        o.bn(f"bu_br_l{i}.0", cout)
        o.prelu(f"bu_br_l{i}.1", cout)
    return o


def _save(tmp_path, state, name="official.pth", legacy=False):
    path = tmp_path / name
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def _all_used(official: dict[str, torch.Tensor], ckpt: dict, unused: tuple[str, ...] = ()) -> None:
    """Every official tensor (but the named unused ones) is in the checkpoint, value for value."""
    by_shape: dict[tuple, list[torch.Tensor]] = {}
    for v in ckpt["model"].values():
        by_shape.setdefault(tuple(v.shape), []).append(v)
    for k, v in official.items():
        if k.endswith(unused) or k.endswith("num_batches_tracked"):
            continue
        assert any(torch.equal(v, w) for w in by_shape.get(tuple(v.shape), [])), k


# ---- strict loading, every format -------------------------------------------------------------------
CASES = [
    ("espnet", lambda: espnet_official(p=2, q=3), {"p": 2, "q": 3, "void": True}, ()),
    ("espnet_c", lambda: espnet_official(p=3, q=2, decoder=False), {"p": 3, "q": 2, "void": True}, ()),
    ("espnetv2", lambda: espnetv2_official(s=0.5), {"s": 0.5, "void": True}, ("_0.eesp.module_act.weight",)),
]


@pytest.mark.parametrize("model, build, options, unused", CASES, ids=[c[0] for c in CASES])
def test_official_layout_imports_every_tensor(tmp_path, model, build, options, unused):
    official = build().state()
    path = _save(tmp_path, official, legacy=model != "espnetv2")  # the ESPNet files are pre-zip pickles
    assert main(["import", str(path), "--model", model, "--out", str(tmp_path / "c.pt")]) == 0
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["model_options"] == options and ckpt["label_mode"] == "trainIds" and ckpt["num_classes"] == 19
    _all_used(official, ckpt, unused)
    net, _ = model_from_checkpoint(ckpt)
    assert net.void_class
    with torch.no_grad():
        assert net(torch.rand(1, 3, 32, 64)).shape == (1, 20, 32, 64)


PLACES = {
    "espnet": (
        espnet_official,
        {
            "up_l1.weight": "classifier.weight",
            "project_l2.weight": "level3_C.conv.weight",
            "merge_l2.dilated.3.weight": "combine_l2_l3.1.d16.conv.weight",
            "encoder.level2_0.br.act.weight": "encoder.level2_0.act.weight",
            "bn_l3.running_var": "br.running_var",
        },
    ),
    "espnetv2": (
        espnetv2_official,
        {
            "bu_dec_l4.merge_out.bias": "bu_dec_l4.merge_layer.3.bias",
            "bu_dec_l1.merge_conv.act.weight": "bu_dec_l1.merge_layer.2.cbr.2.weight",
            "merge_enc_dec_l3.gate.weight": "merge_enc_dec_l3.wt_layer.1.weight",
            "level4.6.spp_dw.3.weight": "base_net.level4.6.spp_dw.3.conv.weight",
            "bu_br_l2.act.weight": "bu_br_l2.1.weight",
        },
    ),
}


@pytest.mark.parametrize("model", list(PLACES))
def test_tensors_land_where_the_authors_forward_reads_them(tmp_path, model):
    """Where module names differ from the authors' (decoder parts, flattened wrappers), a few
    tensors checked by hand: each must receive the authors' tensor of the same role."""
    build, places = PLACES[model]
    official = build().state()
    net = import_official(_save(tmp_path, official), model).model
    for ours, theirs in places.items():
        assert torch.equal(net[ours], official[theirs]), ours


def test_legacy_pickle_with_cuda_storages_loads_on_the_cpu(tmp_path, capsys):
    """The authors' files are pre-zip pickles of GPU tensors: each storage's location reads 'cuda:0'."""
    buf = io.BytesIO()
    torch.save(espnet_official().state(), buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # pickle BINUNICODE, length first; memoised once
    assert cpu in raw
    path = tmp_path / "espnet_p_2_q_3.pth"
    path.write_bytes(raw.replace(cpu, cuda))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # the file really names a GPU
    assert main(["import", str(path), "--model", "espnet", "--out", str(tmp_path / "c.pt")]) == 0
    assert load_checkpoint(tmp_path / "c.pt")["model_options"] == {"p": 2, "q": 3, "void": True}


def test_wrappers_and_prefixes_are_unwrapped(tmp_path):
    official = espnet_official().state()
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in official.items()}}
    ckpt = import_official(_save(tmp_path, wrapped), "espnet")
    assert ckpt.model_options == {"p": 2, "q": 3, "void": True}


@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
def test_espnetv2_scale_is_read_from_the_widths(tmp_path, s):
    shapes = espnetv2_official(s=s).shapes
    state = {k: torch.zeros(v) for k, v in shapes.items()}
    assert import_official(_save(tmp_path, state), "espnetv2").model_options == {"s": s, "void": True}


@pytest.mark.parametrize("classes, mode, void", [(19, "trainIds", False), (20, "trainIds", True), (34, "labelIds", False)])
def test_output_count_decides_label_mode_and_void(tmp_path, classes, mode, void):
    ckpt = import_official(_save(tmp_path, espnet_official(classes=classes).state()), "espnet")
    assert (ckpt.label_mode, ckpt.model_options["void"]) == (mode, void)
    assert ckpt.num_classes == (34 if mode == "labelIds" else 19) and len(ckpt.class_names) == ckpt.num_classes


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("encoder.level3.1.d8.conv.weight"), r"no tensor for encoder\.level3\.1\.dilated\.2\.weight of espnet"),
        (
            lambda s: s.__setitem__("encoder.level2.0.c1.conv.weight", torch.zeros(12, 64, 3, 3)),
            r"encoder\.level2\.0\.c1\.conv\.weight has shape \[12, 64, 3, 3\], espnet needs \[12, 64, 1, 1\]",
        ),
        (lambda s: s.__setitem__("aux.weight", torch.zeros(3)), r"aux\.weight: no such tensor in espnet"),
        (lambda s: s.__setitem__("classifier.weight", torch.zeros(12, 12, 2, 2)), r"classifier\.weight has shape"),
    ],
    ids=["missing", "shape", "extra", "classes"],
)
def test_a_bad_key_is_one_line_naming_it(tmp_path, capsys, edit, message):
    state = espnet_official().state()
    edit(state)
    err = _one_line_error(capsys, ["import", str(_save(tmp_path, state)), "--model", "espnet", "--out", str(tmp_path / "c.pt")])
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize(
    "classes, option, message",
    [
        (20, "q=5", "the weights are q=3, not q=5"),
        (20, "void=false", "the weights are void=True, not void=False"),
        (19, "void=true", "the weights are void=False, not void=True"),
        (20, "p=2", None),
    ],
)
def test_options_must_agree_with_the_shapes(tmp_path, capsys, classes, option, message):
    path = _save(tmp_path, espnet_official(classes=classes, p=2, q=3).state())
    argv = ["import", str(path), "--model", "espnet", "--out", str(tmp_path / "c.pt"), "--set", option]
    if message is None:
        assert main(argv) == 0
        return
    assert message in _one_line_error(capsys, argv)


def test_not_that_layout_is_one_line(tmp_path, capsys):
    path = _save(tmp_path, espnet_official().state())
    err = _one_line_error(capsys, ["import", str(path), "--model", "espnetv2", "--out", str(tmp_path / "c.pt")])
    assert "not a sacmehta/EdgeNets ESPNetv2 segmentation state_dict" in err
    err = _one_line_error(capsys, ["import", str(path), "--model", "residual_unet", "--out", str(tmp_path / "c.pt")])
    assert "no official layout for model 'residual_unet'" in err


# ---- preprocessing against a hand computation ----------------------------------------------------------
def test_espnet_preprocessing_of_one_pixel(tmp_path):
    """sacmehta/ESPNet VisualizeResults.py: BGR, (v - mean) / std in 0..255 units, resize, / 255."""
    ckpt = import_official(_save(tmp_path, espnet_official().state()), "espnet")
    image = np.zeros((4, 6, 3), np.uint8)
    image[1, 2] = (200, 100, 50)  # R, G, B
    x = preprocess(image, (4, 6), ckpt.interpolation, ckpt.mean, ckpt.std, ckpt.channel_order)
    b, g, r = ((50 - 72.3923111) / 45.3192215) / 255, ((100 - 82.90893555) / 46.15289307) / 255, ((200 - 73.15840149) / 44.91483307) / 255
    torch.testing.assert_close(x[:, 1, 2], torch.tensor([b, g, r]), rtol=1e-6, atol=1e-9)


def test_espnetv2_preprocessing_of_one_pixel(tmp_path):
    """sacmehta/EdgeNets test_segmentation.py: RGB, to_tensor (/255), normalize with ImageNet mean/std."""
    ckpt = import_official(_save(tmp_path, espnetv2_official().state()), "espnetv2")
    image = np.zeros((4, 6, 3), np.uint8)
    image[1, 2] = (200, 100, 50)
    x = preprocess(image, (4, 6), ckpt.interpolation, ckpt.mean, ckpt.std, ckpt.channel_order)
    expected = [(200 / 255 - 0.485) / 0.229, (100 / 255 - 0.456) / 0.224, (50 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(x[:, 1, 2], torch.tensor(expected), rtol=1e-6, atol=1e-7)


def test_exact_resizes_are_the_authors_own():
    """ESPNet resizes the normalised float image with OpenCV; EdgeNets resizes with Pillow's bilinear."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    floats = cv2.resize(image.astype(np.float32), (24, 16), interpolation=cv2.INTER_LINEAR) / 255
    torch.testing.assert_close(preprocess(image, (16, 24), "bilinear_float"), torch.from_numpy(floats.transpose(2, 0, 1)))
    pil = np.asarray(Image.fromarray(image).resize((24, 16), Image.BILINEAR), np.float32) / 255
    torch.testing.assert_close(preprocess(image, (16, 24), "pil_bilinear"), torch.from_numpy(pil.transpose(2, 0, 1)))
    with pytest.raises(CitysegError, match="unknown channel order 'RBG'"):
        preprocess(image, (16, 24), channel_order="RBG")


# ---- the void output ---------------------------------------------------------------------------------
class _VoidLeft(torch.nn.Module):
    """20 outputs: void wins on the left half, trainId 0 (road) on the right half."""

    void_class = True

    def forward(self, x):
        out = torch.zeros(x.shape[0], 20, *x.shape[-2:])
        w = x.shape[-1]
        out[:, 19, :, : w // 2] = 5.0
        out[:, 0, :, w // 2 :] = 5.0
        return out


def test_void_argmax_predicts_labelid_0_and_never_a_class():
    pred = Predictor(_VoidLeft(), "trainIds", (8, 16)).predict(np.zeros((8, 16, 3), np.uint8))
    assert (pred[:, :8] == 0).all() and (pred[:, 8:] == 7).all()  # unlabeled; road is labelId 7


def test_void_on_a_valid_pixel_is_a_miss_in_the_scores():
    from cityseg.eval.metrics import CityscapesEvaluator

    pred = Predictor(_VoidLeft(), "trainIds", (8, 16)).predict(np.zeros((8, 16, 3), np.uint8))
    ev = CityscapesEvaluator()
    ev.add(pred, np.full((8, 16), 7, np.uint8))  # all road
    assert ev.results()["per_class"]["road"]["iou"] == pytest.approx(0.5)


# ---- after import: predict, evaluate, export ----------------------------------------------------------
def _pred_ids(folder) -> set[int]:
    (written,) = list(folder.glob("*.png"))
    return set(np.unique(np.asarray(Image.open(written))).tolist())


def test_imported_checkpoint_predicts_and_exports(tmp_path, synth_small):
    """A BGR, void-output import (ESPNet) through predict and an ONNX export whose metadata alone
    reproduces the checkpoint's predictions."""
    ckpt = tmp_path / "e.pt"
    assert main(["import", str(_save(tmp_path, espnet_official().state())), "--model", "espnet", "--out", str(ckpt), "--size", "64x128"]) == 0
    image_path = sorted((synth_small / "leftImg8bit" / "test").rglob("*.png"))[0]
    assert main(["predict", "--checkpoint", str(ckpt), str(image_path), "--out", str(tmp_path / "pred")]) == 0
    assert _pred_ids(tmp_path / "pred") <= {0, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}
    onnx_path = tmp_path / "e.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(onnx_path), "--exporter", "torchscript", "--no-check"]) == 0
    onnx_pred, torch_pred = Predictor.from_onnx(onnx_path), Predictor.from_checkpoint(ckpt)
    assert onnx_pred.channel_order == "BGR" and onnx_pred.void_class and onnx_pred.interpolation == "bilinear_float"
    image = np.asarray(Image.open(image_path).convert("RGB"))
    torch.testing.assert_close(onnx_pred.logits(image), torch_pred.logits(image), rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_imported_espnetv2_evaluates_and_exports_fp32_and_int8(tmp_path, synth_small):
    ckpt = tmp_path / "v2.pt"
    assert main(["import", str(_save(tmp_path, espnetv2_official(s=0.5).state())), "--model", "espnetv2", "--out", str(ckpt), "--size", "64x128"]) == 0
    scores = tmp_path / "scores.json"
    assert main(["evaluate", "--data", str(synth_small), "--split", "val", "--checkpoint", str(ckpt), "--json", str(scores)]) == 0
    assert 0.0 <= json.loads(scores.read_text())["mIoU"] <= 1.0
    onnx_path = tmp_path / "v2.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(onnx_path)]) == 0
    from cityseg.infer.onnx import read_metadata

    meta = read_metadata(onnx_path)
    assert meta["void_class"] is True and meta["channel_order"] == "RGB" and meta["interpolation"] == "pil_bilinear"
    image_path = sorted((synth_small / "leftImg8bit" / "test").rglob("*.png"))[0]
    image = np.asarray(Image.open(image_path).convert("RGB"))
    torch.testing.assert_close(Predictor.from_onnx(onnx_path).logits(image), Predictor.from_checkpoint(ckpt).logits(image), rtol=1e-3, atol=1e-3)
    int8 = tmp_path / "v2_int8.onnx"
    argv = ["export", "--checkpoint", str(ckpt), "--out", str(int8), "--int8", "--calib-data", str(synth_small), "--calib-frames", "2", "--no-check"]
    assert main(argv) == 0
    assert main(["predict", "--onnx", str(int8), str(image_path), "--out", str(tmp_path / "pred")]) == 0
    assert _pred_ids(tmp_path / "pred") <= {0, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}


# ---- layouts whose module names cityseg's ports already share --------------------------------------------
def _wrapped(name: str, state: dict) -> dict:
    """How each project saves its Cityscapes model: HRNet-style ``model.`` prefix beside the loss's
    class-weight buffer (DDRNet, PIDNet), mmseg's ``{"meta", "state_dict"}`` with the unused
    ``conv_seg`` (NVlabs SegFormer), a plain state_dict (CoinCheung's BiSeNetV2)."""
    if name.startswith(("ddrnet", "pidnet")):
        return {**{f"model.{k}": v for k, v in state.items()}, "sem_loss.criterion.weight": torch.ones(19)}
    if name.startswith("segformer"):
        return {
            "meta": {"CLASSES": []},
            "state_dict": {**state, "decode_head.conv_seg.weight": torch.zeros(19, 256, 1, 1), "decode_head.conv_seg.bias": torch.zeros(19)},
        }
    return state


SHARED = {"ddrnet23_slim": (0.485, 0.229), "pidnet_s": (0.485, 0.229), "bisenetv2": (0.3257, 0.2112), "segformer_b0": (0.485, 0.229)}


@pytest.mark.parametrize("name", list(SHARED))
def test_official_cityscapes_files_of_the_ported_models(tmp_path, name):
    """The ports use the official module names (tests/test_realtime_models.py, test_modern_models.py
    hold them to the official layouts), so the file's own tensors, unwrapped, are the model's."""
    torch.manual_seed(0)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in build_model(name, num_classes=19).state_dict().items()}
    ckpt = import_official(_save(tmp_path, _wrapped(name, state)), name)
    assert ckpt.label_mode == "trainIds" and ckpt.input_size == [1024, 2048] and ckpt.channel_order == "RGB"
    assert (ckpt.mean[0], ckpt.std[0]) == SHARED[name]
    assert all(torch.equal(ckpt.model[k], v) for k, v in state.items())


def test_an_imagenet_backbone_file_is_pointed_to_encoder_weights(tmp_path, capsys):
    state = {k: v for k, v in build_model("ddrnet23_slim", num_classes=19).state_dict().items() if not k.startswith(("final_layer", "seghead_extra", "spp"))}
    state["linear.weight"] = torch.zeros(1000, 1024)
    err = _one_line_error(capsys, ["import", str(_save(tmp_path, state)), "--model", "ddrnet23_slim", "--out", str(tmp_path / "c.pt")])
    assert "no final_layer.conv2.weight in the file" in err and "encoder_weights" in err


def hf_segformer_b0(classes: int = 19) -> dict[str, torch.Tensor]:
    """``SegformerForSemanticSegmentation`` (Hugging Face transformers, ``modeling_segformer.py``) at
    B0: names and shapes written out from its modules, random values."""
    g = torch.Generator().manual_seed(3)
    dims, srs, shapes = (32, 64, 160, 256), (8, 4, 2, 1), {}
    e = "segformer.encoder"
    for i, d in enumerate(dims):
        cin, k = (3, 7) if i == 0 else (dims[i - 1], 3)
        shapes |= {f"{e}.patch_embeddings.{i}.proj.weight": (d, cin, k, k), f"{e}.patch_embeddings.{i}.proj.bias": (d,)}
        shapes |= {f"{e}.patch_embeddings.{i}.layer_norm.{p}": (d,) for p in ("weight", "bias")}
        for j in range(2):
            b = f"{e}.block.{i}.{j}"
            for norm in ("layer_norm_1", "layer_norm_2"):
                shapes |= {f"{b}.{norm}.{p}": (d,) for p in ("weight", "bias")}
            for lin in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
                shapes |= {f"{b}.{lin}.weight": (d, d), f"{b}.{lin}.bias": (d,)}
            if srs[i] > 1:
                shapes |= {f"{b}.attention.self.sr.weight": (d, d, srs[i], srs[i]), f"{b}.attention.self.sr.bias": (d,)}
                shapes |= {f"{b}.attention.self.layer_norm.{p}": (d,) for p in ("weight", "bias")}
            shapes |= {
                f"{b}.mlp.dense1.weight": (4 * d, d),
                f"{b}.mlp.dense1.bias": (4 * d,),
                f"{b}.mlp.dense2.weight": (d, 4 * d),
                f"{b}.mlp.dense2.bias": (d,),
            }
            shapes |= {f"{b}.mlp.dwconv.dwconv.weight": (4 * d, 1, 3, 3), f"{b}.mlp.dwconv.dwconv.bias": (4 * d,)}
        shapes |= {f"{e}.layer_norm.{i}.{p}": (d,) for p in ("weight", "bias")}
        shapes |= {f"decode_head.linear_c.{i}.proj.weight": (256, d), f"decode_head.linear_c.{i}.proj.bias": (256,)}
    shapes |= {
        "decode_head.linear_fuse.weight": (256, 1024, 1, 1),
        "decode_head.classifier.weight": (classes, 256, 1, 1),
        "decode_head.classifier.bias": (classes,),
    }
    shapes |= {f"decode_head.batch_norm.{p}": (256,) for p in ("weight", "bias", "running_mean", "running_var")}
    state = {k: torch.randn(v, generator=g) for k, v in shapes.items()}
    state["decode_head.batch_norm.num_batches_tracked"] = torch.tensor(5)
    return state


def test_hugging_face_segformer_layout(tmp_path):
    official = hf_segformer_b0()
    ckpt = import_official(_save(tmp_path, official), "segformer_b0")
    net = ckpt.model
    assert torch.equal(net["decode_head.linear_c4.proj.weight"], official["decode_head.linear_c.3.proj.weight"])
    assert torch.equal(net["decode_head.linear_fuse.bn.running_var"], official["decode_head.batch_norm.running_var"])
    assert torch.equal(net["decode_head.linear_pred.bias"], official["decode_head.classifier.bias"])
    kv = net["backbone.block2.1.attn.kv.weight"]  # the official MiT keeps key and value in one Linear
    assert torch.equal(
        kv, torch.cat([official["segformer.encoder.block.1.1.attention.self.key.weight"], official["segformer.encoder.block.1.1.attention.self.value.weight"]])
    )
    used = {k for k in official if ".key." not in k and ".value." not in k and not k.endswith("num_batches_tracked")}
    assert sum(v.numel() for k, v in official.items() if k in used or ".key." in k or ".value." in k) == sum(
        v.numel() for k, v in net.items() if not k.endswith("num_batches_tracked")
    )
