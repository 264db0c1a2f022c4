"""DRF plumbing shared by every app: the error envelope, fast JSON in and out, and plain Django
fast paths for the hottest API views (:func:`with_fast_path`)."""

import functools
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.forms.utils import ErrorList
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder as DRFJSONEncoder

from config.errors import ApplicationError, ValidationFailed

# DRF's own exceptions mapped to our stable codes.
_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ValidationError: "validation_error",
    exceptions.ParseError: "malformed_json",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
}


def _plain(fields: Any) -> Any:
    """Field errors as plain JSON: a django-filter / Django form ``ErrorDict`` holds ``ErrorList`` s,
    which the JSON renderer would write as empty lists, losing the messages."""
    if isinstance(fields, dict):
        return {name: _plain(errors) for name, errors in fields.items()}
    if isinstance(fields, ErrorList):
        return [str(message) for message in fields]
    return fields


def filterset_or_400(filterset_class, request, queryset):
    """The django-filter ``filterset_class`` of ``request``'s query parameters over ``queryset``;
    invalid filters are a 400 ``validation_error`` with each field's messages."""
    filterset = filterset_class(request.query_params, queryset=queryset, request=request)
    if not filterset.is_valid():
        raise ValidationFailed(fields=filterset.errors)
    return filterset


def error_response(
    *, status_code: int, code: str, message: str, fields: Any = None, extra: dict | None = None, headers=None
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message, "fields": _plain(fields or {})}
    body.update(extra or {})
    return Response({"error": body}, status=status_code, headers=headers)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApplicationError):
        return error_response(
            status_code=exc.status_code, code=exc.code, message=exc.message, fields=exc.fields, extra=exc.extra
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    # Imported here: DRF's views module imports this one (renderer and parser settings), and this
    # one may be imported first (by the MIDDLEWARE setting).
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return error_response(
            status_code=status.HTTP_400_BAD_REQUEST,
            code=code,
            message="Some fields are invalid.",
            fields=detail,
        )
    headers = {k: v for k, v in response.headers.items() if k in ("WWW-Authenticate", "Retry-After", "Allow")}
    return error_response(status_code=response.status_code, code=code, message=str(exc.detail), headers=headers)


class FastJSONParser(BaseParser):
    """JSON bodies parsed with orjson: ~5x faster than the standard library on 1,000-record batches.

    Same contract as DRF's JSONParser: NaN/Infinity are rejected, errors are a ParseError
    (-> 400 ``malformed_json``).
    """

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return orjson.loads(stream.read() if stream is not None else b"")
        except orjson.JSONDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None


class FastJSONRenderer(JSONRenderer):
    """DRF's JSONRenderer output, produced by orjson; anything orjson does not know natively
    (Decimal, lazy strings, ...) goes through DRF's encoder."""

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        # Datetimes go through DRF's encoder too, so UTC keeps its "Z" suffix as elsewhere.
        return orjson.dumps(data, default=_drf_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


_drf_encoder = DRFJSONEncoder()


def _drf_default(value: Any) -> Any:
    return _drf_encoder.default(value)


# --- plain Django fast paths ------------------------------------------------------------------

_renderer = FastJSONRenderer()
JSON = "application/json"


def with_fast_path(drf_view: Callable, fast: Callable[..., HttpResponse | None]) -> Callable:
    """A URL's view: ``fast(request, *args, **kwargs)`` answers the common case of an API view as
    a plain Django view (no DRF request wrapping, content negotiation or response machinery);
    when it returns None, the DRF view ``drf_view`` (``SomeApi.as_view()``) answers instead — so
    anything unusual (another method, session credentials, another content type or Accept
    header, ``?format=``) keeps DRF's exact behaviour. The result carries the DRF view's
    attributes (``cls``, ``initkwargs``, ``csrf_exempt``), so the OpenAPI schema still describes
    the endpoint from its APIView class.

    ``fast`` must answer exactly what the DRF view would (status, headers, body): build its
    responses with :func:`plain_response` / :func:`plain_error_response`, and give up (None)
    before doing anything with side effects."""

    @functools.wraps(drf_view)
    def view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = fast(request, *args, **kwargs)
        return response if response is not None else drf_view(request, *args, **kwargs)

    return view


def fast_path_eligible(request: HttpRequest) -> bool:
    """Whether DRF would treat ``request`` like a plain POST answered in JSON: POST, no query
    string (``?format=`` switches renderers), and an Accept header that every JSON-only API
    view satisfies the same way."""
    meta = request.META
    return (
        request.method == "POST"
        and not meta.get("QUERY_STRING")
        and meta.get("HTTP_ACCEPT", "*/*") in ("*/*", JSON, "application/*")
    )


def plain_response(data: Any, *, status_code: int = 200, headers: dict | None = None) -> HttpResponse:
    """What a DRF ``Response(data)`` of the JSON-only API renders to (same bytes, same
    ``Content-Type: application/json``), built as a plain HttpResponse."""
    return HttpResponse(_renderer.render(data), status=status_code, content_type=JSON, headers=headers)


def plain_error_response(exc: Exception, *, headers: dict | None = None) -> HttpResponse | None:
    """``exc`` answered through :func:`exception_handler` exactly as a DRF view would answer it,
    plus ``headers``; None for an exception DRF would not handle either (re-raise it)."""
    response = exception_handler(exc, {})
    if response is None:
        return None
    merged = {key: value for key, value in response.items() if key != "Content-Type"}
    merged.update(headers or {})
    return plain_response(response.data, status_code=response.status_code, headers=merged)


def api_key_call_to_plain_view(request: HttpRequest) -> bool:
    """An API-key call (``Authorization: Bearer ...``) to a path under
    ``SPENDGUARD_PLAIN_API_PATH_PREFIXES``: the budget-check views, whose API-key answers never
    read the session, the user or messages (DRF asks the session only when the header is not
    Bearer, and then this is False)."""
    from costs.api.authentication import bearer_parts  # config must not import apps at load time

    path = request.path_info
    return any(path.startswith(prefix) for prefix in settings.SPENDGUARD_PLAIN_API_PATH_PREFIXES) and (
        bearer_parts(request) is not None
    )


class _SkippedForApiKeyCalls:
    """A Django middleware that steps aside for :func:`api_key_call_to_plain_view` requests
    (about 0.05 ms of CPU per check for the three below); every other request gets it as is."""

    def __call__(self, request):
        skip = getattr(request, "_api_key_call_to_plain_view", None)
        if skip is None:  # decided once per request, by the first of them
            skip = request._api_key_call_to_plain_view = api_key_call_to_plain_view(request)
        if skip:
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_SkippedForApiKeyCalls, DjangoSessionMiddleware):
    pass


class AuthenticationMiddleware(_SkippedForApiKeyCalls, DjangoAuthenticationMiddleware):
    pass


class MessageMiddleware(_SkippedForApiKeyCalls, DjangoMessageMiddleware):
    pass
