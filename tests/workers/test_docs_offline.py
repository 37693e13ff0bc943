"""/docs and /redoc in a real browser (tests/browser.py) with every request beyond the API refused, as on a
machine without internet: both render the API's operations from the files the package serves."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.browser import browser, offline_page, screenshot  # noqa: F401  (browser: a fixture)

VENDOR = Path(__file__).resolve().parents[2] / "service" / "static" / "vendor"

pytestmark = pytest.mark.slow


def test_swagger_ui_renders_every_operation_offline(embedded_stack, browser):
    page = offline_page(browser, embedded_stack.base_url, page_csp=True)
    page.goto(f"{embedded_stack.base_url}/docs")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    operations = page.locator(".opblock").count()
    paths = embedded_stack.http.get("/openapi.json").json()["paths"]
    assert operations == sum(len(item) for item in paths.values())
    assert page.get_by_text("/v1/jobs/{job_id}/events").count() >= 1
    screenshot(page, "docs-swagger-ui")
    assert not page.refused, f"asked the internet for {page.refused}"


def test_redoc_renders_offline(embedded_stack, browser):
    page = offline_page(browser, embedded_stack.base_url, page_csp=True)  # it keeps ReDoc from its CDN logo
    page.goto(f"{embedded_stack.base_url}/redoc")
    page.get_by_role("heading", name=re.compile("trainserve")).first.wait_for(timeout=30_000)
    page.locator("[data-section-id^='tag/jobs']").first.wait_for(timeout=30_000)
    screenshot(page, "docs-redoc")
    assert not page.refused, f"asked the internet for {page.refused}"


@pytest.mark.parametrize("path, sha256", [
    ("swagger-ui/swagger-ui-bundle.js", "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2"),
    ("swagger-ui/swagger-ui.css", "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d"),
    ("redoc/redoc.standalone.js", "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b"),
    ("uplot/uPlot.iife.min.js", "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f"),
    ("uplot/uPlot.min.css", "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04"),
])
def test_the_vendored_files_are_the_named_releases(path, sha256):
    """service/static/vendor/README.md names the releases; these are their files, unchanged."""
    assert hashlib.sha256((VENDOR / path).read_bytes()).hexdigest() == sha256
