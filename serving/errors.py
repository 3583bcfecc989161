"""Domain errors of the server and the one place that turns them into HTTP answers."""

from __future__ import annotations

import logging
import re

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import (
    HTTP_404_NOT_FOUND,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
)
from msgspec import Struct

from planner.errors import (
    EmptyRoute,
    InvalidWaypoint,
    NoLoopFound,
    PlannerError,
    RouteFinalized,
    StartNotFound,
)

log = logging.getLogger(__name__)

# Maximum characters of a parameter value quoted back in an error message.
MAX_VALUE_CHARS = 80


class ApiError(Exception):
    """An error with an HTTP status and a message for the client."""

    status_code = 400

    def __init__(
        self,
        message: str,
        field: str | None = None,
        value: str | None = None,
        allowed: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value
        self.allowed = allowed


class InvalidField(ApiError):
    """A request field, body or header is invalid; `value` is the value as the client sent it."""

    status_code = 400


class UnsupportedMediaType(ApiError):
    status_code = 415


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
    """Cold cells cannot be built now; the client should retry after `retry_after_s`.

    With `retry_after_s` None the response has no Retry-After, because retrying will not
    help until an operator acts (for example restarts the server).
    """

    status_code = 503

    def __init__(self, message: str, retry_after_s: int | None = 10) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ErrorBody(Struct):
    """Body of every 4xx and 5xx answer.

    `field` names the request field, parameter or header at fault, `value` repeats what
    the client sent and `allowed` says what the field admits.
    """

    status_code: int
    detail: str
    field: str | None = None
    value: str | None = None
    allowed: str | None = None
    errors: list[dict[str, str]] | None = None


_STATUS_DESCRIPTIONS = {
    400: "Invalid request: the detail names the field, the value sent and the allowed range",
    404: "Unknown job, route or loop id",
    409: "The route is finalized or changed concurrently",
    413: "Request body larger than PERFECT10K_MAX_BODY_BYTES",
    415: "Request body is not JSON, or declares a charset other than utf-8",
    422: "Valid request that cannot be served: start outside every region, no loop found",
    429: "Rate limit exceeded; see Retry-After",
    503: "The area is not built and cannot be built now; see Retry-After",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """Return OpenAPI response entries with the ErrorBody schema for `codes` and 429."""
    return {
        code: ResponseSpec(
            data_container=ErrorBody, description=_STATUS_DESCRIPTIONS[code], generate_examples=False
        )
        for code in sorted({*codes, 429})
    }


def _body(
    status: int,
    message: str,
    field: str | None = None,
    value: str | None = None,
    allowed: str | None = None,
) -> dict:
    body: dict = {"status_code": status, "detail": message}
    if field:
        body["field"] = field
    if value is not None:
        body["value"] = value
    if allowed:
        body["allowed"] = allowed
    return body


def api_error_handler(_: Request, error: ApiError) -> Response:
    headers = {}
    if isinstance(error, ServiceUnavailable) and error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    return Response(
        _body(error.status_code, error.message, error.field, error.value, error.allowed),
        status_code=error.status_code,
        headers=headers,
    )


# The request field each planner error is about. Subclasses come before their bases,
# because the first match wins.
_PLANNER_ERROR_FIELDS = {
    StartNotFound: "lat",
    EmptyRoute: "route_id",
    NoLoopFound: "target_distance",
    InvalidWaypoint: "candidate_id",
    RouteFinalized: "route_id",
}


def planner_error_handler(_: Request, error: PlannerError) -> Response:
    """Return 409 for a change to a finalized route, else 422 (no start, no loop, bad waypoint)."""
    status = 409 if isinstance(error, RouteFinalized) else 422
    field = next(
        (name for kind, name in _PLANNER_ERROR_FIELDS.items() if isinstance(error, kind)), None
    )
    return Response(_body(status, str(error), field), status_code=status)


def parameter_rule(request: Request, name: str) -> str | None:
    """Return the values, length and pattern a path or query parameter must match, in words."""
    parameter = request.route_handler.parsed_fn_signature.parameters.get(name)
    if getattr(parameter, "annotation", None) is bool:
        # Litestar also accepts 1 and 0, in any letter case ("True").
        return "true or false"
    definition = getattr(parameter, "kwarg_definition", None)
    if definition is None:
        return None
    parts = []
    if definition.min_length is not None and definition.max_length is not None:
        parts.append(f"{definition.min_length} to {definition.max_length} characters")
    if definition.pattern:
        parts.append(f"matching {definition.pattern}")
    return " ".join(parts) or None


def parameter_description(request: Request, name: str) -> str | None:
    """Return what a parameter admits: its rule, else the description in the schema."""
    parameter = request.route_handler.parsed_fn_signature.parameters.get(name)
    if parameter is None:
        return None
    definition = getattr(parameter, "kwarg_definition", None)
    return parameter_rule(request, name) or getattr(definition, "description", None)


# Litestar 2 message for a required parameter that the request lacks.
MISSING_PARAMETER = re.compile(r"Missing required (\w+) parameter '([^']+)'")


def validation_error_handler(request: Request, error: ValidationException) -> Response:
    """Return 400 naming each invalid parameter, the value sent and what it must match."""
    extra = error.extra if isinstance(error.extra, list) else []
    details = []
    for item in extra:
        if not isinstance(item, dict):
            continue
        key = str(item.get("key", ""))
        detail = {
            k: str(getattr(v, "value", v))
            for k, v in item.items()
            if k in {"message", "key", "source"}
        }
        raw = request.path_params.get(key, request.query_params.get(key))
        if raw is not None:
            detail["value"] = str(raw)[:MAX_VALUE_CHARS]
        rule = parameter_rule(request, key) if key else None
        if rule:
            detail["allowed"] = rule
        details.append(detail)
    if not details:
        # Litestar names a missing parameter only in its message.
        missing = MISSING_PARAMETER.search(str(error.detail))
        if missing is None:
            return Response(_body(400, f"Invalid request: {error.detail}"), status_code=400)
        kind, field = missing.groups()
        allowed = parameter_description(request, field)
        message = f"Missing required {kind} parameter {field}"
        message += f"; {field} must be {allowed}." if allowed else "."
        return Response(_body(400, message, field, allowed=allowed), status_code=400)
    first = details[0]
    messages = []
    for detail in details:
        text = f"Invalid {detail.get('key', 'request')}"
        if "value" in detail:
            text += f"={detail['value']!r}"
        text += f": {detail.get('message', '')}"
        if "allowed" in detail:
            text += f"; it must be {detail['allowed']}"
        messages.append(text)
    body = _body(
        400, "; ".join(messages) + ".", first.get("key"), first.get("value"), first.get("allowed")
    )
    body["errors"] = details
    return Response(body, status_code=400)


def http_error_handler(request: Request, error: HTTPException) -> Response:
    """Return Litestar's HTTP errors with a message that says what limit applies."""
    headers = dict(error.headers or {})
    message = str(error.detail)
    path = request.url.path
    if error.status_code == HTTP_404_NOT_FOUND and path.startswith("/api/"):
        # Handlers report unknown ids as NotFound (an ApiError), so this 404 comes from
        # routing: no endpoint matches the path.
        quoted = path if len(path) <= MAX_VALUE_CHARS else f"{path[:MAX_VALUE_CHARS]}..."
        body = _body(
            404,
            f"No API endpoint matches the path {quoted}; the endpoints are listed at /schema.",
            "path",
            quoted,
        )
        return Response(body, status_code=404, headers=headers)
    if error.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        limit = request.app.state.get("max_body_bytes", "the configured")
        message = (
            f"The request body is larger than the limit of {limit} bytes "
            "(PERFECT10K_MAX_BODY_BYTES)."
        )
    elif error.status_code == HTTP_429_TOO_MANY_REQUESTS:
        retry_after = headers.get("RateLimit-Reset", "60")
        headers["Retry-After"] = retry_after
        message = (
            f"Too many requests from this client: the limit is {headers.get('RateLimit-Limit')} "
            f"per minute (PERFECT10K_RATE_LIMIT_PER_MINUTE); retry after {retry_after} s."
        )
    return Response(_body(error.status_code, message), status_code=error.status_code, headers=headers)


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
