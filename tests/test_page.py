"""The viewer page in headless Chromium: the newest frame is on screen, controls work."""

from __future__ import annotations

import sys
import time

import pytest

from conftest import DRIVERS, need_tool, wait_until

sys.path.insert(0, str(DRIVERS))
from camera_colors import JPEGS, PALETTE  # noqa: E402

PIXEL_JS = """
const img = arguments[0];
if (!img.complete || !img.naturalWidth) return null;
const canvas = document.createElement('canvas');
canvas.width = canvas.height = 4;
const ctx = canvas.getContext('2d');
ctx.drawImage(img, 0, 0, 4, 4);
return Array.from(ctx.getImageData(2, 2, 1, 1).data.slice(0, 3));
"""


ONE_LINE = """
const bar = document.querySelector('.bar');
const tops = [...bar.children].filter(e => e.offsetWidth).map(e => e.getBoundingClientRect());
return bar.scrollWidth <= bar.clientWidth && tops.every(r => r.top === tops[0].top ||
    Math.abs((r.top + r.height / 2) - (tops[0].top + tops[0].height / 2)) < 4);
"""


@pytest.fixture
def browser(tmp_path):
    need_tool("chromium")
    chromedriver = need_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = need_tool("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def shown_colour(browser) -> int | None:
    """Index in PALETTE of the colour the stream <img> shows now."""
    rgb = browser.execute_script(PIXEL_JS, browser.find_element("id", "stream"))
    if rgb is None:
        return None
    distances = [sum(abs(a - b) for a, b in zip(rgb, colour)) for colour in PALETTE]
    best = min(range(len(PALETTE)), key=distances.__getitem__)
    return best if distances[best] < 60 else None


def lag_of_page(browser, server, stream_src: str | None = None) -> list[bool]:
    """For three frames of a 1 fps camera: did the page show each one within 0.5 s of
    its capture (as a tool reading the stream receives it)?"""
    browser.get(server.url + "/")
    if stream_src:
        browser.execute_script("arguments[0].src = arguments[1]",
                               browser.find_element("id", "stream"), stream_src)
    wait_until(lambda: shown_colour(browser) is not None, timeout=10, message="a frame shown")
    results = []
    with server.stream() as tool:
        tool.next_part()  # the newest frame, already out: wait for the next ones
        for _ in range(3):
            part = tool.next_part()
            expected = JPEGS.index(part.body)
            deadline = time.monotonic() + 0.5
            while shown_colour(browser) != expected and time.monotonic() < deadline:
                time.sleep(0.02)
            results.append(shown_colour(browser) == expected)
    return results


def test_chromium_shows_the_newest_frame_of_a_1_fps_camera(browser, servers):
    server = servers("gevent", {"CAMERA": "colors", "COUNTER_FPS": "1"})
    assert lag_of_page(browser, server) == [True, True, True]


def test_without_advance_headers_chromium_is_a_frame_behind(browser, servers):
    """The check above can fail: the same page on the tools' format lags a frame."""
    server = servers("gevent", {"CAMERA": "colors", "COUNTER_FPS": "1"})
    assert lag_of_page(browser, server, "/video_feed?advance_headers=0") == [False] * 3


def test_page_controls_figures_snapshot_embed_and_hidden_stream(browser, servers, tmp_path):
    server = servers("gevent", {"CAMERA": "colors", "COUNTER_FPS": "5"})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get(server.url + "/")
    text = lambda element_id: browser.find_element("id", element_id).text  # noqa: E731
    wait_until(lambda: text("viewers") == "1 viewer" and text("fps") != "– fps", timeout=10,
               message="figures from /status")
    assert 4.0 <= float(text("fps").split()[0]) <= 6.0
    assert text("state") == "live"
    embed = browser.find_element("id", "embed-code").get_attribute("value")
    assert embed == f'<img src="{server.url}/video_feed" alt="Live camera">'

    browser.find_element("id", "snapshot").click()
    jpeg = wait_until(lambda: [p for p in downloads.glob("camera-*.jpg")], timeout=10,
                      message="a downloaded snapshot")[0]
    wait_until(lambda: jpeg.read_bytes()[:2] == b"\xff\xd8", timeout=5)
    assert jpeg.read_bytes() in JPEGS

    hide = "Object.defineProperty(document, 'hidden', {value: %s, configurable: true});" \
           "document.dispatchEvent(new Event('visibilitychange'));"
    browser.execute_script(hide % "true")
    wait_until(lambda: server.status()["viewers"] == 0, timeout=5, message="stream stopped")
    browser.execute_script(hide % "false")
    wait_until(lambda: server.status()["viewers"] == 1, timeout=5, message="stream resumed")
    browser.save_screenshot("/tmp/viewer.png")
    for width in (390, 320):  # phones: the controls fit the width on one line
        browser.set_window_size(width, 844)
        assert browser.execute_script(ONE_LINE), f"the controls wrap at {width} px"
    browser.save_screenshot("/tmp/viewer-phone.png")


def test_page_shows_when_the_camera_is_unavailable(browser, servers):
    server = servers("gevent", {"CAMERA": "faulty", "FAULT": "open"})
    browser.get(server.url + "/")
    banner = browser.find_element("id", "banner")
    wait_until(banner.is_displayed, timeout=10, message="the banner")
    assert banner.text == "Camera unavailable: no camera at /dev/video9"
    assert browser.find_element("id", "state").text == "unavailable"
    browser.save_screenshot("/tmp/viewer-down.png")


def test_grid_shows_every_camera_with_at_most_four_streams_open(browser, servers, tmp_path):
    colours = ["#ff0000", "#00ff00", "#0000ff", "#ffff00", "#ff00ff", "#00ffff"]
    path = tmp_path / "cameras.toml"
    path.write_text("".join(f'[cameras.cam{i}]\ndriver = "solid"\nfps = 5\ncolor = "{c}"\n'
                            for i, c in enumerate(colours)))
    server = servers("gevent", {"CAMERAS_FILE": str(path)})
    browser.get(server.url + "/")
    tiles = browser.find_elements("css selector", ".tile")
    assert [t.get_attribute("data-name") for t in tiles] == [f"cam{i}" for i in range(6)]
    loaded = "return [...document.querySelectorAll('.tile img')].map(i => i.naturalWidth > 0)"
    wait_until(lambda: all(browser.execute_script(loaded)), timeout=15,
               message="every tile shows a picture")
    wait_until(lambda: all(t.find_element("css selector", ".state").text == "live"
                           for t in tiles), timeout=15, message="every tile live")
    for _ in range(10):  # the page never holds more than four streams open
        cameras = server.status()["cameras"]
        assert sum(c["viewers"] for c in cameras.values()) <= 4
        time.sleep(0.2)
    assert sum(c["viewers"] for c in server.status()["cameras"].values()) == 4
    browser.save_screenshot("/tmp/grid.png")
    tiles[5].click()
    wait_until(lambda: browser.current_url.endswith("/camera/cam5/"), timeout=5)
    assert browser.find_element("id", "stream").get_attribute("src").startswith(
        server.url + "/camera/cam5/video_feed")
    browser.set_window_size(390, 844)
    browser.get(server.url + "/")
    browser.save_screenshot("/tmp/grid-phone.png")


def test_page_opened_with_credentials_in_its_url_works(browser, servers, tmp_path):
    server = servers("gevent", {"CAMERA": "colors", "COUNTER_FPS": "5",
                                "BASIC_AUTH_USERNAME": "admin",
                                "BASIC_AUTH_PASSWORD": "pa55word"})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get(f"http://admin:pa55word@127.0.0.1:{server.port}/")
    state = browser.find_element("id", "state")
    wait_until(lambda: state.text == "live", timeout=10, message=f"live, not {state.text!r}")
    browser.find_element("id", "snapshot").click()
    jpeg = wait_until(lambda: list(downloads.glob("camera-*.jpg")), timeout=10,
                      message="a downloaded snapshot")[0]
    wait_until(lambda: jpeg.read_bytes()[:2] == b"\xff\xd8", timeout=5)


def test_page_records_marks_events_and_plays_and_downloads_clips(browser, servers, tmp_path):
    server = servers("gevent", {"CAMERA": "colors", "COUNTER_FPS": "10",
                                "RECORDINGS_DIR": str(tmp_path / "recordings"),
                                "RECORD_PRE_EVENT": "0", "RECORD_POST_EVENT": "4"})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get(server.url + "/")
    find = lambda element_id: browser.find_element("id", element_id)  # noqa: E731
    wait_until(lambda: find("state").text == "live", timeout=10, message="live")
    find("record").click()
    wait_until(lambda: find("rec").is_displayed() and "manual" in find("rec").text,
               timeout=10, message="the recording badge")
    wait_until(lambda: (server.status()["recording"] or {}).get("frames", 0) >= 10, timeout=10,
               message="a second of frames recorded")
    find("record").click()  # now it says Stop
    wait_until(lambda: not find("rec").is_displayed(), timeout=10, message="the clip ended")
    find("event").click()
    wait_until(lambda: "event" in find("rec").text, timeout=10, message="the event badge")
    wait_until(lambda: not find("rec").is_displayed(), timeout=10, message="the event ended")

    browser.find_element("css selector", "#recordings summary").click()  # open the list
    rows = wait_until(lambda: len(r := browser.find_elements("css selector",
                                                            "#recordings-list li")) >= 2 and r,
                      timeout=15, message="two recordings listed")
    assert "event" in rows[0].text and "manual" in rows[1].text  # newest first
    rows[1].find_element("css selector", "button").click()  # Play
    stream = find("stream")
    wait_until(lambda: "/play" in stream.get_attribute("src") and find("playing").is_displayed(),
               timeout=5, message="the clip playing in the page")
    wait_until(lambda: browser.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", stream), timeout=10,
        message="a frame of the clip shown")
    rows[1].find_element("css selector", "a").click()  # Download
    clip = wait_until(lambda: [p for p in downloads.glob("*.mkv")], timeout=10,
                      message="a downloaded clip")[0]
    wait_until(lambda: clip.stat().st_size > 1000, timeout=5)
    find("live").click()
    wait_until(lambda: "/video_feed" in stream.get_attribute("src"), timeout=5)
