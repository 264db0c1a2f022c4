"""Budget-check API v1: ``POST /api/v1/budget-checks/`` (pre-call check + reservation) and
``POST /api/v1/budget-checks/<id>/release/``, for API-key callers.

The check is the hot path of every agent call, so its input is validated by hand (a DRF serializer
costs more than the rest of the view); the serializers below only describe the API in the OpenAPI
schema. For the same reason both endpoints answer the common case — ``POST`` with an API key, a
JSON body and a JSON-accepting client — as plain Django views (:func:`budget_check_view`,
:func:`reservation_release_view`, ADR 0003 "Speed"); anything else is answered by the DRF views
below them, which the schema describes.
"""

import select
import uuid

from django.db import connection
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from budgets.errors import BudgetExceeded
from budgets.models import nanos_usd_text
from budgets.services import check_context, redis_store
from budgets.services.enforcement import CheckResult, budget_check, budget_line_payload, reservation_release
from config.api import FastJSONParser, fast_path_eligible, plain_error_response, plain_response, with_fast_path
from config.errors import ValidationFailed
from costs.api.authentication import ApiKeyAuthentication, HasApiKey, bearer_parts, request_scope
from costs.api.serializers import ApiErrorSerializer

CHECK_FIELDS = frozenset({"agent", "project", "sprint", "model", "prompt_tokens", "max_output_tokens", "request_id"})
# Far above any context window; keeps the worst case of any catalog rate inside a BIGINT counter.
MAX_TOKENS = 10**9
_STRINGS = {"agent": 200, "project": 100, "sprint": 100, "model": 255, "request_id": 128}


def budget_check_input_clean(data) -> dict:
    """The check's request body -> keyword arguments of :func:`budget_check`, or ValidationFailed
    with every field's problems. ``null`` means "not given" for the optional fields."""
    if not isinstance(data, dict):
        raise ValidationFailed(fields={"non_field_errors": ["Expected a JSON object."]})
    errors: dict[str, list[str]] = {key: ["Unknown field."] for key in data.keys() - CHECK_FIELDS}
    values: dict = {}
    for key, max_length in _STRINGS.items():
        value = data.get(key)
        if value is None:
            if key == "model":
                errors[key] = ["This field is required."]
            values[key] = None
        elif type(value) is not str:
            errors[key] = ["Must be a string."]
        elif not value.strip():
            errors[key] = ["May not be blank."]
        elif len(value) > max_length:
            errors[key] = [f"Ensure this field has no more than {max_length} characters."]
        elif "\x00" in value:
            errors[key] = ["May not contain NUL characters."]
        else:
            values[key] = value
    for key in ("prompt_tokens", "max_output_tokens"):
        value = data.get(key)
        if value is None:
            errors[key] = ["This field is required."]
        elif type(value) is not int:  # bool is an int subclass, and true is not a token count
            errors[key] = ["Must be an integer."]
        elif not 0 <= value <= MAX_TOKENS:
            errors[key] = [f"Must be between 0 and {MAX_TOKENS}."]
        else:
            values[key] = value
    if errors:
        raise ValidationFailed(fields={key: errors[key] for key in sorted(errors)})
    return values


def check_payload(result: CheckResult) -> dict:
    payload = {
        "decision": result.decision,
        "model": result.model,
        "reservation_id": str(result.reservation_id) if result.reservation_id is not None else None,
        "reserved_usd": nanos_usd_text(result.reserved_nanos),
        "expires_at": result.expires_at,
        "budgets": [budget_line_payload(line) for line in result.budgets],
    }
    if result.warnings:
        payload["warnings"] = result.warnings
    return payload


# --- OpenAPI description only -----------------------------------------------------------------


class BudgetCheckInputSerializer(serializers.Serializer):
    agent = serializers.CharField(required=False, help_text="Agent name; from the API key's scope when omitted.")
    project = serializers.SlugField(required=False, help_text="Project slug; from the API key's scope when omitted.")
    sprint = serializers.SlugField(
        required=False, help_text="Sprint slug; default: the project's sprint running now (organization time zone)."
    )
    model = serializers.CharField(help_text="The model the agent means to call (an agent's model override wins).")
    prompt_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, help_text="Estimated input tokens.")
    max_output_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS)
    request_id = serializers.CharField(
        required=False, max_length=128, help_text="The call's idempotency key: a repeat returns the same reservation."
    )


class BudgetLineSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    scope = serializers.ChoiceField(choices=["organization", "project", "sprint", "agent"])
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField(allow_null=True, help_text="Null: the budget never resets (total).")
    limit_usd = serializers.DecimalField(max_digits=30, decimal_places=9)
    spent_usd = serializers.DecimalField(max_digits=30, decimal_places=9)
    reserved_usd = serializers.DecimalField(max_digits=30, decimal_places=9, help_text="This reservation included.")
    remaining_usd = serializers.DecimalField(
        max_digits=30, decimal_places=9, help_text="limit - spent - reserved (negative when over the limit)."
    )
    status = serializers.ChoiceField(choices=["ok", "warning", "exceeded"])


class BudgetCheckSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["allow", "warn", "downgrade"])
    model = serializers.CharField(help_text="The model to call (differs from the request after a downgrade).")
    reservation_id = serializers.UUIDField(allow_null=True, help_text="Send it with the usage to settle it.")
    reserved_usd = serializers.DecimalField(max_digits=30, decimal_places=9)
    expires_at = serializers.DateTimeField(allow_null=True)
    budgets = BudgetLineSerializer(many=True)
    warnings = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="unpriced_model, budget_store_unavailable, budget_over_limit:<id>, budget_threshold:<id>:<pct>.",
    )


class ReleasedSerializer(serializers.Serializer):
    reservation_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["held", "settled", "released", "expired"])
    closed_at = serializers.DateTimeField(allow_null=True)


# --- views ------------------------------------------------------------------------------------


class CheckApiKeyAuthentication(ApiKeyAuthentication):
    """API keys through the check context cache: a key this process has seen may be used without a
    lookup; ``request.check_context_version`` then tells :func:`budget_check` the version the key
    is known valid at, and the check's reservation proceeds only if it still holds (a revoked key
    is refused by the next check, as with a lookup)."""

    def lookup(self, request, secret: str):
        api_key, request.check_context_version = check_context.api_key_for_check(secret=secret)
        return api_key


class BudgetCheckApi(APIView):
    authentication_classes = [CheckApiKeyAuthentication, SessionAuthentication]
    permission_classes = [HasApiKey]

    def get_authenticators(self):
        # The schema describes the cached authenticator as what it is to callers, the one API-key
        # scheme (drf-spectacular would otherwise register two classes under the "ApiKey" component).
        if getattr(self, "swagger_fake_view", False):
            return [ApiKeyAuthentication(), SessionAuthentication()]
        return super().get_authenticators()

    @extend_schema(
        summary="Check budgets and reserve the worst case before an LLM call",
        request=BudgetCheckInputSerializer,
        responses={
            201: OpenApiResponse(BudgetCheckSerializer, description="Reserved: allow, warn or downgrade."),
            200: OpenApiResponse(
                BudgetCheckSerializer,
                description="A repeated request_id (its held reservation), or fail-open with nothing reserved.",
            ),
            400: OpenApiResponse(ApiErrorSerializer, description="validation_error"),
            401: OpenApiResponse(ApiErrorSerializer, description="not_authenticated, invalid_api_key, api_key_revoked"),
            403: OpenApiResponse(ApiErrorSerializer, description="out_of_scope or api_key_required"),
            409: OpenApiResponse(ApiErrorSerializer, description="reservation_closed: request_id already settled"),
            429: OpenApiResponse(
                ApiErrorSerializer,
                description="budget_exceeded (error.budgets: the budgets at fault; Retry-After header) or agent_paused",
            ),
            503: OpenApiResponse(ApiErrorSerializer, description="budget_store_unavailable (fail closed)"),
        },
    )
    def post(self, request):
        scope = request_scope(request)
        values = budget_check_input_clean(request.data)
        result = budget_check(scope=scope, **values, context_version=getattr(request, "check_context_version", None))
        return Response(check_payload(result), status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        for name, value in _error_headers(exc).items():
            response[name] = value
        return response


class ReservationReleaseApi(APIView):
    permission_classes = [HasApiKey]

    @extend_schema(
        summary="Release an unused reservation",
        request=None,
        responses={
            200: ReleasedSerializer,
            404: OpenApiResponse(ApiErrorSerializer, description="not_found (also another organization's id)"),
        },
    )
    def post(self, request, reservation_id: uuid.UUID):
        """Give the held amount back. Idempotent: releasing again, or releasing a reservation already
        settled or expired, changes nothing and answers its current status."""
        reservation = reservation_release(scope=request_scope(request), reservation_id=reservation_id)
        return Response(released_payload(reservation))


def released_payload(reservation) -> dict:
    return {"reservation_id": str(reservation.pk), "status": reservation.status, "closed_at": reservation.closed_at}


def _error_headers(exc: Exception) -> dict[str, str]:
    if isinstance(exc, BudgetExceeded) and exc.retry_after is not None:
        return {"Retry-After": str(exc.retry_after)}
    return {}


# --- the plain Django fast paths --------------------------------------------------------------

# What DRF adds to every answer of these views (APIView.default_response_headers).
_ALLOW = {"Allow": "POST, OPTIONS"}
_check_authentication = CheckApiKeyAuthentication()
_key_authentication = ApiKeyAuthentication()
_parser = FastJSONParser()


def _check_fast(request: HttpRequest) -> HttpResponse | None:
    """``BudgetCheckApi.post`` without DRF, for a POST with ``Authorization: Bearer ...`` and a
    JSON body (the same authentication, parsing, validation, service call and error envelope,
    in the same order); None, before anything is done, for every other request."""
    if not check_fast_answers(request):
        return None
    return check_fast_serve(request)


def check_fast_serve(request: HttpRequest) -> HttpResponse | None:
    """:func:`_check_fast` for a request :func:`check_fast_answers` accepted."""
    if not redis_store.enabled():
        # (A cached check on the Redis store sends PostgreSQL nothing: no poll needed.)
        _connection_health_check_without_round_trip()
    try:
        found = _check_authentication.authenticate(request)
        if found is None:
            return None  # not an API key: session and anonymous callers get DRF's answers
        request.auth = found[1]
        scope = request_scope(request)
        # Read as DRF does (the request as a stream: no DATA_UPLOAD_MAX_MEMORY_SIZE on .body).
        values = budget_check_input_clean(_parser.parse(request))
        result = budget_check(scope=scope, **values, context_version=getattr(request, "check_context_version", None))
    except Exception as exc:
        response = plain_error_response(exc, headers={**_ALLOW, **_error_headers(exc)})
        if response is None:
            raise
        return response
    return plain_response(check_payload(result), status_code=201 if result.created else 200, headers=_ALLOW)


def check_fast_answers(request: HttpRequest) -> bool:
    """Whether :func:`_check_fast` answers ``request`` (else DRF does): a JSON-answered POST with a
    JSON body and a Bearer header. Decided from the headers alone, before the body is read, so the
    WSGI fast path (:mod:`budgets.api.wsgi_fast_path`) can hand every other request on untouched."""
    meta = request.META
    if not fast_path_eligible(request) or meta.get("CONTENT_TYPE", "").partition(";")[0].strip() != "application/json":
        return False
    try:
        if int(meta.get("CONTENT_LENGTH") or 0) <= 0:
            return False  # DRF reads no body then (data = {}); rare enough to leave to it
    except ValueError:
        return False
    return bearer_parts(request) is not None


def _release_fast(request: HttpRequest, reservation_id: uuid.UUID) -> HttpResponse | None:
    """``ReservationReleaseApi.post`` without DRF, for a POST with an API key (its body is not
    read); None for every other request."""
    if not fast_path_eligible(request):
        return None
    try:
        found = _key_authentication.authenticate(request)
        if found is None:
            return None
        request.auth = found[1]
        reservation = reservation_release(scope=request_scope(request), reservation_id=reservation_id)
    except Exception as exc:
        response = plain_error_response(exc, headers=_ALLOW)
        if response is None:
            raise
        return response
    return plain_response(released_payload(reservation), headers=_ALLOW)


def _connection_health_check_without_round_trip() -> None:
    """Django's ``CONN_HEALTH_CHECKS`` sends ``SELECT 1`` before the first query of every request
    on a persistent connection: a round trip costing about as much CPU as a cached check's only
    statement. A connection that died while idle (server restart, terminated backend, idle
    timeout) has something to read — the server's goodbye or end-of-file — because an idle
    healthy one, in autocommit and listening to nothing, gets nothing unsolicited. So the check
    first polls the socket: nothing to read means healthy (Django's check is marked done);
    anything else is left to Django's own check, which closes and reconnects. The window that
    remains (the server dies between this poll and the statement) is the same as between
    Django's ``SELECT 1`` and the statement."""
    raw = connection.connection
    if (
        connection.vendor != "postgresql"
        or raw is None
        or raw.closed
        or not connection.health_check_enabled
        or connection.health_check_done
        or getattr(connection, "pool", None) is not None
    ):
        return
    try:
        readable, _, _ = select.select([raw.fileno()], [], [], 0)
    except (OSError, ValueError):  # closed, or a descriptor select() cannot watch: Django checks
        return
    if not readable:
        connection.health_check_done = True


budget_check_view = with_fast_path(BudgetCheckApi.as_view(), _check_fast)
reservation_release_view = with_fast_path(ReservationReleaseApi.as_view(), _release_fast)
