"""/docs and /redoc in a real browser (Playwright driving the Chromium Debian packages) with every request
beyond the API refused, as on a machine without internet: both render the API's operations from the
files the package serves. Screenshots go to test-artifacts/."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "service" / "static" / "vendor"
ARTIFACTS = Path(os.environ.get("TRAINSERVE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, ".ci/run installs Debian's chromium for the browser tests"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def offline_page(browser, base_url: str):
    """A page that can reach the API and nothing else."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    api = urlparse(base_url).netloc
    refused = []

    def only_the_api(route) -> None:
        if urlparse(route.request.url).netloc == api:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", only_the_api)
    return page, refused


pytestmark = pytest.mark.slow


def test_swagger_ui_renders_every_operation_offline(embedded_stack, browser):
    page, refused = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/docs")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    operations = page.locator(".opblock").count()
    paths = embedded_stack.http.get("/openapi.json").json()["paths"]
    assert operations == sum(len(item) for item in paths.values())
    assert page.get_by_text("/v1/jobs/{job_id}/events").count() >= 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "docs-swagger-ui.png"), full_page=False)
    assert not refused, f"asked the internet for {refused}"


def test_redoc_renders_offline(embedded_stack, browser):
    page, refused = offline_page(browser, embedded_stack.base_url)
    page.goto(f"{embedded_stack.base_url}/redoc")
    page.get_by_role("heading", name=re.compile("trainserve")).first.wait_for(timeout=30_000)
    page.locator("[data-section-id^='tag/jobs']").first.wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "docs-redoc.png"), full_page=False)
    assert not refused, f"asked the internet for {refused}"


@pytest.mark.parametrize("path, sha256", [
    ("swagger-ui/swagger-ui-bundle.js", "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2"),
    ("swagger-ui/swagger-ui.css", "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d"),
    ("redoc/redoc.standalone.js", "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b"),
])
def test_the_vendored_files_are_the_named_releases(path, sha256):
    """service/static/vendor/README.md names the releases; these are their files, unchanged."""
    assert hashlib.sha256((VENDOR / path).read_bytes()).hexdigest() == sha256
