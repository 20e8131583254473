"""The report page in a real browser (headless Chromium from the system): it loads from disk with no
console error, shows the JSON's numbers, orders and filters the gallery, and its controls work. Writes
full-page screenshots at desktop and phone widths to ``test-artifacts/`` (git-ignored)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import browser
from cityseg.tools.report.page import SCORE_TILES, pct

pytestmark = pytest.mark.browser
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
    for key, _, _ in SCORE_TILES:
        assert d.find_element("css selector", f".tile .v[data-key='{key}']").text == pct(data["scores"][key]), key
    assert f"epoch {data['run']['best_epoch']}" in d.find_element("css selector", "td[data-fact='best epoch']").text
    stems = [c.get_attribute("data-stem") for c in _cards(d)]
    assert stems == [f["stem"] for f in data["frames"]] and len(stems) == 4
    mious = [float(c.get_attribute("data-miou")) for c in _cards(d)]
    assert mious == sorted(mious)


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
    assert shown[0].find_element("css selector", ".class-score").text == f"{name} {pct(expected[0]['class_iou'][name])}"
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
