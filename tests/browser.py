"""Headless Chromium for the report's browser test and the README screenshot.

Only the system browser is used (Debian ``chromium`` and ``chromium-driver``); nothing downloads a build.
``python tests/browser.py PAGE.html OUT.png [--width 1400] [--height N] [--colors N]`` writes a screenshot.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

CHROMIUM = os.environ.get("CITYSEG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CITYSEG_CHROMEDRIVER", "/usr/bin/chromedriver")
#: the machine's network is closed and the test must not reach out: no background services, no QUIC
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def missing() -> str:
    """Why the browser cannot run here ("" when it can)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"no {path} (apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    return ""


def start(width: int = 1400, height: int = 1000):
    """A headless Chromium with a fresh profile, console messages recorded; ``quit()`` it when done."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cityseg-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    quit_driver = driver.quit

    def quit_and_clean() -> None:
        quit_driver()
        shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver


def set_width(driver, width: int, mobile: bool = False) -> None:
    """Lay the page out as on a screen ``width`` CSS pixels wide (a phone with ``mobile``)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile})


def screenshot(driver, out: Path, height: int | None = None) -> Path:
    """The whole page (or its top ``height`` pixels) as PNG, after every picture has loaded."""
    import base64

    from selenium.webdriver.support.ui import WebDriverWait

    for img in driver.find_elements("css selector", "img[loading=lazy]"):
        driver.execute_script("arguments[0].loading = 'eager'", img)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return Array.from(document.querySelectorAll('main img')).every(i => i.complete)"))
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], height or size["height"]), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=None, help="keep only the top N pixels")
    parser.add_argument("--colors", type=int, default=None, help="reduce the PNG to N colours (a small file for the docs)")
    args = parser.parse_args()
    reason = missing()
    if reason:
        raise SystemExit(f"browser.py: {reason}")
    driver = start(args.width)
    try:
        set_width(driver, args.width, mobile=args.width < 600)
        driver.get(args.page.resolve().as_uri())
        shot = screenshot(driver, args.out, args.height)
        if args.colors:
            from PIL import Image

            with Image.open(shot) as im:
                im.convert("RGB").quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT).save(shot, optimize=True)
        print(shot)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
