"""Alerts API v1: ``GET /api/v1/alerts/`` (filters, paginated), ``GET /api/v1/alerts/<id>/``, and
``POST /api/v1/alerts/<id>/acknowledge/`` / ``.../resolve/`` for operators.

Who may do what (as for budgets): an API key reads the alerts of the budgets it may read and the
anomaly alerts inside its scope (another organization's alert is a 404); a staff user (session)
reads every organization's and acknowledges / resolves them. Acknowledged and resolved alerts stay
listed, with who and when.
"""

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from budgets.api.budgets import IsApiKeyReaderOrStaff, _actor
from budgets.models import AlertKind, AlertSeverity, AlertStatus, BudgetAlert, nanos_usd_text
from budgets.selectors import alert_queryset, alerts_visible
from budgets.services.alerts import alerts_acknowledge, alerts_resolve
from config.api import filterset_or_400
from config.errors import NotFound
from costs.api.authentication import request_scope
from costs.api.serializers import ApiErrorSerializer
from costs.models import ApiKey

_MONEY = 'USD as a decimal string, e.g. "12.5"; null when not applicable.'


def _alerts_for(request) -> QuerySet[BudgetAlert]:
    """Tenancy: keys through their scope; staff everything."""
    if isinstance(request.auth, ApiKey):
        return alerts_visible(scope=request_scope(request))
    return alert_queryset()


class AlertFilter(django_filters.FilterSet):
    organization = django_filters.CharFilter(field_name="organization__slug", label="organization slug")
    kind = django_filters.ChoiceFilter(choices=AlertKind.choices)
    severity = django_filters.ChoiceFilter(choices=AlertSeverity.choices)
    status = django_filters.ChoiceFilter(choices=AlertStatus.choices)
    budget = django_filters.NumberFilter(field_name="budget_id", label="budget id")
    fired_after = django_filters.IsoDateTimeFilter(field_name="fired_at", lookup_expr="gte")
    fired_before = django_filters.IsoDateTimeFilter(field_name="fired_at", lookup_expr="lt")

    class Meta:
        model = BudgetAlert
        fields = ["organization", "kind", "severity", "status", "budget", "fired_after", "fired_before"]


def _usd(nanos: int | None) -> str | None:
    return None if nanos is None else nanos_usd_text(nanos)


def alert_payload(alert: BudgetAlert) -> dict:
    """The public JSON form of an alert (money as decimal strings)."""
    return {
        "id": alert.pk,
        "organization": alert.organization.slug,
        "kind": alert.kind,
        "severity": alert.severity,
        "message": alert.message,
        "budget": alert.budget_id,
        "period_start": alert.period_start,
        "period_end": alert.period_end,
        "threshold_percent": alert.threshold_percent,
        "spend_usd": _usd(alert.spend_nanos),
        "limit_usd": _usd(alert.limit_nanos),
        "projected_usd": _usd(alert.projected_nanos),
        "projected_exhaustion_at": alert.projected_exhaustion_at,
        "project": alert.project.slug if alert.project_id else None,
        "agent": alert.agent.name if alert.agent_id else None,
        "window": alert.window or None,
        "window_start": alert.window_start,
        "baseline_usd": _usd(alert.baseline_nanos),
        "cutoff_usd": _usd(alert.cutoff_nanos),
        "fired_at": alert.fired_at,
        "status": alert.status,
        "acknowledged_at": alert.acknowledged_at,
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by_id else None,
        "resolved_at": alert.resolved_at,
        "resolved_by": alert.resolved_by.get_username() if alert.resolved_by_id else None,
        "deliveries": [
            {"channel": d.channel, "status": d.status, "attempts": d.attempts, "sent_at": d.sent_at}
            for d in sorted(alert.deliveries.all(), key=lambda d: d.channel)
        ],
    }


class AlertDeliveryOutputSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=["email", "webhook"])
    status = serializers.ChoiceField(choices=["pending", "sent", "failed", "gave_up"])
    attempts = serializers.IntegerField()
    sent_at = serializers.DateTimeField(allow_null=True)


class AlertOutputSerializer(serializers.Serializer):
    """Declares the answer's shape for the OpenAPI schema; answers are built by :func:`alert_payload`."""

    id = serializers.IntegerField()
    organization = serializers.SlugField()
    kind = serializers.ChoiceField(choices=AlertKind.choices)
    severity = serializers.ChoiceField(choices=AlertSeverity.choices)
    message = serializers.CharField()
    budget = serializers.IntegerField(allow_null=True, help_text="Threshold and forecast alerts.")
    period_start = serializers.DateTimeField(allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True)
    threshold_percent = serializers.IntegerField(allow_null=True)
    spend_usd = serializers.CharField(help_text="The period's settled spend (or the anomaly window's) when it fired.")
    limit_usd = serializers.CharField(allow_null=True, help_text=_MONEY)
    projected_usd = serializers.CharField(allow_null=True, help_text=f"Forecast at the period's end. {_MONEY}")
    projected_exhaustion_at = serializers.DateTimeField(allow_null=True)
    project = serializers.CharField(allow_null=True, help_text="Anomaly alerts: the project.")
    agent = serializers.CharField(allow_null=True, help_text="Anomaly alerts: the agent.")
    window = serializers.ChoiceField(choices=["hour", "day"], allow_null=True)
    window_start = serializers.DateTimeField(allow_null=True)
    baseline_usd = serializers.CharField(allow_null=True, help_text=_MONEY)
    cutoff_usd = serializers.CharField(allow_null=True, help_text=_MONEY)
    fired_at = serializers.DateTimeField()
    status = serializers.ChoiceField(choices=AlertStatus.choices)
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = serializers.CharField(allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)
    resolved_by = serializers.CharField(allow_null=True)
    deliveries = AlertDeliveryOutputSerializer(many=True)


_ERRORS = {
    401: OpenApiResponse(ApiErrorSerializer, description="not_authenticated, invalid_api_key or api_key_revoked"),
    403: OpenApiResponse(ApiErrorSerializer, description="operator_only (API keys cannot change alerts)"),
    404: OpenApiResponse(ApiErrorSerializer, description="not_found (also another organization's alert)"),
}


@extend_schema_view(
    get=extend_schema(
        summary="List alerts",
        description="Newest first. API keys see their scope's alerts; staff users every organization's.",
        responses={200: AlertOutputSerializer(many=True), 401: _ERRORS[401], 403: _ERRORS[403]},
    )
)
class AlertListApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    filterset_class = AlertFilter
    serializer_class = AlertOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return BudgetAlert.objects.none()
        return _alerts_for(self.request)

    def get(self, request):
        filterset = filterset_or_400(AlertFilter, request, self.get_queryset())
        page = self.paginate_queryset(filterset.qs.order_by("-fired_at", "-id"))
        return self.get_paginated_response([alert_payload(alert) for alert in page])


def _alert(request, pk: int) -> BudgetAlert:
    alert = _alerts_for(request).filter(pk=pk).first()
    if alert is None:
        raise NotFound("No such alert.")
    return alert


@extend_schema_view(
    get=extend_schema(summary="Get an alert", responses={200: AlertOutputSerializer, **_ERRORS}),
)
class AlertDetailApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    serializer_class = AlertOutputSerializer

    def get(self, request, pk: int):
        return Response(alert_payload(_alert(request, pk)))


class _AlertMoveApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    serializer_class = AlertOutputSerializer
    move = None

    def post(self, request, pk: int):
        alert = _alert(request, pk)
        type(self).move(alerts=[alert], actor=_actor(request))
        return Response(alert_payload(alert_queryset().get(pk=alert.pk)))


@extend_schema_view(
    post=extend_schema(
        summary="Acknowledge an alert (staff)",
        description="Open -> acknowledged, with who and when. Acknowledging again changes nothing.",
        request=None,
        responses={200: AlertOutputSerializer, **_ERRORS},
    )
)
class AlertAcknowledgeApi(_AlertMoveApi):
    move = alerts_acknowledge


@extend_schema_view(
    post=extend_schema(
        summary="Resolve an alert (staff)",
        description="Open or acknowledged -> resolved, with who and when. Resolving again changes nothing.",
        request=None,
        responses={200: AlertOutputSerializer, **_ERRORS},
    )
)
class AlertResolveApi(_AlertMoveApi):
    move = alerts_resolve
