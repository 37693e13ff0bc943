"""The pages the API serves from the package (``service/static``): the dashboard at ``/ui/``, and ``/docs``
(Swagger UI) and ``/redoc`` (ReDoc) with their scripts and styles. They fetch nothing from elsewhere, so
they work without internet, and behind an ingress path prefix (every URL in them is relative, or carries
the prefix the proxy sends as ``root_path``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
# The pages load nothing from elsewhere: ReDoc's footer asks a CDN for its logo, which this refuses.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


def _local(page):
    page.headers["Content-Security-Policy"] = CSP
    return page


def install(app: FastAPI) -> None:
    """The app is made with ``docs_url=None, redoc_url=None``; /docs and /redoc here take their place."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    @app.get("/ui", include_in_schema=False)
    def to_the_dashboard(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/ui/")

    @app.get("/ui/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return _local(FileResponse(STATIC / "ui" / "index.html", media_type="text/html"))

    app.mount("/ui", StaticFiles(directory=STATIC / "ui"), name="ui")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _local(get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{root}/static/vendor/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}/static/vendor/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url=f"{root}/static/vendor/swagger-ui/favicon-32x32.png"))

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _local(get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}/static/vendor/redoc/redoc.standalone.js",
                              redoc_favicon_url=f"{root}/static/vendor/swagger-ui/favicon-32x32.png",
                              with_google_fonts=False))
