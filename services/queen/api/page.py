"""The queen's live page: `GET /` and its static files, served from the package (no build step).

The page itself talks to the public `/v1` routes only (list, start, cancel, the aggregated stream, the
models and their delete and pin).
The files are public: with RBEE_API_TOKEN set the page still loads and asks for the token.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from shared.errors import ApiError

__all__ = ["PUBLIC_PATHS", "STATIC_FILES", "router"]

router = APIRouter(include_in_schema=False)

# The only files served: a fixed allow-list, so no request path ever reaches the file system.
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "models.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# The page must load before the user has typed the token (it asks for it), so with RBEE_API_TOKEN set
# these paths stay open, like /healthz: static files only, no data. Everything under /v1 still needs the token.
PUBLIC_PATHS = frozenset({"/", *(f"/static/{name}" for name in STATIC_FILES)})

_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # Everything is same-origin; no inline script, nothing fetched from elsewhere.
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
}


def _read(name: str) -> bytes:
    return resources.files("services.queen").joinpath("static", name).read_bytes()


def _file(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise ApiError(404, "NOT_FOUND", f"no static file {name!r}")
    return Response(_read(name), media_type=media_type, headers=_HEADERS)


@router.get("/")
async def index() -> Response:
    return _file("index.html")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return _file(name)
