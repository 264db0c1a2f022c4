"""Recommendations API v1: ``GET /api/v1/recommendations/`` (filters, paginated, best first),
``GET /api/v1/recommendations/<id>/``, and for operators ``POST .../<id>/accept/``,
``.../reject/`` (``{"reason": "..."}``), ``.../implement/`` (optional ``implemented_at``) and
``.../verify/`` (measure realized savings from the ledger).

Who may do what (as for budgets and alerts): an API key reads the recommendations inside its scope
(another organization's is a 404); a staff user (session) reads every organization's and acts on
them. Repeating an action already taken changes nothing; an impossible move is a 409
``invalid_transition``.
"""

import django_filters
from django.db.models import Q, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from budgets.api.budgets import IsApiKeyReaderOrStaff as _BudgetsReaderOrStaff
from budgets.api.budgets import _actor
from config.api import filterset_or_400
from config.errors import NotFound, ValidationFailed
from costs.api.authentication import request_scope
from costs.api.serializers import ApiErrorSerializer
from costs.models import ApiKey
from pricing.calculator import format_usd
from recommendations.models import Confidence, Effort, Recommendation, RecommendationKind, RecommendationStatus
from recommendations.selectors import recommendation_queryset
from recommendations.services.lifecycle import (
    recommendation_accept,
    recommendation_implement,
    recommendation_reject,
)
from recommendations.services.realized import recommendation_verify

_MONEY = 'USD as a decimal string, e.g. "12.5".'


class IsApiKeyReaderOrStaff(_BudgetsReaderOrStaff):
    """The budgets API's rule (API keys read, staff sessions act), refused in this API's words."""

    resource = "recommendations"
    operators_do = "act on them"


def _visible(request) -> QuerySet[Recommendation]:
    """Tenancy: an API key sees its organization's (a project key its project's, an agent key its
    agent's); staff users every organization's."""
    recs = recommendation_queryset()
    if not isinstance(request.auth, ApiKey):
        return recs
    scope = request_scope(request)
    recs = recs.filter(organization=scope.organization)
    if scope.agent is not None:
        return recs.filter(agent=scope.agent)
    if scope.project is not None:
        return recs.filter(Q(project=scope.project) | Q(agent__project=scope.project))
    return recs


class RecommendationFilter(django_filters.FilterSet):
    organization = django_filters.CharFilter(field_name="organization__slug", label="organization slug")
    kind = django_filters.ChoiceFilter(choices=RecommendationKind.choices)
    status = django_filters.ChoiceFilter(choices=RecommendationStatus.choices)
    confidence = django_filters.ChoiceFilter(choices=Confidence.choices)
    effort = django_filters.ChoiceFilter(choices=Effort.choices)
    project = django_filters.CharFilter(field_name="project__slug", label="project slug")
    agent = django_filters.CharFilter(field_name="agent__name", label="agent name")
    min_saving_usd = django_filters.NumberFilter(
        field_name="estimated_monthly_saving_usd", lookup_expr="gte", label="estimated monthly saving >= this (USD)"
    )

    class Meta:
        model = Recommendation
        fields = ["organization", "kind", "status", "confidence", "effort", "project", "agent", "min_saving_usd"]


def _usd(amount) -> str | None:
    return None if amount is None else format_usd(amount)


def recommendation_payload(rec: Recommendation) -> dict:
    """The public JSON form of a recommendation (money as decimal strings)."""
    return {
        "id": rec.pk,
        "organization": rec.organization.slug,
        "kind": rec.kind,
        "scope": "agent" if rec.agent_id else ("project" if rec.project_id else "organization"),
        "project": rec.project.slug if rec.project_id else None,
        "agent": rec.agent.name if rec.agent_id else None,
        "operation": rec.operation or None,
        "model": rec.model or None,
        "provider": rec.provider or None,
        "target": rec.target or None,
        "title": rec.title,
        "explanation": rec.explanation,
        "evidence": rec.evidence,
        "window_start": rec.window_start,
        "window_end": rec.window_end,
        "baseline_requests": rec.baseline_requests,
        "baseline_cost_usd": _usd(rec.baseline_cost_usd),
        "estimated_monthly_saving_usd": _usd(rec.estimated_monthly_saving_usd),
        "confidence": rec.confidence,
        "effort": rec.effort,
        "priority_score": format_usd(rec.priority_score),
        "status": rec.status,
        "status_reason": rec.status_reason or None,
        "status_changed_at": rec.status_changed_at,
        "status_changed_by": rec.status_changed_by_label or None,
        "implemented_at": rec.implemented_at,
        "realized_monthly_saving_usd": _usd(rec.realized_monthly_saving_usd),
        "realized_measured_at": rec.realized_measured_at,
        "realized_evidence": rec.realized_evidence or None,
        "created_at": rec.created_at,
        "refreshed_at": rec.refreshed_at,
    }


class RecommendationOutputSerializer(serializers.Serializer):
    """Declares the answer's shape for the OpenAPI schema; answers are built by :func:`recommendation_payload`."""

    id = serializers.IntegerField()
    organization = serializers.SlugField()
    kind = serializers.ChoiceField(choices=RecommendationKind.choices)
    scope = serializers.ChoiceField(choices=["organization", "project", "agent"])
    project = serializers.CharField(allow_null=True)
    agent = serializers.CharField(allow_null=True)
    operation = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True, help_text="The model of the traffic it is about.")
    provider = serializers.CharField(allow_null=True)
    target = serializers.CharField(allow_null=True, help_text="What it proposes: a model, a provider, a cap.")
    title = serializers.CharField()
    explanation = serializers.CharField()
    evidence = serializers.DictField(help_text="The numbers behind the estimate (money as decimal strings).")
    window_start = serializers.DateTimeField(help_text="The observation (baseline) window.")
    window_end = serializers.DateTimeField()
    baseline_requests = serializers.IntegerField()
    baseline_cost_usd = serializers.CharField(help_text=_MONEY)
    estimated_monthly_saving_usd = serializers.CharField(help_text=f"Per 30 days. {_MONEY}")
    confidence = serializers.ChoiceField(choices=Confidence.choices)
    effort = serializers.ChoiceField(choices=Effort.choices)
    priority_score = serializers.CharField(help_text="saving x confidence weight / effort weight (ADR 0007).")
    status = serializers.ChoiceField(choices=RecommendationStatus.choices)
    status_reason = serializers.CharField(allow_null=True)
    status_changed_at = serializers.DateTimeField(allow_null=True)
    status_changed_by = serializers.CharField(allow_null=True)
    implemented_at = serializers.DateTimeField(allow_null=True)
    realized_monthly_saving_usd = serializers.CharField(allow_null=True, help_text=f"Measured. {_MONEY}")
    realized_measured_at = serializers.DateTimeField(allow_null=True)
    realized_evidence = serializers.DictField(allow_null=True)
    created_at = serializers.DateTimeField()
    refreshed_at = serializers.DateTimeField()


class RejectInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class ImplementInputSerializer(serializers.Serializer):
    implemented_at = serializers.DateTimeField(required=False, help_text="Default: now.")


_ERRORS = {
    401: OpenApiResponse(ApiErrorSerializer, description="not_authenticated, invalid_api_key or api_key_revoked"),
    403: OpenApiResponse(ApiErrorSerializer, description="operator_only (API keys cannot act on recommendations)"),
    404: OpenApiResponse(ApiErrorSerializer, description="not_found (also another organization's)"),
}
_CONFLICT = {409: OpenApiResponse(ApiErrorSerializer, description="invalid_transition / not_measurable")}


@extend_schema_view(
    get=extend_schema(
        summary="List recommendations",
        description="Highest priority first. API keys see their scope's; staff users every organization's.",
        responses={200: RecommendationOutputSerializer(many=True), 401: _ERRORS[401], 403: _ERRORS[403]},
    )
)
class RecommendationListApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    filterset_class = RecommendationFilter
    serializer_class = RecommendationOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return Recommendation.objects.none()
        return _visible(self.request)

    def get(self, request):
        filterset = filterset_or_400(RecommendationFilter, request, self.get_queryset())
        page = self.paginate_queryset(filterset.qs)
        return self.get_paginated_response([recommendation_payload(rec) for rec in page])


def _recommendation(request, pk: int) -> Recommendation:
    rec = _visible(request).filter(pk=pk).first()
    if rec is None:
        raise NotFound("No such recommendation.")
    return rec


def _answer(rec: Recommendation) -> Response:
    return Response(recommendation_payload(recommendation_queryset().get(pk=rec.pk)))


@extend_schema_view(
    get=extend_schema(summary="Get a recommendation", responses={200: RecommendationOutputSerializer, **_ERRORS}),
)
class RecommendationDetailApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    serializer_class = RecommendationOutputSerializer

    def get(self, request, pk: int):
        return Response(recommendation_payload(_recommendation(request, pk)))


@extend_schema_view(
    post=extend_schema(
        summary="Accept a recommendation (staff)",
        description="Open or expired -> accepted. Accepting again changes nothing.",
        request=None,
        responses={200: RecommendationOutputSerializer, **_ERRORS, **_CONFLICT},
    )
)
class RecommendationAcceptApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    serializer_class = RecommendationOutputSerializer

    def post(self, request, pk: int):
        rec = recommendation_accept(recommendation=_recommendation(request, pk), actor=_actor(request))
        return _answer(rec)


@extend_schema_view(
    post=extend_schema(
        summary="Reject a recommendation (staff)",
        description="Open, accepted or expired -> rejected, with the reason. Not suggested again.",
        request=RejectInputSerializer,
        responses={200: RecommendationOutputSerializer, **_ERRORS, **_CONFLICT},
    )
)
class RecommendationRejectApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    serializer_class = RejectInputSerializer

    def post(self, request, pk: int):
        rec = _recommendation(request, pk)
        data = RejectInputSerializer(data=request.data)
        if not data.is_valid():
            raise ValidationFailed(fields=data.errors)
        rec = recommendation_reject(recommendation=rec, reason=data.validated_data["reason"], actor=_actor(request))
        return _answer(rec)


@extend_schema_view(
    post=extend_schema(
        summary="Mark a recommendation implemented (staff)",
        description="Realized savings are measured from ``implemented_at`` (default now) on.",
        request=ImplementInputSerializer,
        responses={200: RecommendationOutputSerializer, **_ERRORS, **_CONFLICT},
    )
)
class RecommendationImplementApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    serializer_class = ImplementInputSerializer

    def post(self, request, pk: int):
        rec = _recommendation(request, pk)
        data = ImplementInputSerializer(data=request.data)
        if not data.is_valid():
            raise ValidationFailed(fields=data.errors)
        rec = recommendation_implement(
            recommendation=rec, implemented_at=data.validated_data.get("implemented_at"), actor=_actor(request)
        )
        return _answer(rec)


@extend_schema_view(
    post=extend_schema(
        summary="Measure a recommendation's realized savings (staff)",
        description="Implemented only: compares the ledger since implementation with the baseline window (ADR 0007).",
        request=None,
        responses={200: RecommendationOutputSerializer, **_ERRORS, **_CONFLICT},
    )
)
class RecommendationVerifyApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    serializer_class = RecommendationOutputSerializer

    def post(self, request, pk: int):
        return _answer(recommendation_verify(recommendation=_recommendation(request, pk)))
