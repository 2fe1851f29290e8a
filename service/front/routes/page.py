"""The try-it page: GET / and its static files under /ui/ (plain HTML, CSS and JavaScript in
service/front/static: no build step, nothing from a CDN, so it works offline).

The page and its files hold no data and need no API key (a browser cannot send one for a page
it navigates to); everything the page shows comes from the API routes it calls, which do, with
the key the user types into the page (kept in the tab's sessionStorage). `EMBED_UI=false`
serves neither (404). The page allows scripts, styles and requests from this origin only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parents[1] / "static"
PREFIX = "/ui"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> Response:
    """The page itself."""
    return Response(
        (STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8", headers=HEADERS
    )


class PageFiles(StaticFiles):
    """The page's scripts and styles, with the page's headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(PREFIX, PageFiles(directory=STATIC), name="ui")
