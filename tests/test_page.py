"""The viewer page in headless Chromium: the newest frame is on screen, controls work."""

from __future__ import annotations

import re
import sys
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import DRIVERS, ROOT, need_tool, wait_until

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


TILES = """
return [...document.querySelectorAll('.tile')].map(tile => {
  const img = tile.querySelector('img');
  const box = img.getBoundingClientRect();
  return {name: tile.dataset.name, live: tile.dataset.mode === 'stream',
          loaded: img.complete && img.naturalWidth > 0, src: img.getAttribute('src') || '',
          left: box.left, top: box.top, right: box.right, bottom: box.bottom,
          width: box.width, height: box.height};
});
"""
LIVE_TILES = "return [...document.querySelectorAll('.tile[data-mode=stream] img')]" \
    ".filter(i => i.complete && i.naturalWidth).length"
PAGE = "return [innerWidth, innerHeight, document.documentElement.scrollWidth, " \
    "document.documentElement.scrollHeight, devicePixelRatio]"


def viewport(browser, width: int, height: int) -> None:
    """The page's viewport exactly width x height CSS pixels (a window's size includes
    the browser's own bars), at one device pixel per CSS pixel."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


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
    browser.save_screenshot(str(tmp_path / "viewer.png"))
    for width in (390, 320):  # phones: the controls fit the width on one line
        browser.set_window_size(width, 844)
        assert browser.execute_script(ONE_LINE), f"the controls wrap at {width} px"
    browser.save_screenshot(str(tmp_path / "viewer-phone.png"))


def test_page_shows_when_the_camera_is_unavailable(browser, servers, tmp_path):
    server = servers("gevent", {"CAMERA": "faulty", "FAULT": "open"})
    browser.get(server.url + "/")
    banner = browser.find_element("id", "banner")
    wait_until(banner.is_displayed, timeout=10, message="the banner")
    assert banner.text == "Camera unavailable: no camera at /dev/video9"
    assert browser.find_element("id", "state").text == "unavailable"
    browser.save_screenshot(str(tmp_path / "viewer-down.png"))


def test_grid_shows_every_camera_with_at_most_four_streams_open(browser, servers, tmp_path):
    colours = ["#ff0000", "#00ff00", "#0000ff", "#ffff00", "#ff00ff", "#00ffff"]
    path = tmp_path / "cameras.toml"
    path.write_text("".join(f'[cameras.cam{i}]\ndriver = "solid"\nfps = 5\ncolor = "{c}"\n'
                            for i, c in enumerate(colours)))
    server = servers("gevent", {"CAMERAS_FILE": str(path)})
    viewport(browser, 1280, 800)
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
    # Six fit a desktop screen, three by two, each tile at least 320 wide.
    assert browser.execute_script(PAGE)[:4] == [1280, 800, 1280, 800]
    boxes = browser.execute_script(TILES)
    assert all(0 <= b["left"] and b["right"] <= 1280 and 0 <= b["top"] and b["bottom"] <= 800
               and b["width"] >= 320 for b in boxes), boxes
    assert len({round(b["top"]) for b in boxes}) == 2
    browser.save_screenshot(str(tmp_path / "grid.png"))
    tiles[5].click()
    wait_until(lambda: browser.current_url.endswith("/camera/cam5/"), timeout=5)
    assert browser.find_element("id", "stream").get_attribute("src").startswith(
        server.url + "/camera/cam5/video_feed")
    # Six do not fit a phone: one column of tiles the phone's width, scrolling.
    viewport(browser, 390, 844)
    browser.get(server.url + "/")
    wait_until(lambda: browser.execute_script(LIVE_TILES), timeout=10, message="live tiles")
    assert browser.execute_script("return document.querySelector('.grid-page.fit')") is None
    assert browser.execute_script("return document.documentElement.scrollHeight") > 844
    widths = [t.rect["width"] for t in browser.find_elements("css selector", ".tile")]
    assert all(w == widths[0] and 320 <= w <= 390 for w in widths), widths
    browser.save_screenshot(str(tmp_path / "grid-phone.png"))


LADDER = (160, 320, 480, 640, 960, 1280, 1920)
TRY_IT = {"front": (1280, 720), "door": (480, 640), "garden": (320, 240)}  # their frames


def wanted_width(box: dict, dpr: float) -> int | None:
    """The ?width= a tile should ask for: the smallest ladder width covering its picture
    as shown (letterboxed), in device pixels; None (its own frames) from there up."""
    own_width, own_height = TRY_IT[box["name"]]
    shown = min(box["width"], box["height"] * own_width / own_height) * dpr
    step = next((w for w in LADDER if w >= shown), None)
    return None if step is None or step >= own_width else step


def asked_width(src: str) -> int | None:
    query = parse_qs(urlsplit(src).query)
    assert query["fps"] == ["5"], src
    return int(query["width"][0]) if "width" in query else None


def grid_settled(browser, expected: dict | None = None):
    """The tiles, once each of the three is live with a picture and asks for its size."""
    boxes = browser.execute_script(TILES)
    if not all(b["live"] and b["loaded"] for b in boxes):
        return None
    dpr = browser.execute_script(PAGE)[4]
    asked = {b["name"]: asked_width(b["src"]) for b in boxes}
    wanted = expected or {b["name"]: wanted_width(b, dpr) for b in boxes}
    return boxes if asked == wanted else None


@pytest.mark.parametrize("width,height,expected", [
    (1280, 800, {"front": 640, "door": 320, "garden": None}),  # two by two
    (1920, 1080, {"front": 960, "door": None, "garden": None}),  # door: 480 is its own
    (390, 844, {"front": 480, "door": 320, "garden": None}),  # a phone: one above the other
])
def test_the_grid_fills_the_window_and_each_tile_asks_for_its_size(
        browser, servers, tmp_path, width, height, expected):
    server = servers("gevent", {"CAMERAS_FILE": str(ROOT / "examples" / "cameras.toml")})
    for name in TRY_IT:  # the cameras' sizes are in /status before the page asks
        assert server.get(f"/camera/{name}/snapshot.jpg")[0] == 200
    viewport(browser, width, height)
    browser.get(server.url + "/")
    boxes = wait_until(lambda: grid_settled(browser), timeout=15,
                       message="three live tiles asking for their sizes")
    browser.save_screenshot(str(tmp_path / f"grid-{width}x{height}.png"))
    assert {b["name"]: asked_width(b["src"]) for b in boxes} == expected
    assert browser.execute_script(PAGE)[:4] == [width, height, width, height]  # no scrolling
    for b in boxes:
        assert 0 <= b["left"] < b["right"] <= width and 0 <= b["top"] < b["bottom"] <= height
    # Letterboxed, not cropped: each picture's own aspect inside its tile.
    fits = browser.execute_script(
        "return [...document.querySelectorAll('.tile img')].map(i => getComputedStyle(i)"
        ".objectFit)")
    assert fits == ["contain"] * 3
    assert sum(b["width"] * b["height"] for b in boxes) > 0.6 * width * height  # it fills
    assert server.status()["viewers"] == 3


def test_the_grid_asks_again_when_a_tile_outgrows_its_size_not_for_a_few_pixels(
        browser, servers):
    server = servers("gevent", {"CAMERAS_FILE": str(ROOT / "examples" / "cameras.toml")})
    for name in TRY_IT:
        assert server.get(f"/camera/{name}/snapshot.jpg")[0] == 200
    viewport(browser, 1280, 800)
    browser.get(server.url + "/")
    wait_until(lambda: grid_settled(browser, {"front": 640, "door": 320, "garden": None}),
               timeout=15, message="the grid at 1280x800")
    viewport(browser, 1310, 800)  # the front tile is 644 wide: 640 is too small now
    boxes = wait_until(lambda: grid_settled(browser, {"front": 960, "door": 320,
                                                      "garden": None}),
                       timeout=10, message="960 wide for the front camera")
    sources = [b["src"] for b in boxes]
    viewport(browser, 1290, 800)  # 634 wide: 640 would do, but not for 10 pixels
    time.sleep(1.0)  # more than grid.js's SETTLE: it has chosen again by now
    assert [b["src"] for b in browser.execute_script(TILES)] == sources
    assert server.status()["viewers"] == 3
    hide = "Object.defineProperty(document, 'hidden', {value: true, configurable: true});" \
           "document.dispatchEvent(new Event('visibilitychange'));"
    browser.execute_script(hide)  # a hidden tab holds no stream
    wait_until(lambda: server.status()["viewers"] == 0, timeout=5, message="streams closed")


def test_the_grid_scripts_ladder_is_the_servers():
    from stream import variants

    script = (ROOT / "static" / "grid.js").read_text()
    ladder = re.search(r"const LADDER = \[([\d, ]+)\]", script)
    assert ladder and tuple(map(int, ladder[1].split(","))) == variants.WIDTHS == LADDER


WIDE, TV, PORTRAIT = 4 / 3, 16 / 9, 3 / 4
COLUMNS = [  # (aspects, width, height): columns, None when the grid scrolls
    (([WIDE] * 2, 1280, 800), 2),  # two side by side
    (([TV] * 2, 1920, 1080), 2),
    (([TV] * 2, 1280, 800), 1),  # one above the other: 691 wide, not 629
    (([TV] * 3, 1280, 800), 2), (([TV] * 4, 1920, 1080), 2),  # two by two
    (([TV, PORTRAIT, WIDE], 1280, 800), 2),
    (([TV] * 3, 390, 844), 1),  # a phone: one column
    (([TV] * 9, 1280, 800), 3),  # 416x256 tiles still fit
    (([TV] * 16, 1280, 800), None), (([WIDE] * 6, 390, 844), None),  # these scroll
    (([TV] * 2, 300, 400), 1),  # a window narrower than a tile: one column
]
WIDTHS = [  # (shown, own, current): the ?width= asked for, 0 for the camera's own frames
    ((628, 1280, None), 640), ((641, 1280, None), 960), ((100, 1280, None), 160),
    ((517, 320, None), 0),  # 640 is more than the camera's own 320
    ((2500, 4000, None), 0),  # past the ladder's top
    ((633, 1280, 960), 960),  # a few pixels under 640: the stream stays as it is
    ((570, 1280, 960), 640),  # far under: smaller
    ((700, 1280, 640), 960),  # too small: larger at once
    ((300, 480, 0), 0),  # 320 would cover it, but only just
    ((250, 480, 0), 320),  # its own frames are far too big now
]


def test_the_grid_takes_the_columns_showing_pictures_largest_and_the_width_covering_them(
        browser, servers):
    server = servers("gevent", {"CAMERAS_FILE": str(ROOT / "examples" / "cameras.toml")})
    browser.get(server.url + "/")
    call = "return window[arguments[0]](...arguments[1])"
    for (aspects, width, height), columns in COLUMNS:
        assert browser.execute_script(call, "fitColumns", [aspects, width, height, 8]) == \
            columns, (len(aspects), width, height)
    for args, width in WIDTHS:
        assert browser.execute_script(call, "chooseWidth", list(args)) == width, args


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


def block_status(browser, blocked: bool = True) -> None:
    """From now on the page's /status requests fail: what it shows next came from the
    event feed."""
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/status*"] if blocked else []})


def test_the_grid_and_the_viewer_show_recording_badges_live_from_the_event_feed(
        browser, servers, tmp_path):
    path = tmp_path / "cameras.toml"
    path.write_text("".join(f'[cameras.{name}]\ndriver = "solid"\nfps = 5\ncolor = "{c}"\n'
                            for name, c in (("door", "#ff0000"), ("garden", "#00ff00"))))
    server = servers("gevent", {"CAMERAS_FILE": str(path),
                                "RECORDINGS_DIR": str(tmp_path / "recordings")})
    viewport(browser, 1280, 800)
    browser.get(server.url + "/")
    tiles = {t.get_attribute("data-name"): t for t in browser.find_elements("css selector",
                                                                           ".tile")}
    wait_until(lambda: all(t.find_element("css selector", ".state").text == "live"
                           for t in tiles.values()), timeout=15, message="both tiles live")
    badge = lambda name: tiles[name].find_element("css selector", ".badge-rec")  # noqa: E731
    assert not badge("door").is_displayed() and not badge("garden").is_displayed()
    block_status(browser)
    assert server.get("/camera/garden/record?seconds=1.5", method="POST")[0] == 202
    wait_until(lambda: badge("garden").is_displayed(), timeout=5, message="garden's badge")
    assert not badge("door").is_displayed()
    browser.save_screenshot(str(tmp_path / "grid-recording.png"))
    wait_until(lambda: not badge("garden").is_displayed(), timeout=10,
               message="garden's badge gone with its clip")
    assert sum(c["viewers"] for c in server.status()["cameras"].values()) == 2  # feed: none

    block_status(browser, False)
    browser.get(server.url + "/camera/door/")
    find = lambda element_id: browser.find_element("id", element_id)  # noqa: E731
    wait_until(lambda: find("state").text == "live", timeout=10, message="live")
    assert not find("detect").is_displayed()  # no motion detection set up: no switch
    block_status(browser)
    assert server.get("/camera/door/record?seconds=1.5", method="POST")[0] == 202
    wait_until(lambda: find("rec").is_displayed() and "manual" in find("rec").text,
               timeout=5, message="the recording badge from the feed")
    browser.save_screenshot(str(tmp_path / "viewer-recording.png"))
    wait_until(lambda: not find("rec").is_displayed(), timeout=10, message="the clip ended")
    block_status(browser, False)
