"""The page in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium) loads `/` from a running `dlms serve`, generates, sees the canvas change before the
final text, replays it with the slider, compares two models side by side, fills blanks, and
takes a screenshot. CI installs the browser (.ci/run) and must run this test; elsewhere it is
skipped, with how to get the browser, when Chromium is missing."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.serving.live import live_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
HOW = "install Debian's chromium and chromium-driver (sudo apt-get install chromium chromium-driver)"

if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test, but Chromium or its driver is missing: {HOW} in .ci/run",
                    pytrace=False)
    pytest.skip(f"no Chromium here: {HOW} to run the page test", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def page(trained_runs):
    with live_server([f"masked={trained_runs['masked']}", f"ar={trained_runs['ar']}"]) as (url, _):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        try:
            driver.get(url + "/")
            WebDriverWait(driver, 30).until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2)
            yield driver
        finally:
            driver.quit()


def fill(driver, element_id: str, value: str) -> None:
    box = driver.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(value)


def generate(driver, timeout: float = 60) -> str:
    driver.find_element(By.ID, "generate").click()
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return document.body.dataset.state")
                                         in ("done", "error"))
    return driver.execute_script("return document.body.dataset.state")


def canvas_tokens(driver, canvas: str = "canvas") -> list[list[str]]:
    """Each row's token boxes: their text, or '_' for a masked one."""
    return driver.execute_script(f"""
        return [...document.querySelectorAll('#{canvas} .row')].map(row =>
            [...row.querySelectorAll('.tok')].map(t => t.classList.contains('masked') ? '_' : t.textContent));""")


def test_the_page_streams_the_denoising_and_replays_it(page, tmp_path):
    Select(page.find_element(By.ID, "model")).select_by_value("masked")
    fill(page, "prompt", "the cat")
    fill(page, "steps", "6")
    fill(page, "seed", "3")
    assert generate(page) == "done", page.find_element(By.ID, "error").text
    frames = page.execute_script("return window.dlmsFrames")
    redraws = page.execute_script("return window.dlmsCanvasChanges")
    assert len(frames) >= 3 and redraws == len(frames)  # step 0, then a redraw per step
    masked_counts = [sum(t is None for t in f["rows"][0]["tokens"]) for f in frames]
    assert masked_counts[0] > masked_counts[len(frames) // 2] > masked_counts[-1] == 0  # it changed before the end
    texts = [e.text for e in page.find_elements(By.CSS_SELECTOR, "#texts .text")]
    assert texts and texts[0].startswith("the cat")
    assert "tokens/s" in page.find_element(By.ID, "stats").text
    final = canvas_tokens(page)
    assert final and "_" not in final[0]
    slider = page.find_element(By.ID, "slider")
    assert int(slider.get_attribute("max")) == len(frames) - 1
    page.execute_script("const s = document.getElementById('slider'); s.value = 0;"
                        "s.dispatchEvent(new Event('input'))")
    first = canvas_tokens(page)
    assert first[0].count("_") == masked_counts[0]  # the replay shows step 0 again
    shot = tmp_path / "page.png"
    assert page.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_two_models_side_by_side_and_blanks_filled(page):
    page.find_element(By.ID, "compare").click()
    WebDriverWait(page, 10).until(lambda d: d.find_element(By.ID, "model2").is_displayed())
    Select(page.find_element(By.ID, "model")).select_by_value("ar")
    Select(page.find_element(By.ID, "model2")).select_by_value("masked")
    fill(page, "prompt", "the dog")
    assert generate(page) == "done", page.find_element(By.ID, "error").text
    assert canvas_tokens(page, "canvas") and canvas_tokens(page, "canvas2")
    page.find_element(By.ID, "compare").click()
    Select(page.find_element(By.ID, "model")).select_by_value("masked")
    page.find_element(By.ID, "mode-infill").click()
    fill(page, "prompt", "the ___ sat on the ___:2 .")
    assert generate(page) == "done", page.find_element(By.ID, "error").text
    text = page.find_elements(By.CSS_SELECTOR, "#texts .text")[0].text
    assert text.startswith("the") and text.rstrip().endswith(".")


def test_a_bad_request_shows_the_servers_line_and_no_script_error(page):
    page.find_element(By.ID, "mode-continue").click()
    fill(page, "prompt", "the")
    fill(page, "steps", "100000")
    assert generate(page) == "error"
    assert "max_steps" in page.find_element(By.ID, "error").text
    fill(page, "steps", "4")
    assert generate(page) == "done" and page.find_element(By.ID, "error").text == ""
    time.sleep(0.2)
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
    assert errors == []
