"""The web map page in Debian's headless Chromium against the live server.

Every request that does not go to 127.0.0.1 is aborted, so map tiles never load and the
page must work on its grey background. Each test runs at a phone and a desktop size and
saves a screenshot of each step in test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import MONACO_START, REPOSITORY, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
expect = sync_api.expect

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = {
    "phone": {
        "viewport": {"width": 375, "height": 812},
        "device_scale_factor": 2,
        "is_mobile": True,
        "has_touch": True,
    },
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}
SCREENSHOTS = REPOSITORY / "test-artifacts" / "screenshots"
GPX_NS = {"gpx": "http://www.topografix.com/GPX/1/1"}
# The default PERFECT10K_TILE_URL host: the only host the page may try besides the server.
TILE_HOST = "tile.openstreetmap.org"
# Starts in Andorra that no other test requests, more than 15 km from Andorra la Vella and
# from each other, so the warming sensor's 6.4 km radius around earlier starts leaves at
# least their centre cells unbuilt and each viewport meets a new area.
COLD_STARTS = {"desktop": (42.5440, 1.7330), "phone": (42.6180, 1.5390)}
# Somewhere in Paris: valid coordinates outside every imported region.
OUTSIDE_REGIONS = (48.8566, 2.3522)
COLD_TIMEOUT_MS = 150_000


@dataclass
class PageUnderTest:
    """A page at one viewport size and what it tried to load besides the server."""

    page: sync_api.Page
    name: str
    base_url: str
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    api_requests: list[str] = field(default_factory=list)

    def shot(self, step: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{self.name}-{step}.png")

    def open(self) -> None:
        self.page.goto(self.base_url + "/")
        expect(self.page.locator("body")).to_have_attribute("data-ready", "true")

    def set_start(self, lat: float, lon: float) -> None:
        self.page.fill("#start-input", f"{lat}, {lon}")
        self.page.click("#start-set")
        expect(self.page.locator("#start-status")).to_contain_text("Start set at")

    def assert_offline_clean(self) -> None:
        """Check that only tiles were blocked and the page raised no script error."""
        hosts = {urlsplit(url).hostname for url in self.blocked}
        assert hosts <= {TILE_HOST}, f"page tried hosts other than the server: {hosts}"
        assert not self.errors, f"page errors: {self.errors}"


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(params=sorted(VIEWPORTS))
def web(request, browser, server: LiveServer) -> Iterator[PageUnderTest]:
    """A fresh browser context at the phone or desktop size, offline but for the server."""
    name = request.param
    context = browser.new_context(
        **VIEWPORTS[name],
        geolocation={"latitude": MONACO_START[0], "longitude": MONACO_START[1]},
        permissions=["geolocation"],
        accept_downloads=True,
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    under_test = PageUnderTest(page, name, server.base_url)

    def only_loopback(route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            if "/api/" in url:
                under_test.api_requests.append(f"{route.request.method} {urlsplit(url).path}")
            route.continue_()
        else:
            under_test.blocked.append(url)
            route.abort()

    page.route("**/*", only_loopback)
    page.on("pageerror", lambda error: under_test.errors.append(str(error)))

    def console_error(message) -> None:
        # Failed loads are checked through `blocked` and `failed_response` instead: aborted
        # tiles and the API's 4xx responses that the page shows as messages also log here.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            under_test.errors.append(message.text)

    def failed_response(response) -> None:
        if response.status >= 400 and "/api/" not in response.url:
            under_test.errors.append(f"{response.status} for {response.url}")

    page.on("console", console_error)
    page.on("response", failed_response)
    yield under_test
    # The page as the test left it: after a failure, this shows where it stopped.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}-last-{request.node.originalname}.png")
    context.close()


def gpx_points(path: Path) -> list[tuple[str, str]]:
    root = ET.parse(path).getroot()
    return [(p.attrib["lat"], p.attrib["lon"]) for p in root.findall(".//gpx:trkpt", GPX_NS)]


def open_layer_control(web: PageUnderTest) -> None:
    """Expand Leaflet's layer control, which is folded to an icon on phones.

    The pointer moves onto the control first: Leaflet 1.9 ignores a click that arrives in
    the same moment as the pointer entering a folded control, so a tap does not select a
    layer by accident.
    """
    control = web.page.locator(".leaflet-control-layers")
    control.hover()
    if "leaflet-control-layers-expanded" not in (control.get_attribute("class") or ""):
        web.page.locator(".leaflet-control-layers-toggle").focus()
        web.page.keyboard.press("Enter")
    expect(control).to_have_class(re.compile("leaflet-control-layers-expanded"))


def test_page_works_offline(web: PageUnderTest):
    page = web.page
    web.open()
    expect(page.locator(".leaflet-control-attribution")).to_contain_text(
        "OpenStreetMap contributors"
    )
    expect(page.locator("#map-notes")).to_contain_text("No map tiles")
    expect(page.locator("#steps-output")).to_have_text("10,000 steps ≈ 8,000 m")
    assert any(urlsplit(url).hostname == TILE_HOST for url in web.blocked), (
        "the page did not request tiles from the configured tile URL"
    )
    web.shot("1-open")

    page.click("#locate")
    expect(page.locator("#start-input")).to_have_value(
        f"{MONACO_START[0]:.5f}, {MONACO_START[1]:.5f}"
    )

    page.fill("#start-input", "somewhere nice")
    page.click("#start-set")
    expect(page.locator("#message")).to_contain_text('"lat, lon"')
    page.fill("#start-input", "95, 7.4")
    page.click("#start-set")
    expect(page.locator("#message")).to_contain_text("Latitude 95 is out of range")

    web.set_start(*OUTSIDE_REGIONS)
    page.click("#go")
    expect(page.locator("#message")).to_contain_text("No imported region covers")
    expect(page.locator("#message")).to_be_visible()
    web.shot("2-error")
    web.assert_offline_clean()


def test_loops_alternatives_and_gpx(web: PageUnderTest):
    page = web.page
    web.open()
    web.set_start(*MONACO_START)
    page.fill("#preference", "parks and water, xyzzy")
    page.click("#go")
    result = page.locator("#loop-result")
    expect(result).to_be_visible()
    expect(page.locator("#loop-index")).to_have_text("Loop 1 of 3")
    expect(page.locator("#loop-distance")).to_have_text(re.compile(r"^\d+\.\d\d km$"))
    expect(page.locator("#loop-steps")).to_have_text(re.compile(r"^\d{1,2},\d{3}$"))
    for share in ("green", "water", "quiet"):
        expect(page.locator(f"#loop-shares li[data-share={share}] .value")).to_have_text(
            re.compile(r"^\d+%$")
        )
    expect(page.locator("#loop-preference .chip.matched")).to_contain_text(["parks", "water"])
    expect(page.locator("#loop-preference .chip.ignored")).to_have_text(["xyzzy"])
    expect(page.locator(".leaflet-overlay-pane path")).not_to_have_count(0)
    web.shot("3-loops")

    first_gpx = page.get_attribute("#loop-gpx", "href")
    first_distance = page.text_content("#loop-distance")
    page.click("#loop-next")
    expect(page.locator("#loop-index")).to_have_text("Loop 2 of 3")
    second_gpx = page.get_attribute("#loop-gpx", "href")
    assert second_gpx != first_gpx
    web.shot("4-loop-2")
    page.click("#loop-prev")
    page.click("#loop-prev")
    expect(page.locator("#loop-index")).to_have_text("Loop 3 of 3")
    page.click("#loop-next")
    expect(page.locator("#loop-index")).to_have_text("Loop 1 of 3")
    expect(page.locator("#loop-distance")).to_have_text(first_distance)

    with page.expect_download() as download_info:
        page.click("#loop-gpx")
    points = gpx_points(Path(download_info.value.path()))
    assert len(points) > 10
    assert points[0] == points[-1], "the downloaded loop is not closed"

    # The score overlay: scores are requested once a score layer is switched on.
    open_layer_control(web)
    with page.expect_response(
        lambda response: "/api/overlays" in response.url and "scores=true" in response.url
    ) as overlay_info:
        page.get_by_label("Green score").check()
    overlays = overlay_info.value.json()
    assert overlay_info.value.status == 200
    scores = [f for f in overlays["features"] if f["properties"]["layer"] == "score"]
    areas = [f for f in overlays["features"] if f["properties"]["layer"] == "area"]
    assert scores, "no edge scores in the visible part of Monaco"
    assert areas, "no green space or water in the visible part of Monaco"
    expect(page.locator("#map-notes")).to_contain_text("Green score: low")
    web.shot("5-scores")
    web.assert_offline_clean()


def test_step_by_step_route(web: PageUnderTest):
    page = web.page
    web.open()
    web.set_start(*MONACO_START)
    page.fill("#preference", "quiet streets")
    page.click("#mode-steps")
    expect(page.locator("#go")).to_have_text("Start route")
    page.click("#go")
    expect(page.locator("#route-result")).to_be_visible()
    expect(page.locator(".candidate-icon")).to_have_count(3)
    expect(page.locator("#candidates > li")).to_have_count(3)
    expect(page.locator("#candidates > li .reason")).to_have_count(3)
    expect(page.locator("#candidates > li").first.locator("[data-feature=quiet]")).to_have_text(
        re.compile(r"Quiet \d+%")
    )
    expect(page.locator("#finalize")).to_be_disabled()
    web.shot("6-candidates")

    # First waypoint from a marker's popup, the second from the list. The map zooms to fit
    # the candidates with an animation, and a click during it can miss the marker, so the
    # click is repeated until the popup opens.
    popup = page.locator(".leaflet-popup-content")
    for _ in range(3):
        page.locator(".candidate-icon").first.click()
        try:
            popup.wait_for(state="visible", timeout=2000)
            break
        except sync_api.TimeoutError:
            continue
    expect(popup).to_contain_text("Waypoint 1")
    expect(popup.locator(".reason")).not_to_be_empty()
    page.wait_for_timeout(500)  # lets the popup fade in and the map pan to it before the shot
    web.shot("7-popup")
    popup.get_by_role("button", name="Walk to 1").click()
    expect(page.locator(".waypoint-icon")).to_have_count(1)
    expect(page.locator("#route-distance")).not_to_have_text(re.compile(r"^0\.00 "))
    first_leg = page.text_content("#route-distance")
    expect(page.locator(".candidate-icon")).to_have_count(3)
    web.shot("8-one-waypoint")

    page.locator("#candidates > li .walk-here").nth(1).click()
    expect(page.locator(".waypoint-icon")).to_have_count(2)
    expect(page.locator("#route-distance")).not_to_have_text(first_leg)
    web.shot("9-two-waypoints")

    page.click("#finalize")
    expect(page.locator("#route-gpx")).to_be_visible()
    expect(page.locator("#route-hint")).to_contain_text("Loop closed")
    expect(page.locator(".candidate-icon")).to_have_count(0)
    expect(page.locator("#route-shares li[data-share=green] .value")).to_have_text(
        re.compile(r"^\d+%$")
    )
    web.shot("10-finalized")
    with page.expect_download() as download_info:
        page.click("#route-gpx")
    points = gpx_points(Path(download_info.value.path()))
    assert len(points) > 10
    assert points[0] == points[-1], "the downloaded route is not closed"
    web.assert_offline_clean()


def test_new_area_shows_progress(web: PageUnderTest):
    page = web.page
    web.open()
    web.set_start(*COLD_STARTS[web.name])
    slider = page.locator("#steps")
    slider.focus()
    page.keyboard.press("Home")
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    expect(page.locator("#steps-output")).to_have_text("3,750 steps ≈ 3,000 m")
    expect(page.locator("#map-notes")).to_contain_text("Overlays appear once this area is built")
    page.click("#go")
    # A refusal (503 while Dagster is unreachable, 422) shows a message instead of progress.
    page.wait_for_selector("#progress:not([hidden]), #message:not([hidden])")
    assert page.is_hidden("#message"), page.text_content("#message")
    expect(page.locator("#progress")).to_be_visible()
    expect(page.locator("#progress-text")).to_contain_text("this area for the first time")
    web.shot("11-progress")
    page.wait_for_selector(
        "#loop-result:not([hidden]), #message:not([hidden])", timeout=COLD_TIMEOUT_MS
    )
    assert page.is_hidden("#message"), page.text_content("#message")
    expect(page.locator("#loop-result")).to_be_visible()
    expect(page.locator("#progress")).to_be_hidden()
    expect(page.locator("#loop-index")).to_have_text(re.compile(r"^Loop 1 of \d$"))
    assert any(request.startswith("GET /api/job-status/") for request in web.api_requests)
    # The map moved to the new loop, so the overlays reload from the cells just built.
    expect(page.locator("#map-notes")).not_to_contain_text("Overlays appear once")
    web.shot("12-new-area-loop")
    web.assert_offline_clean()
