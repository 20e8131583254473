"""The report page in a real browser (headless Chromium from the system): it loads from disk with no
console error, shows the JSON's numbers, orders and filters the gallery, and its controls work. Writes
full-page screenshots at desktop and phone widths to ``test-artifacts/`` (git-ignored)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import browser
import references
from cityseg.data import layout
from conftest import DegradedOracle

pytestmark = pytest.mark.browser
#: the page's score tiles, in order
TILE_KEYS = ("mIoU", "iIoU", "mIoU_categories", "iIoU_categories", "pixel_acc", "mIoU_34", "pixel_acc_34")


def percent(v) -> str:
    """A 0..1 score as the page promises to print it (one decimal, a dash for none), written here anew."""
    return "–" if v is None else f"{100 * v:.1f}%"


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def driver():
    reason = browser.missing()
    if reason:
        if os.environ.get("CITYSEG_REQUIRE_BROWSER"):
            pytest.fail(f"browser tests required but cannot run: {reason}")
        pytest.skip(f"browser tests skipped: {reason}")
    d = browser.start()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def page(driver, oracle_report):
    path, _ = oracle_report
    browser.set_width(driver, 1400)
    driver.get(path.as_uri())
    return driver, json.loads(path.with_suffix(".json").read_text())


def _cards(driver):
    return [c for c in driver.find_elements("css selector", ".card") if c.is_displayed()]


def test_page_loads_without_console_errors_and_shows_the_json(page):
    d, data = page
    errors = [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    assert (
        d.execute_script("return Array.from(document.querySelectorAll('main img')).filter(i => i.complete && i.naturalWidth === 0).length") == 0
    )  # no broken picture
    tiles = d.find_elements("css selector", ".tile .v")
    assert [t.get_attribute("data-key") for t in tiles] == list(TILE_KEYS)
    for tile in tiles:
        assert tile.text == percent(data["scores"][tile.get_attribute("data-key")]), tile.get_attribute("data-key")
    assert f"epoch {data['run']['best_epoch']}" in d.find_element("css selector", "td[data-fact='best epoch']").text
    stems = [c.get_attribute("data-stem") for c in _cards(d)]
    assert stems == [f["stem"] for f in data["frames"]] and len(stems) == 4
    mious = [float(c.get_attribute("data-miou")) for c in _cards(d)]
    assert mious == sorted(mious)


def test_class_bars_and_confusion_cells_are_the_evaluators(page, synth_small):
    """Every class bar says the evaluator's IoU (and iIoU) and is as long as it in proportion; every
    confusion cell's pixel count, void column included, is the count made from the PNGs by hand."""
    from cityseg.eval.evaluate import score_checkpoint

    d, _ = page
    oracle = DegradedOracle(synth_small)
    full, _, _ = score_checkpoint(synth_small, "val", None, predictor=oracle, workers=1)
    per_class = json.loads(json.dumps(full.results()))["per_class"]
    bars = d.execute_script(
        "return Array.from(document.querySelectorAll('#classes .bar-row')).map(g => "
        "[g.getAttribute('data-tip'), g.querySelector('rect.bar') ? parseFloat(g.querySelector('rect.bar').getAttribute('width')) : null])"
    )
    assert len(bars) == 19
    names = [tip.split(":")[0] for tip, _ in bars]
    assert sorted(names) == sorted(per_class)
    widest = max(w for _, w in bars if w is not None)
    best = max(v["iou"] for v in per_class.values() if v["iou"] is not None)
    for (tip, w), name in zip(bars, names):
        iou, iiou = per_class[name]["iou"], per_class[name]["iiou"]
        assert tip == f"{name}: IoU {percent(iou)}" + (f", iIoU {percent(iiou)}" if iiou is not None else ""), tip
        if iou is not None and iou > 0.01:
            assert w / widest == pytest.approx(iou / best, abs=2e-3), name
    ious = [per_class[n]["iou"] for n in names]
    assert [v for v in ious if v is not None] == sorted((v for v in ious if v is not None), reverse=True)  # best first
    pairs = [(references.decode(s.label), oracle.predict(references.decode(s.image))) for s in layout.require_samples(synth_small, "val")]
    want = references.confusion_with_void(pairs)
    tips = d.execute_script("return Array.from(document.querySelectorAll('#classes .cell')).map(g => g.getAttribute('data-tip'))")
    assert len(tips) == want.size
    got = np.zeros_like(want)
    rows, cols = {}, {}
    for tip in tips:
        m = re.fullmatch(r"ground truth (.+) → predicted (.+): .* of ([\d,]+) px \(([\d,]+) px\)", tip)
        assert m, tip
        i, j = rows.setdefault(m[1], len(rows)), cols.setdefault(m[2], len(cols))
        got[i, j] = int(m[4].replace(",", ""))
        assert int(m[3].replace(",", "")) == want[i].sum(), tip
    assert list(cols)[-1] == "void" and want[:, -1].sum() > 0
    np.testing.assert_array_equal(got, want)


def test_hover_shows_values_and_click_enlarges(page):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.keys import Keys

    d, _ = page
    point = d.find_element("css selector", "#curves circle.pt")
    ActionChains(d).move_to_element(point).perform()
    tip = d.find_element("id", "tip")
    assert tip.is_displayed() and tip.text == point.get_attribute("data-tip") and "epoch" in tip.text
    cell = d.find_elements("css selector", "#classes .cell")[0]
    ActionChains(d).move_to_element(cell).perform()
    assert "px" in tip.text and "ground truth road" in tip.text
    d.find_elements("css selector", ".card .panels img")[1].click()
    box = d.find_element("id", "lightbox")
    assert box.is_displayed() and "Ground truth" in box.text
    d.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    assert not box.is_displayed()


def test_opacity_slider_changes_the_overlay(page):
    from selenium.webdriver.common.keys import Keys

    d, _ = page
    card = _cards(d)[0]
    slider = card.find_element("css selector", ".slider input")
    top = card.find_element("css selector", ".overlay img.top")
    assert float(top.value_of_css_property("opacity")) == pytest.approx(0.5)
    slider.send_keys(Keys.END)
    assert float(top.value_of_css_property("opacity")) == pytest.approx(1.0)
    slider.send_keys(Keys.HOME)
    assert float(top.value_of_css_property("opacity")) == pytest.approx(0.0)


def test_class_filter_shows_the_frames_where_a_class_is_worst(page):
    from selenium.webdriver.support.ui import Select

    d, data = page
    counts = {}
    for f in data["frames"]:
        for name in f["class_iou"]:
            counts[name] = counts.get(name, 0) + 1
    name = min(counts, key=lambda n: (counts[n], n))  # the rarest class: the filter must hide frames
    select = Select(d.find_element("id", "class-filter"))
    select.select_by_value(name)
    shown = _cards(d)
    expected = sorted((f for f in data["frames"] if name in f["class_iou"]), key=lambda f: (f["class_iou"][name], f["rank"]))
    assert [c.get_attribute("data-stem") for c in shown] == [f["stem"] for f in expected]
    assert shown[0].find_element("css selector", ".class-score").text == f"{name} {percent(expected[0]['class_iou'][name])}"
    select.select_by_value("")
    assert [c.get_attribute("data-stem") for c in _cards(d)] == [f["stem"] for f in data["frames"]]


@pytest.mark.parametrize("width", [1400, 390])
def test_screenshot_and_nothing_overflows(page, width):
    d, _ = page
    browser.set_width(d, width, mobile=width < 600)
    d.refresh()
    overflow = d.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"the page is {overflow} px wider than a {width} px screen"
    shot = browser.screenshot(d, ARTIFACTS / f"report-{width}.png")
    assert shot.stat().st_size > 10_000
    browser.set_width(d, 1400)
