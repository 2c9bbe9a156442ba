"""The page in a real browser: Debian's chromium driven by selenium (system chromedriver, no
browser download). Loads the page, uploads an X-ray, checks that the boxes, class bars,
threshold and decision are shown, and saves a screenshot to reports/serving/.
Skips, with the reason, when chromium, chromedriver or selenium is missing."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time

import pytest
from PIL import Image

from conftest import PROJECT_ROOT

SCREENSHOT_DIR = PROJECT_ROOT / "reports" / "serving"
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900")


def _find(*names):
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (test extra)")
    chromium = _find("chromium", "chromium-browser")
    driver_path = _find("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium/chromedriver installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="fracture-chromium-")
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(served_run):
    import urllib.request

    import uvicorn

    from fracture.serving.app import create_app
    from fracture.serving.settings import ServeSettings

    # threshold 0: every image is "fracture", so the page always has a box to draw
    settings = ServeSettings(threshold=0.0)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(served_run, settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2):
                break
        except Exception:  # noqa: BLE001 - not up or not ready yet
            time.sleep(0.1)
    else:
        pytest.fail("the server never became ready")
    yield url
    server.should_exit = True
    thread.join(10)


def test_page_shows_boxes_classes_threshold_and_decision(browser, server, served_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    source = sorted((served_run.run_dir.parent / "synthetic" / "valid" / "images").glob("*.jpg"))[0]
    image = tmp_path / "xray.png"
    Image.open(source).convert("L").resize((300, 360)).save(image)

    browser.get(server + "/")
    assert "research tool, not a medical device" in browser.find_element(By.ID, "disclaimer").text.lower()
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "classes" in d.find_element(By.ID, "model-line").text)
    browser.find_element(By.ID, "file").send_keys(str(image))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#boxes .box"))

    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li.class-bar")
    assert sorted(b.get_attribute("data-cls") for b in bars) == sorted(served_run.classes.class_names)
    boxes = browser.find_elements(By.CSS_SELECTOR, "#boxes .box")
    assert len(boxes) == 1 and boxes[0].size["width"] > 0 and boxes[0].size["height"] > 0
    assert "fracture" in boxes[0].text
    assert browser.find_element(By.ID, "decision").text.startswith("Fracture suspected")
    assert "threshold 0.000" in browser.find_element(By.ID, "threshold").text
    assert browser.find_element(By.ID, "image").get_property("naturalWidth") == 300

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "browser_test_page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_page_shows_a_bad_upload_error(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(browser, 30).until(lambda d: "415" in d.find_element(By.ID, "status").text)
    assert "not an image" in browser.find_element(By.ID, "status").text
