"""Domain errors of the server and the one place that turns them into HTTP answers."""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from planner.errors import InvalidWaypoint, PlannerError, RouteFinalized

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status and a message for the client."""

    status_code = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class Unprocessable(ApiError):
    """The request is well formed but cannot be served (outside every region, no loop)."""

    status_code = 422


class Forbidden(ApiError):
    status_code = 403


class ServiceUnavailable(ApiError):
    """Cold cells cannot be built now; the client should retry after `retry_after_s`."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 10) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _body(status: int, message: str, field: str | None = None) -> dict:
    body: dict = {"status_code": status, "detail": message}
    if field:
        body["field"] = field
    return body


def api_error_handler(_: Request, error: ApiError) -> Response:
    headers = {}
    if isinstance(error, ServiceUnavailable):
        headers["Retry-After"] = str(error.retry_after_s)
    return Response(
        _body(error.status_code, error.message, error.field),
        status_code=error.status_code,
        headers=headers,
    )


def planner_error_handler(_: Request, error: PlannerError) -> Response:
    status = 422
    if isinstance(error, RouteFinalized):
        status = 409
    elif isinstance(error, InvalidWaypoint):
        status = 422
    return Response(_body(status, str(error)), status_code=status)


def validation_error_handler(_: Request, error: ValidationException) -> Response:
    """Return 400 with the message of each invalid field, e.g. "Expected `float` <= 90 - at `$.lat`"."""
    extra = error.extra if isinstance(error.extra, list) else []
    details = []
    for item in extra:
        if isinstance(item, dict):
            details.append({k: str(v) for k, v in item.items() if k in {"message", "key", "source"}})
    message = "; ".join(d.get("message", "") for d in details) or str(error.detail)
    body = _body(400, f"Invalid request: {message}")
    if details:
        body["errors"] = details
    return Response(body, status_code=400)


def http_error_handler(_: Request, error: HTTPException) -> Response:
    return Response(
        _body(error.status_code, str(error.detail)),
        status_code=error.status_code,
        headers=error.headers or {},
    )


def internal_error_handler(request: Request, error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response(
        _body(500, "Internal server error; the failure was logged."),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
    )


EXCEPTION_HANDLERS = {
    ApiError: api_error_handler,
    PlannerError: planner_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
