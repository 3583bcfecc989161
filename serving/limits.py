"""Checks every request passes before a handler runs: query string, media type, body size,
strict JSON.

Litestar converts request bodies in lax mode, so `{"lat": "43.7"}` would be accepted as
a number. The `check_json_body` hook decodes the body again in msgspec's strict mode and
turns each failure into a 400 that names the field, the value sent and the allowed range.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

import msgspec
import msgspec.inspect as msgspec_inspect
from litestar import Litestar, Request
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi.spec import Schema

from serving.errors import InvalidField, UnsupportedMediaType, parameter_description

log = logging.getLogger(__name__)

# Maximum characters of a value quoted back in an error message.
MAX_VALUE_CHARS = 60
# Values of a repeated query parameter quoted back in an error message.
MAX_REPEATS_SHOWN = 3
# Paths the rate limit does not count: liveness probes and the schema.
RATE_LIMIT_EXEMPT = ["/api/health", "/schema"]
# Methods whose requests carry a body. A handler of one of them without a `data`
# parameter takes no body.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The only charset a JSON body may declare (RFC 8259 section 8.1 requires UTF-8).
JSON_CHARSET = "utf-8"

_PATH_RE = re.compile(r" - at `\$\.?([^`]*)`$")
_FIELD_RE = re.compile(r"field `(.+)`$")


class RawNumber(str):
    """A number or NaN/Infinity constant exactly as the client wrote it in JSON."""


def rate_limit_config(per_minute: int) -> RateLimitConfig:
    """Return the per-client limit of `per_minute` requests, keyed on the client address."""
    # NOTE: the counts live in each worker's memory, so with N workers a client may send up
    # to N times the limit, and behind a proxy every client shares the proxy's address.
    return RateLimitConfig(rate_limit=("minute", per_minute), exclude=RATE_LIMIT_EXEMPT)


def is_json_media_type(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def check_request(request: Request) -> None:
    """Run every request check before the handler runs, as the application's before_request."""
    check_query_parameters(request)
    check_unknown_query_parameters(request)
    await check_json_body(request)


def check_query_parameters(request: Request) -> None:
    """Reject a query string that repeats a parameter, naming it and every value sent.

    Litestar passes a handler the last of repeated values, so `?bbox=a&bbox=b` would read b
    without telling the client. No endpoint takes a list in the query string, so a repeat
    is rejected on every endpoint, like a repeated key of a JSON body.
    """
    query = request.query_params
    for name in dict.fromkeys(key for key, _ in query.multi_items()):
        values = query.getall(name)
        if len(values) < 2:
            continue
        quoted = ", ".join(display_value(value) for value in values[:MAX_REPEATS_SHOWN])
        if len(values) > MAX_REPEATS_SHOWN:
            quoted += f" and {len(values) - MAX_REPEATS_SHOWN} more"
        # A client chooses parameter names, so they are shortened like values.
        field = shorten(name)
        raise InvalidField(
            f"Query parameter {field} is repeated {len(values)} times ({quoted}); "
            "send it once.",
            field=field,
            value=quoted,
            allowed=_query_rule(request, name),
        )


def check_unknown_query_parameters(request: Request) -> None:
    """Reject a query parameter that the endpoint does not take, naming the ones it takes.

    Litestar ignores such parameters, so a misspelt `?score=false` would silently be read
    as the default, while an unknown field of a JSON body gets 400.
    """
    accepted = _query_names(request)
    for name in request.query_params:
        if name in accepted:
            continue
        field = shorten(name)
        names = ", ".join(sorted(accepted))
        allowed = f"only the query parameters {names}" if names else "no query parameters"
        raise InvalidField(
            f"Unknown query parameter {field} for {request.method} {request.url.path}; "
            f"this endpoint takes {allowed}.",
            field=field,
            value=display_value(request.query_params[name]),
            allowed=allowed,
        )


# Query parameter names per route handler and set of path parameter names.
_QUERY_NAMES: dict[tuple[int, frozenset[str]], frozenset[str]] = {}


def _query_names(request: Request) -> frozenset[str]:
    """Return the query parameters that the request's handler and its dependencies take."""
    handler = request.route_handler
    key = (id(handler), frozenset(request.path_params))
    names = _QUERY_NAMES.get(key)
    if names is None:
        # create_kwargs_model reads only the names of the path parameters.
        model = handler.create_kwargs_model(path_parameters=dict.fromkeys(key[1]))
        names = frozenset(param.field_alias for param in model.expected_query_params)
        _QUERY_NAMES[key] = names
    return names


def _query_rule(request: Request, name: str) -> str:
    """Return what a query parameter admits, in words, for the 400 of a repeat."""
    rule = parameter_description(request, name)
    if rule:
        return f"one value of {name}: {rule}"
    return "each query parameter at most once"


async def check_json_body(request: Request) -> None:
    """Reject a request whose body does not decode strictly into the handler's `data` type.

    Handlers without a `data` parameter take no body, and `check_no_body` checks that none
    was sent. Raises UnsupportedMediaType (415) for a body that is not JSON or declares a
    charset other than UTF-8, and InvalidField (400) for a malformed or invalid one. Reading a body over the size limit raises 413.
    """
    parameter = request.route_handler.parsed_fn_signature.parameters.get("data")
    if parameter is None:
        if request.method in BODY_METHODS:
            await check_no_body(request)
        return
    model = parameter.annotation
    media_type, options = request.content_type
    if not is_json_media_type(media_type):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {media_type or 'none'!r}.",
            field="Content-Type",
        )
    charset = options.get("charset")
    if charset is not None and charset.lower() != JSON_CHARSET:
        quoted = shorten(charset)
        raise UnsupportedMediaType(
            f"Content-Type charset {quoted!r} is not supported: JSON bodies are read as UTF-8, "
            f"so send charset={JSON_CHARSET} or no charset.",
            field="Content-Type",
            value=quoted,
            allowed=f"charset={JSON_CHARSET} or none",
        )
    body = await request.body()
    if not body.strip():
        raise InvalidField(
            f"The request body is empty; send a JSON object with {fields_summary(model)}.",
            field="body",
        )
    duplicate = duplicate_key_error(model, body)
    if duplicate is not None:
        raise duplicate
    try:
        msgspec.json.decode(body, type=model)
    except msgspec.ValidationError as error:
        raise validation_error(model, body, str(error)) from None
    except msgspec.DecodeError as error:
        raise decode_error(model, body, str(error)) from None


async def check_no_body(request: Request) -> None:
    """Reject a body sent to an endpoint that takes none, such as POST .../finalize.

    An empty body and an empty JSON object `{}` are accepted, because some HTTP clients
    send `{}` with every POST. Reading a body over the size limit raises 413.
    """
    body = (await request.body()).strip()
    if not body or _is_empty_object(body):
        return
    text = body.decode("utf-8", "replace")
    quoted = shorten(text)
    raise InvalidField(
        f"{request.method} {request.url.path} takes no request body, but got {len(body)} "
        f"bytes ({quoted}); send no body or an empty JSON object {{}}.",
        field="body",
        value=quoted,
        allowed="no body, or {}",
    )


def _is_empty_object(body: bytes) -> bool:
    try:
        return json.loads(body) == {}
    except (ValueError, RecursionError):
        return False


def lenient_fields(body: bytes) -> dict[str, Any] | None:
    """Decode a body with Python's json, keeping numbers and NaN/Infinity as sent.

    Returns None unless the body is a JSON object.
    """
    try:
        value = json.loads(
            body, parse_float=RawNumber, parse_int=RawNumber, parse_constant=RawNumber
        )
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: Any, second: Any) -> None:
        super().__init__(key)
        self.key = key
        self.first = first
        self.second = second


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    decoded: dict[str, Any] = {}
    for key, value in pairs:
        if key in decoded:
            raise _DuplicateKey(key, decoded[key], value)
        decoded[key] = value
    return decoded


def duplicate_key_error(model: Any, body: bytes) -> InvalidField | None:
    """Return a 400 naming the first key that an object of the body repeats, else None.

    JSON parsers disagree on which of two equal keys wins (msgspec and Python keep the
    last), so a body with one is rejected before it is read. A body that is not valid JSON
    returns None, and the strict decode reports its syntax error.
    """
    try:
        json.loads(
            body,
            object_pairs_hook=_object_without_duplicates,
            parse_float=RawNumber,
            parse_int=RawNumber,
            parse_constant=RawNumber,
        )
    except _DuplicateKey as duplicate:
        key = duplicate.key
        # A client chooses key names, so they are shortened like values.
        field = shorten(key)
        first, second = display_value(duplicate.first), display_value(duplicate.second)
        return InvalidField(
            f"Duplicate field {field} in the request body ({field}={first} and "
            f"{field}={second}); send each field once.",
            field=field,
            value=second,
            allowed=allowed_for(model, key) or fields_summary(model),
        )
    except (ValueError, RecursionError):
        return None
    return None


def shorten(text: str) -> str:
    """Return `text` cut to MAX_VALUE_CHARS characters, with "..." where it was cut."""
    return text if len(text) <= MAX_VALUE_CHARS else f"{text[:MAX_VALUE_CHARS]}..."


def display_value(value: Any) -> str:
    """Return a short text of a value as the client sent it."""
    if isinstance(value, RawNumber):
        text = str(value)
    elif isinstance(value, str):
        text = json.dumps(value)
        if len(value) > MAX_VALUE_CHARS:
            text = f"{json.dumps(value[:MAX_VALUE_CHARS])[:-1]}...\" ({len(value)} characters)"
        return text
    else:
        text = _json_text(value)
    if len(text) > MAX_VALUE_CHARS:
        text = f"{text[:MAX_VALUE_CHARS]}... ({len(text)} characters)"
    return text


def _json_text(value: Any) -> str:
    """Return JSON text of a decoded value, writing RawNumber values as they were sent."""
    if isinstance(value, RawNumber):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(key)}: {_json_text(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    return json.dumps(value, default=str)


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.0f}"


def describe_type(info: msgspec_inspect.Type) -> str:
    """Return the values a msgspec type admits, in words: "a number from -90 to 90"."""
    if isinstance(info, msgspec_inspect.Metadata):
        return describe_type(info.type)
    if isinstance(info, msgspec_inspect.UnionType):
        kinds = [t for t in info.types if not isinstance(t, msgspec_inspect.NoneType)]
        text = " or ".join(describe_type(t) for t in kinds)
        return f"{text} or null" if len(kinds) < len(info.types) else text
    if isinstance(info, (msgspec_inspect.FloatType, msgspec_inspect.IntType)):
        noun = "an integer" if isinstance(info, msgspec_inspect.IntType) else "a finite number"
        low, high = info.ge, info.le
        if low is not None and high is not None:
            return f"{noun} from {_number(low)} to {_number(high)}"
        if low is not None:
            return f"{noun} >= {_number(low)}"
        if high is not None:
            return f"{noun} <= {_number(high)}"
        return noun
    if isinstance(info, msgspec_inspect.StrType):
        parts = []
        if info.min_length is not None:
            parts.append(f"at least {info.min_length}")
        if info.max_length is not None:
            parts.append(f"at most {info.max_length}")
        text = "a string"
        if parts:
            text += f" of {' and '.join(parts)} characters"
        if info.pattern:
            text += f" matching {info.pattern}"
        return text
    if isinstance(info, msgspec_inspect.BoolType):
        return "true or false"
    if isinstance(info, msgspec_inspect.StructType):
        return f"a JSON object with {fields_summary(info.cls)}"
    return "a value of the documented type"


def _struct_fields(model: Any) -> dict[str, msgspec_inspect.Field]:
    info = msgspec_inspect.type_info(model)
    if not isinstance(info, msgspec_inspect.StructType):
        return {}
    return {field.name: field for field in info.fields}


def fields_summary(model: Any) -> str:
    """Return the fields of a request model, required ones first: "lat, lon (required), ..."."""
    fields = _struct_fields(model)
    required = [name for name, field in fields.items() if field.required]
    optional = [name for name, field in fields.items() if not field.required]
    text = f"fields {', '.join(required)} (required)" if required else "fields"
    if optional:
        text += f" and {', '.join(optional)} (optional)"
    return text


def allowed_for(model: Any, field: str) -> str | None:
    """Return the values `field` of `model` admits, or None for an unknown field."""
    info = _struct_fields(model).get(field)
    return None if info is None else describe_type(info.type)


def validation_error(model: Any, body: bytes, message: str) -> InvalidField:
    """Turn a msgspec validation message into a 400 naming the field, value and range."""
    fields = lenient_fields(body) or {}
    reason = _PATH_RE.sub("", message)
    path = _PATH_RE.search(message)
    named = _FIELD_RE.search(message)
    if path and path.group(1):
        field = path.group(1)
        value = fields.get(field.split(".")[0], msgspec.UNSET)
        value_text = "" if value is msgspec.UNSET else f"={display_value(value)}"
        allowed = allowed_for(model, field)
        detail = f"Invalid {field}{value_text}: {reason}."
        if allowed:
            detail += f" {field} must be {allowed}."
        return InvalidField(
            detail, field=field, value=_value_or_none(value), allowed=allowed
        )
    if named and "unknown field" in message:
        key = named.group(1)
        value = fields.get(key, msgspec.UNSET)
        # A client chooses unknown field names, so they are shortened like values.
        field = shorten(key)
        value_text = "" if value is msgspec.UNSET else f"={display_value(value)}"
        return InvalidField(
            f"Unknown field {field}{value_text}; this request accepts {fields_summary(model)}.",
            field=field,
            value=_value_or_none(value),
            allowed=fields_summary(model),
        )
    if named and "missing required field" in message:
        field = named.group(1)
        allowed = allowed_for(model, field)
        return InvalidField(
            f"Missing required field {field}; {field} must be {allowed}.",
            field=field,
            allowed=allowed,
        )
    return InvalidField(
        f"Invalid request body: {reason}; send a JSON object with {fields_summary(model)}.",
        field="body",
        allowed=fields_summary(model),
    )


def decode_error(model: Any, body: bytes, message: str) -> InvalidField:
    """Turn a JSON syntax error into a 400; NaN and Infinity are named with their field."""
    fields = lenient_fields(body)
    if fields is not None:
        for field, value in fields.items():
            if isinstance(value, RawNumber) and not math.isfinite(float(value)):
                allowed = allowed_for(model, field)
                detail = f"Invalid {field}={value}: JSON has no NaN or Infinity."
                if allowed:
                    detail += f" {field} must be {allowed}."
                return InvalidField(detail, field=field, value=str(value), allowed=allowed)
    surrogate = lone_surrogate_error(model, body)
    if surrogate is not None:
        return surrogate
    return InvalidField(
        f"The request body is not valid JSON ({message}); send a JSON object with "
        f"{fields_summary(model)}.",
        field="body",
    )


def lone_surrogate_error(model: Any, body: bytes) -> InvalidField | None:
    """Return a 400 naming the field whose string has a lone UTF-16 surrogate escape, else None.

    msgspec rejects an escape such as `\\ud800` without its low surrogate, but reports it as
    truncated input. Python's json decodes such an escape into a lone surrogate code point,
    which shows where it is.
    """
    try:
        decoded = json.loads(body, parse_constant=RawNumber)
    except (ValueError, RecursionError):
        return None
    found = _find_surrogate(decoded)
    if found is None:
        return None
    field, code_point = found
    escape = f"\\u{ord(code_point):04x}"
    fields = decoded if isinstance(decoded, dict) else {}
    value = fields.get(field, msgspec.UNSET) if field != "body" else msgspec.UNSET
    label = "request body" if field == "body" else field
    return InvalidField(
        f"Invalid {label}: the JSON escape {escape} is a lone UTF-16 surrogate, which is not "
        "a valid character. A \\u escape from \\ud800 to \\udbff must be followed by one "
        "from \\udc00 to \\udfff; send the character itself in UTF-8 or a complete pair.",
        field=field,
        value=_value_or_none(value),
        allowed=allowed_for(model, field),
    )


def _find_surrogate(value: Any, field: str = "body") -> tuple[str, str] | None:
    """Return the top-level field and the first surrogate code point found in `value`."""
    if isinstance(value, str):
        surrogate = next((c for c in value if "\ud800" <= c <= "\udfff"), None)
        return None if surrogate is None else (field, surrogate)
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_surrogate(key, "body") or _find_surrogate(
                item, key if field == "body" else field
            )
            if found is not None:
                return found
    if isinstance(value, list):
        for item in value:
            found = _find_surrogate(item, field)
            if found is not None:
                return found
    return None


def _value_or_none(value: Any) -> str | None:
    return None if value is msgspec.UNSET else display_value(value)


def request_models(app: Litestar) -> list[type[msgspec.Struct]]:
    """Return the Struct types that route handlers of `app` take as their JSON body."""
    models = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            signature = getattr(handler, "parsed_fn_signature", None)
            parameter = None if signature is None else signature.parameters.get("data")
            annotation = None if parameter is None else parameter.annotation
            if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
                models.append(annotation)
    return list(dict.fromkeys(models))


def document_strict_bodies(app: Litestar) -> None:
    """Make the OpenAPI schema of each request body admit exactly what `check_json_body` does.

    Litestar 2.25 leaves out `additionalProperties: false` for Structs that forbid unknown
    fields, and drops numeric bounds of optional fields such as `seed: int >= 0 | None`.
    Runs at start-up, before the schema is first served.
    """
    components = app.openapi_schema.components.schemas or {}
    by_title = {
        schema.title: schema for schema in components.values() if isinstance(schema, Schema)
    }
    for model in request_models(app):
        schema = by_title.get(model.__name__)
        if schema is None:
            log.warning("no OpenAPI component for request body %s", model.__name__)
            continue
        if model.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        for field in _struct_fields(model).values():
            prop = (schema.properties or {}).get(field.name)
            bounds = _numeric_bounds(field.type)
            if not isinstance(prop, Schema) or bounds is None:
                continue
            if prop.minimum is None and bounds.ge is not None:
                prop.minimum = float(bounds.ge)
            if prop.maximum is None and bounds.le is not None:
                prop.maximum = float(bounds.le)


def _numeric_bounds(
    info: msgspec_inspect.Type,
) -> msgspec_inspect.IntType | msgspec_inspect.FloatType | None:
    if isinstance(info, msgspec_inspect.Metadata):
        return _numeric_bounds(info.type)
    if isinstance(info, msgspec_inspect.UnionType):
        found = [_numeric_bounds(t) for t in info.types]
        numeric = [bounds for bounds in found if bounds is not None]
        return numeric[0] if len(numeric) == 1 else None
    if isinstance(info, (msgspec_inspect.IntType, msgspec_inspect.FloatType)):
        return info
    return None
