"""The route decorator shared by the controllers."""

from __future__ import annotations

from typing import Any

from litestar import HttpMethod, route


def get_and_head(path: str | None = None, **kwargs: Any) -> Any:
    """Register a handler for GET and HEAD, like `litestar.get` with HEAD added.

    A HEAD request runs the same handler, and the server sends the GET response's status
    and headers (Content-Length included) without the body.
    """
    return route(path, http_method=[HttpMethod.GET, HttpMethod.HEAD], **kwargs)
