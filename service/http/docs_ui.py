"""The pages the API serves from the package (``service/static``): the dashboard at ``/ui/``, and ``/docs``
(Swagger UI) and ``/redoc`` (ReDoc) with their scripts and styles. They fetch nothing from elsewhere, so
they work without internet, and behind an ingress path prefix (every URL in them is relative)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent.parent / "static"  # service/static
# The pages load nothing from elsewhere: ReDoc's footer asks a CDN for its logo, which this refuses.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


def _local(page):
    page.headers["Content-Security-Policy"] = CSP
    return page


def install(app: FastAPI) -> None:
    """The app is made with ``docs_url=None, redoc_url=None``; /docs and /redoc here take their place."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Every URL below is relative to the page, so the pages work as they are behind a proxy that serves the
    # API under a path prefix and strips it (an ingress at /trainserve/): no root_path to configure.
    @app.get("/", include_in_schema=False)
    @app.get("/ui", include_in_schema=False)
    def to_the_dashboard() -> RedirectResponse:
        return RedirectResponse("ui/")

    @app.get("/ui/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return _local(FileResponse(STATIC / "ui" / "index.html", media_type="text/html"))

    app.mount("/ui", StaticFiles(directory=STATIC / "ui"), name="ui")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _local(get_swagger_ui_html(openapi_url="openapi.json", title=f"{app.title} - Swagger UI",
                                          swagger_js_url="static/vendor/swagger-ui/swagger-ui-bundle.js",
                                          swagger_css_url="static/vendor/swagger-ui/swagger-ui.css",
                                          swagger_favicon_url="static/vendor/swagger-ui/favicon-32x32.png"))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _local(get_redoc_html(openapi_url="openapi.json", title=f"{app.title} - ReDoc",
                                     redoc_js_url="static/vendor/redoc/redoc.standalone.js",
                                     redoc_favicon_url="static/vendor/swagger-ui/favicon-32x32.png",
                                     with_google_fonts=False))
