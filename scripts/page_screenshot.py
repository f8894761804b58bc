"""Screenshots of the live page for the docs: `dlms serve` on two runs, driven in headless
Chromium (Debian's chromium and chromium-driver, with Selenium).

    python scripts/page_screenshot.py --checkpoint runs/demo-masked --checkpoint runs/demo-ar \
        --prompt "the chef" --out docs/serve

Writes <out>/page.png (the first run generating, replayed half way: masked tokens resolving in
place, the newest highlighted, shaded by confidence) and <out>/page-compare.png (the two runs side
by side on the same prompt), and prints one JSON line saying what each shows.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="two runs: the first is shown alone too")
    parser.add_argument("--prompt", default="the chef")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", default="docs/serve")
    args = parser.parse_args()
    chromium, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        raise SystemExit("error: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    port = free_port()
    command = [sys.executable, "-m", "dlms.cli", "serve", "--port", str(port)]
    for checkpoint in args.checkpoint:
        command += ["--checkpoint", checkpoint]
    server = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [Path(c.rstrip("/")).name for c in args.checkpoint]
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,900"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            driver.get(url + "/")
            WebDriverWait(driver, 60).until(lambda d: len(Select(d.find_element(By.ID, "model")).options) >= 1)

            def fill(element_id: str, value: str) -> None:
                box = driver.find_element(By.ID, element_id)
                box.clear()
                box.send_keys(value)

            def generate() -> None:
                driver.find_element(By.ID, "generate").click()
                WebDriverWait(driver, 300).until(
                    lambda d: d.execute_script("return document.body.dataset.state") in ("done", "error"))
                error = driver.find_element(By.ID, "error").text
                if error:
                    raise SystemExit(f"error: the page says: {error}")

            Select(driver.find_element(By.ID, "model")).select_by_value(names[0])
            fill("prompt", args.prompt)
            fill("seed", str(args.seed))
            fill("num_samples", "3")
            generate()
            frames = driver.execute_script("return window.dlmsFrames.length")
            middle = frames // 2
            driver.execute_script(f"const s = document.getElementById('slider'); s.value = {middle};"
                                  "s.dispatchEvent(new Event('input'))")
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(out / "page.png"))
            shown = {"page.png": f"{names[0]}, prompt {args.prompt!r}, seed {args.seed}, replayed at frame "
                                 f"{middle} of {frames - 1}"}
            if len(names) > 1:
                fill("num_samples", "1")
                driver.find_element(By.ID, "compare").click()
                Select(driver.find_element(By.ID, "model2")).select_by_value(names[1])
                generate()
                driver.execute_script("window.scrollTo(0, 0)")
                driver.save_screenshot(str(out / "page-compare.png"))
                shown["page-compare.png"] = f"{names[0]} beside {names[1]}, same prompt and seed, finished"
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps({"screenshots": shown, "out": str(out)}))


if __name__ == "__main__":
    main()
