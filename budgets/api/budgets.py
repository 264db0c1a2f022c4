"""Budgets API v1: budgets with their live status, for agents (read) and operators (read and write).

Who may do what:

- an **API key** reads the budgets that cover what it may spend on (see
  :func:`budgets.selectors.budgets_visible`); another organization's budget is a 404. Keys never write.
- a **staff user** (session login, ``is_staff``) reads and writes budgets of any organization; the
  body names the organization by slug. Other session logins are refused (403 ``operator_only``).

A budget's node is named as in usage: ``project`` (slug), plus ``sprint`` (slug) or ``agent`` (name)
inside it; none of them for an organization budget. The most specific one named is the node.
"""

import django_filters
from django.db.models import Q, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response

from budgets.models import Budget, BudgetScope, Enforcement, ExceededAction, PeriodKind
from budgets.selectors import BudgetLive, LiveStatus, budget_queryset, budgets_live, budgets_visible
from budgets.services.budgets import budget_create, budget_delete, budget_node_resolve, budget_update
from config.api import filterset_or_400
from config.errors import NotFound, OutOfScope, ValidationFailed
from costs.api.authentication import request_scope
from costs.api.serializers import ApiErrorSerializer
from costs.models import ApiKey, Organization
from pricing.calculator import format_usd

_MONEY = 'USD as a decimal string, e.g. "12.5".'


# --- Who may call -----------------------------------------------------------------------------


class IsApiKeyReaderOrStaff(BasePermission):
    """API keys may read; staff session users may read and write; anyone else is refused. Other APIs
    with the same rule subclass it to name their own resource in the refusals."""

    resource = "budgets"
    operators_do = "change them"

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            if request.method in SAFE_METHODS:
                return True
            raise OutOfScope(
                f"API keys may only read {self.resource}; operators {self.operators_do}.", code="operator_only"
            )
        user = request.user
        if user is not None and user.is_authenticated:
            if user.is_staff:
                return True
            raise OutOfScope(
                f"Only staff users may use the {self.resource} API with a session login.", code="operator_only"
            )
        return False  # DRF answers 401 not_authenticated


def _budgets_for(request) -> QuerySet[Budget]:
    """Tenancy: what the caller may see (keys through their scope; staff everything)."""
    if isinstance(request.auth, ApiKey):
        return budgets_visible(scope=request_scope(request))
    return budget_queryset()


def _actor(request):
    return request.user if request.user is not None and request.user.is_authenticated else None


# --- Filters ----------------------------------------------------------------------------------


class BudgetFilter(django_filters.FilterSet):
    organization = django_filters.CharFilter(field_name="organization__slug", label="organization slug")
    scope = django_filters.ChoiceFilter(choices=BudgetScope.choices, method="filter_scope")
    project = django_filters.CharFilter(
        method="filter_project", label="project slug: budgets on the project, its sprints and its agents"
    )
    sprint = django_filters.CharFilter(field_name="sprint__slug", label="sprint slug")
    agent = django_filters.CharFilter(field_name="agent__name", label="agent name")
    period = django_filters.ChoiceFilter(choices=PeriodKind.choices)
    enforcement = django_filters.ChoiceFilter(choices=Enforcement.choices)
    # Computed from live spend: applied by the view through the selector, not in SQL.
    status = django_filters.ChoiceFilter(
        choices=[(value, value) for value in LiveStatus.values], method="filter_status", label="live status"
    )
    is_active = django_filters.BooleanFilter()

    class Meta:
        model = Budget
        fields = ["organization", "scope", "project", "sprint", "agent", "period", "enforcement", "status", "is_active"]

    def filter_scope(self, queryset, name, value):
        nodes = {
            BudgetScope.ORGANIZATION: Q(project__isnull=True, sprint__isnull=True, agent__isnull=True),
            BudgetScope.PROJECT: Q(project__isnull=False),
            BudgetScope.SPRINT: Q(sprint__isnull=False),
            BudgetScope.AGENT: Q(agent__isnull=False),
        }
        return queryset.filter(nodes[value])

    def filter_project(self, queryset, name, value):
        return queryset.filter(Q(project__slug=value) | Q(sprint__project__slug=value) | Q(agent__project__slug=value))

    def filter_status(self, queryset, name, value):
        return queryset


# --- Shapes -----------------------------------------------------------------------------------


def budget_payload(live: BudgetLive) -> dict:
    """The public JSON form of a budget with its live status (money as decimal strings)."""
    budget = live.budget
    node_project = (
        budget.project or (budget.sprint and budget.sprint.project) or (budget.agent and budget.agent.project)
    )
    return {
        "id": budget.pk,
        "organization": budget.organization.slug,
        "scope": str(budget.scope),
        "project": node_project.slug if node_project else None,
        "sprint": budget.sprint.slug if budget.sprint_id else None,
        "agent": budget.agent.name if budget.agent_id else None,
        "name": budget.name,
        "limit_usd": format_usd(budget.limit_usd),
        "period": budget.period,
        "custom_start": budget.custom_start,
        "custom_end": budget.custom_end,
        "timezone": budget.timezone,
        "model_filter": budget.model_filter,
        "enforcement": budget.enforcement,
        "grace_percent": format_usd(budget.grace_percent),
        "thresholds": budget.thresholds,
        "action": budget.action,
        "downgrade_model": budget.downgrade_model,
        "is_active": budget.is_active,
        "alert_emails": budget.alert_emails,
        "period_start": live.period_start,
        "period_end": live.period_end,
        "spent_usd": format_usd(live.spent_usd),
        "reserved_usd": format_usd(live.reserved_usd),
        "remaining_usd": format_usd(live.remaining_usd),
        "status": live.status,
        "created_at": budget.created_at,
        "updated_at": budget.updated_at,
    }


class BudgetOutputSerializer(serializers.Serializer):
    """Declares the answer's shape for the OpenAPI schema; answers are built by :func:`budget_payload`."""

    id = serializers.IntegerField()
    organization = serializers.SlugField()
    scope = serializers.ChoiceField(choices=BudgetScope.choices)
    project = serializers.CharField(allow_null=True, help_text="The node's project (also for sprint/agent budgets).")
    sprint = serializers.CharField(allow_null=True)
    agent = serializers.CharField(allow_null=True)
    name = serializers.CharField()
    limit_usd = serializers.CharField(help_text=_MONEY)
    period = serializers.ChoiceField(choices=PeriodKind.choices)
    custom_start = serializers.DateTimeField(allow_null=True)
    custom_end = serializers.DateTimeField(allow_null=True)
    timezone = serializers.CharField()
    model_filter = serializers.CharField()
    enforcement = serializers.ChoiceField(choices=Enforcement.choices)
    grace_percent = serializers.CharField(help_text="Percent as a decimal string.")
    thresholds = serializers.ListField(child=serializers.IntegerField())
    action = serializers.ChoiceField(choices=ExceededAction.choices)
    downgrade_model = serializers.CharField()
    is_active = serializers.BooleanField()
    alert_emails = serializers.CharField(help_text="Who else hears of its alerts (comma-separated e-mails).")
    period_start = serializers.DateTimeField(allow_null=True, help_text="Current period; null when there is none.")
    period_end = serializers.DateTimeField(allow_null=True, help_text="Null for open-ended ('total') periods.")
    spent_usd = serializers.CharField(help_text=f"Settled spend in the current period. {_MONEY}")
    reserved_usd = serializers.CharField(help_text=f"Held by in-flight requests. {_MONEY}")
    remaining_usd = serializers.CharField(help_text=f"limit - spent - reserved, never below 0. {_MONEY}")
    status = serializers.ChoiceField(choices=[(v, v) for v in LiveStatus.values])
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class BudgetInputSerializer(serializers.Serializer):
    organization = serializers.SlugField(help_text="Organization slug (fixed once created).")
    project = serializers.SlugField(required=False, allow_null=True, allow_blank=True)
    sprint = serializers.SlugField(required=False, allow_null=True, allow_blank=True, help_text="Needs project.")
    agent = serializers.CharField(
        max_length=200, required=False, allow_null=True, allow_blank=True, help_text="Needs project."
    )
    name = serializers.CharField(max_length=200)
    limit_usd = serializers.DecimalField(max_digits=18, decimal_places=6, help_text=_MONEY)
    period = serializers.ChoiceField(choices=PeriodKind.choices, required=False)
    custom_start = serializers.DateTimeField(required=False, allow_null=True)
    custom_end = serializers.DateTimeField(required=False, allow_null=True)
    timezone = serializers.CharField(max_length=64, required=False)
    model_filter = serializers.CharField(max_length=255, required=False, allow_blank=True)
    enforcement = serializers.ChoiceField(choices=Enforcement.choices, required=False)
    grace_percent = serializers.DecimalField(max_digits=5, decimal_places=2, required=False)
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000), required=False, max_length=20
    )
    action = serializers.ChoiceField(choices=ExceededAction.choices, required=False)
    downgrade_model = serializers.CharField(max_length=255, required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)
    alert_emails = serializers.CharField(
        required=False, allow_blank=True, help_text="Comma-separated e-mails that receive this budget's alerts."
    )

    def validate(self, attrs):
        unknown = set(self.initial_data) - set(self.fields) if isinstance(self.initial_data, dict) else set()
        if unknown:
            raise serializers.ValidationError({field: ["Unknown field."] for field in sorted(unknown)})
        return attrs


_NODE = ("project", "sprint", "agent")
_ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="validation_error"),
    401: OpenApiResponse(ApiErrorSerializer, description="not_authenticated, invalid_api_key or api_key_revoked"),
    403: OpenApiResponse(ApiErrorSerializer, description="operator_only (API keys and non-staff users cannot write)"),
    404: OpenApiResponse(ApiErrorSerializer, description="not_found (also another organization's budget)"),
}


def _valid(data, *, partial: bool) -> dict:
    serializer = BudgetInputSerializer(data=data, partial=partial)
    if not serializer.is_valid():
        raise ValidationFailed(fields=serializer.errors)
    return dict(serializer.validated_data)


def _node(organization: Organization, data: dict) -> dict:
    return budget_node_resolve(
        organization=organization,
        project=data.pop("project", None) or None,
        sprint=data.pop("sprint", None) or None,
        agent=data.pop("agent", None) or None,
    )


# --- Views ------------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        summary="List budgets with their live status",
        description="API keys see the budgets covering their scope; staff users see every organization's. "
        "`status` is computed from live spend (ok, warning, exceeded, inactive).",
        responses={200: BudgetOutputSerializer(many=True), 401: _ERRORS[401], 403: _ERRORS[403]},
    ),
    post=extend_schema(
        summary="Create a budget (staff)",
        request=BudgetInputSerializer,
        responses={201: BudgetOutputSerializer, **{code: _ERRORS[code] for code in (400, 401, 403)}},
    ),
)
class BudgetListApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    filterset_class = BudgetFilter
    serializer_class = BudgetOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return Budget.objects.none()
        return _budgets_for(self.request).order_by("organization__name", "name", "id")

    def get(self, request):
        filterset = filterset_or_400(BudgetFilter, request, self.get_queryset())
        wanted = filterset.form.cleaned_data.get("status") or None
        if wanted is None:
            page = self.paginate_queryset(filterset.qs)
            items = budgets_live(budgets=page)
        else:
            # The status is computed: work it out for every matching budget, then page the result.
            items = self.paginate_queryset([b for b in budgets_live(budgets=filterset.qs) if b.status == wanted])
        return self.get_paginated_response([budget_payload(item) for item in items])

    def post(self, request):
        data = _valid(request.data, partial=False)
        organization = Organization.objects.filter(slug=data.pop("organization")).first()
        if organization is None:
            raise ValidationFailed(fields={"organization": ["No such organization."]})
        node = _node(organization, data)
        budget = budget_create(organization=organization, **node, **data, actor=_actor(request))
        return Response(_live(budget.pk), status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        summary="Get a budget with its live status",
        responses={200: BudgetOutputSerializer, **{code: _ERRORS[code] for code in (401, 403, 404)}},
    ),
    patch=extend_schema(
        summary="Change a budget (staff)",
        description="Send only the fields to change. To move the budget to another node, send the node "
        "as on create (`project` plus `sprint` or `agent`). Limit changes apply to the current period at "
        "once; changes of period, time zone, model filter or node restart live spend from the ledger.",
        request=BudgetInputSerializer(partial=True),
        responses={200: BudgetOutputSerializer, **_ERRORS},
    ),
    delete=extend_schema(
        summary="Delete a budget (staff)",
        responses={204: None, **{code: _ERRORS[code] for code in (401, 403, 404)}},
    ),
)
class BudgetDetailApi(GenericAPIView):
    permission_classes = [IsApiKeyReaderOrStaff]
    serializer_class = BudgetOutputSerializer

    def _get(self, request, pk: int) -> Budget:
        budget = _budgets_for(request).filter(pk=pk).first()
        if budget is None:
            raise NotFound("No such budget.")
        return budget

    def get(self, request, pk: int):
        return Response(budget_payload(budgets_live(budgets=[self._get(request, pk)])[0]))

    def patch(self, request, pk: int):
        budget = self._get(request, pk)
        data = _valid(request.data, partial=True)
        if "organization" in data and data.pop("organization") != budget.organization.slug:
            raise ValidationFailed(fields={"organization": ["A budget cannot move to another organization."]})
        if any(field in data for field in _NODE):
            data.update(_node(budget.organization, data))
        budget_update(budget=budget, data=data, actor=_actor(request))
        return Response(_live(budget.pk))

    def delete(self, request, pk: int):
        budget_delete(budget=self._get(request, pk), actor=_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _live(pk: int) -> dict:
    return budget_payload(budgets_live(budgets=[budget_queryset().get(pk=pk)])[0])
