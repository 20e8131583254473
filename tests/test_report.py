"""``cityseg report``: the data behind the page (per-image scores are the evaluator's, worst first), the
page's files, rewrites, the CLI, and bad run folders as one error line."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

import references
from cityseg.cli import main
from cityseg.data import layout
from cityseg.eval.evaluate import score_checkpoint
from cityseg.eval.metrics import CityscapesEvaluator
from cityseg.tools.report import FrameCollector, write_report
from cityseg.tools.report.frames import FrameScore, worst_first
from conftest import DegradedOracle, write_run


def _read(page):
    return json.loads(page.with_suffix(".json").read_text())


def test_per_image_scores_are_the_evaluators(synth_small):
    from cityseg.data.layout import require_samples
    from cityseg.data.readers import read_frame

    oracle = DegradedOracle(synth_small)
    frames = FrameCollector()
    full, _, _ = score_checkpoint(synth_small, "val", None, predictor=oracle, on_frame=frames, workers=1)
    alone, _, _ = score_checkpoint(synth_small, "val", None, predictor=oracle, workers=1)
    assert full.results() == alone.results()  # the hook changes nothing
    total = CityscapesEvaluator()
    for sample, frame in zip(require_samples(synth_small, "val"), frames.frames):
        image, gt, inst = read_frame(sample)
        one = CityscapesEvaluator()
        one.add(oracle.predict(image), gt, inst)
        total.merge(one)
        res = one.results()
        assert frame.stem == sample.stem and frame.miou == res["mIoU"] and frame.pixel_acc == res["pixel_acc"]
        assert frame.class_iou == {k: v["iou"] for k, v in res["per_class"].items() if v["iou"] is not None}
    assert np.array_equal(total.mat, full.mat) and total.results() == full.results()


def test_page_data_matches_the_evaluation_and_is_worst_first(oracle_report, synth_small):
    page, run = oracle_report
    data = _read(page)
    full, _, _ = score_checkpoint(synth_small, "val", None, predictor=DegradedOracle(synth_small), workers=1)
    expected = full.results()
    assert {k: data["scores"][k] for k in expected} == json.loads(json.dumps(expected))
    # the confusion matrix, void column included, counted independently from the PNGs and the predictions
    oracle = DegradedOracle(synth_small)
    pairs = [(references.decode(s.label), oracle.predict(references.decode(s.image))) for s in layout.require_samples(synth_small, "val")]
    want = references.confusion_with_void(pairs)
    assert want[:, 19].sum() > 0 and data["confusion"]["cols"][19] == "void"  # void predictions on evaluated pixels exist
    assert np.array_equal(np.array(data["confusion"]["counts"]), want)
    mious = [f["miou"] for f in data["frames"]]
    assert len(mious) == 4 and mious == sorted(mious) and len(set(mious)) == 4
    assert [f["rank"] for f in data["frames"]] == [1, 2, 3, 4]
    assert data["run"]["best_epoch"] == 3 and data["run"]["epochs"] == 4 and data["run"]["model"] == "bisenetv2"
    assert data["run"]["dataset"] == str(synth_small)  # from the run's environment.json
    for f in data["frames"]:
        assert set(f["images"]) == {"input", "gt", "pred", "error"}
        assert all((page.parent / p).is_file() for p in f["images"].values())
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # nothing is fetched
    assert "<svg" in html and data["config"].splitlines()[0] in html


def test_worst_first_puts_frames_without_scores_last():
    from cityseg.data.layout import Sample

    def frame(stem, miou):
        return FrameScore(Sample(stem, "x", image=None), miou, None)

    order = worst_first([frame("c", None), frame("b", 0.5), frame("a", 0.5), frame("d", 0.1)])
    assert [f.stem for f in order] == ["d", "a", "b", "c"]


def test_rewrite_replaces_the_page_whole(oracle_report, tmp_path, synth_small):
    _, run = oracle_report
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report"))
    oracle = DegradedOracle(synth_small)
    page = write_report(copy, predictor=oracle, n=4, log=lambda *_: None)
    assert len(list((page.parent / "index_files").iterdir())) == 16
    page = write_report(copy, predictor=oracle, n=2, log=lambda *_: None)
    data = _read(page)
    assert [f["rank"] for f in data["frames"]] == [1, 2]
    pictures = {p for f in data["frames"] for p in f["images"].values()}
    assert {f"index_files/{p.name}" for p in (page.parent / "index_files").iterdir()} == pictures  # older pictures removed
    assert not [p for p in page.parent.rglob("*") if p.name.endswith(".tmp")]


def test_cli_report_with_the_runs_own_checkpoint(tmp_path, synth_small, capsys):
    run = write_run(tmp_path / "run", synth_small)
    out = tmp_path / "pages" / "r.html"
    assert main(["report", str(run), "--out", str(out), "--n", "2"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["scores"]["n_images"] == 4 and len(data["frames"]) == 2 and (tmp_path / "pages" / "r_files").is_dir()
    # cityseg evaluate --report writes the same page from its own evaluation
    assert (
        main(
            ["evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(synth_small), "--json", str(tmp_path / "s.json"), "--report", str(tmp_path / "ev")]
        )
        == 0
    )
    again = json.loads((tmp_path / "ev" / "index.json").read_text())
    scores = json.loads((tmp_path / "s.json").read_text())
    assert {k: again["scores"][k] for k in scores} == scores
    assert math.isclose(again["scores"]["mIoU"], data["scores"]["mIoU"], abs_tol=1e-12)


@pytest.mark.parametrize("case", ["no_metrics", "empty_metrics", "no_checkpoint", "missing_frame", "no_run_folder", "bad_n", "report_without_checkpoint"])
def test_bad_run_is_one_error_line(case, tmp_path, synth_copy, capsys):
    from cityseg.data.layout import require_samples

    run = write_run(tmp_path / "run", synth_copy)
    args = ["report", str(run)]
    if case == "no_metrics":
        (run / "metrics.csv").unlink()
    elif case == "empty_metrics":
        (run / "metrics.csv").write_text("epoch,train_loss\n")
    elif case == "no_checkpoint":
        (run / "best.pt").unlink()
    elif case == "missing_frame":
        require_samples(synth_copy, "val")[1].label.unlink()
    elif case == "no_run_folder":
        args = ["report", str(tmp_path / "nothing")]
    elif case == "bad_n":
        args += ["--n", "0"]
    else:
        args = ["evaluate", "--pred-dir", str(tmp_path), "--data", str(synth_copy), "--report", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    expected = {"no_metrics": "metrics.csv", "empty_metrics": "no epoch", "no_checkpoint": "best.pt", "missing_frame": "_leftImg8bit.png", "bad_n": "--n"}
    assert expected.get(case, "error") in err
    assert not (run / "report" / "index.html").exists()
