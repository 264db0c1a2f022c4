"""Usage API v1: record usage (single or batch) and read the ledger, for API-key callers."""

from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError, OutOfScope, ValidationFailed
from costs.api.authentication import HasApiKey, request_scope
from costs.api.filters import UsageRecordFilter
from costs.api.serializers import (
    ApiErrorSerializer,
    IngestedBatchSerializer,
    IngestedRecordSerializer,
    UsageBatchInputSerializer,
    UsageInputSerializer,
    UsageRecordSerializer,
    usage_record_payload,
    usage_record_payloads,
    usage_record_summaries,
)
from costs.models import UsageRecord
from costs.selectors import usage_record_get, usage_records_visible
from costs.services.ingest import usage_ingest

_ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="validation_error, batch_too_large or malformed_json"),
    401: OpenApiResponse(ApiErrorSerializer, description="not_authenticated, invalid_api_key or api_key_revoked"),
    403: OpenApiResponse(ApiErrorSerializer, description="out_of_scope or api_key_required"),
}
_INGEST_REQUEST = PolymorphicProxySerializer(
    component_name="UsageIngestRequest",
    serializers=[UsageInputSerializer, UsageBatchInputSerializer],
    resource_type_field_name=None,
)
_INGEST_RESPONSE = PolymorphicProxySerializer(
    component_name="UsageIngestResponse",
    serializers=[IngestedRecordSerializer, IngestedBatchSerializer],
    resource_type_field_name=None,
)


class UsageApi(GenericAPIView):
    permission_classes = [HasApiKey]
    filterset_class = UsageRecordFilter
    serializer_class = UsageRecordSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return UsageRecord.objects.none()
        return usage_records_visible(scope=request_scope(self.request))

    @extend_schema(
        summary="List usage records",
        description="The ledger within the API key's scope (organization, project or agent), newest first.",
        responses={200: UsageRecordSerializer(many=True), 401: _ERRORS[401], 403: _ERRORS[403]},
    )
    def get(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(usage_record_payloads((row, None) for row in page))

    @extend_schema(
        summary="Record usage",
        request=_INGEST_REQUEST,
        responses={
            201: OpenApiResponse(_INGEST_RESPONSE, description="Recorded (a batch: at least one record was new)."),
            200: OpenApiResponse(_INGEST_RESPONSE, description="Replay: every record already existed."),
            **_ERRORS,
        },
    )
    def post(self, request):
        """Record one usage object, or ``{"records": [...]}`` (up to 1,000; all or nothing).

        A single object is answered with its full ledger row; a batch with ``{"records": [...]}`` in
        input order, each a summary (id, replayed, project, sprint, agent, model, cost_usd,
        cost_source, price_id) — the full rows are at ``GET /api/v1/usage/<id>/``.

        Idempotent on ``request_id`` (unique per organization): a replay answers the row recorded
        first — ``200`` for a single object, ``"replayed": true`` per record in a batch (a batch
        answers ``201`` if any record was new, else ``200``). A replay whose content differs from the
        original still answers the original and changes nothing: the ledger is append-only, and the
        first report of a request wins. Send a correction under a new ``request_id``.
        """
        scope = request_scope(request)
        body = request.data
        single = not (isinstance(body, dict) and "records" in body)
        if single:
            if not isinstance(body, dict):
                raise ValidationFailed(fields={"non_field_errors": ['Expected a usage object or {"records": [...]}.']})
            records = [body]
        else:
            unknown = body.keys() - {"records"}
            if unknown:
                raise ValidationFailed(fields={str(key): ["Unknown field."] for key in sorted(unknown)})
            records = body["records"]
        try:
            ingested = usage_ingest(api_key=scope.api_key, records=records)
        except (ValidationFailed, OutOfScope) as exc:
            raise _single_record_error(exc) if single else exc from None

        if single:
            item = ingested[0]
            return Response(
                usage_record_payload(item.row, replayed=item.replayed),
                status=status.HTTP_200_OK if item.replayed else status.HTTP_201_CREATED,
            )
        any_new = any(not item.replayed for item in ingested)
        return Response(
            {"records": usage_record_summaries((item.row, item.replayed) for item in ingested)},
            status=status.HTTP_201_CREATED if any_new else status.HTTP_200_OK,
        )


class UsageDetailApi(APIView):
    permission_classes = [HasApiKey]

    @extend_schema(
        summary="Get a usage record",
        responses={
            200: UsageRecordSerializer,
            404: OpenApiResponse(ApiErrorSerializer, description="not_found (also rows outside the key's scope)"),
            401: _ERRORS[401],
            403: _ERRORS[403],
        },
    )
    def get(self, request, pk: int):
        row = usage_record_get(scope=request_scope(request), pk=pk)
        return Response(usage_record_payload(row))


def _single_record_error(exc: ApplicationError) -> ApplicationError:
    """The service indexes errors by record (``{"records": {"0": {...}}}``); a single object's
    answer names its fields directly."""
    per_record = exc.fields.get("records")
    if not isinstance(per_record, dict) or set(per_record) != {"0"}:
        return exc
    return type(exc)(code=exc.code, fields=per_record["0"])
