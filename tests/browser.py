"""A real browser for the page tests: Playwright driving the Chromium that Debian packages (no browser is
downloaded), on pages that can reach the API under test and nothing else."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("TRAINSERVE_TEST_ARTIFACTS", ROOT / "test-artifacts"))  # screenshots
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, ".ci/run installs Debian's chromium for the browser tests"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def offline_page(browser, base_url: str, width: int = 1280, height: int = 900, page_csp: bool = False):
    """A page that reaches the API at ``base_url`` and nothing else; ``page.refused`` lists what else it
    asked for, ``page.errors`` its script errors. The pages' content security policy is lifted, so that a
    test can run its own checks in the page, unless ``page_csp``."""
    context = browser.new_context(viewport={"width": width, "height": height}, bypass_csp=not page_csp)
    page = context.new_page()
    api = urlparse(base_url).netloc
    refused: list[str] = []
    errors: list[str] = []

    def only_the_api(route) -> None:
        if urlparse(route.request.url).netloc == api:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", only_the_api)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.refused, page.errors = refused, errors
    return page


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
