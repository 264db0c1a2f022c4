"""Budget reports API v1 (issue 6): ``GET /api/v1/reports/budgets/`` (each budget's current period
projected to its end, with an uncertainty band) and ``GET /api/v1/reports/anomalies/`` (recent anomaly
alerts). Callers, parameters, CSV and errors as for the spend reports (:mod:`costs.api.reports`):
API keys within their scope, staff sessions with ``?organization=<slug>``, ``?format=csv``.
"""

from datetime import timedelta

from drf_spectacular.utils import extend_schema
from rest_framework import serializers

from budgets.models import AlertStatus, AnomalyWindow, BudgetScope, PeriodKind, nanos_usd_text
from budgets.selectors import (
    BudgetProjection,
    ProjectionStatus,
    anomalies_recent,
    budget_projections,
    budget_queryset,
    budgets_visible,
)
from costs.analytics import MAX_RANGE_DAYS, check_range, local_midnight
from costs.api.authentication import request_scope
from costs.api.reports import (
    PAGINATION_PARAMETERS,
    ReportApi,
    ReportInputSerializer,
    parse,
    range_payload,
    report_responses,
    report_scope,
)
from costs.models import ApiKey

_MONEY = 'USD as a decimal string, e.g. "12.5".'


def _usd(nanos: int | None) -> str | None:
    return None if nanos is None else nanos_usd_text(nanos)


def projection_payload(item: BudgetProjection) -> dict:
    live, budget = item.live, item.live.budget
    node_project = (
        budget.project or (budget.sprint and budget.sprint.project) or (budget.agent and budget.agent.project)
    )
    return {
        "id": budget.pk,
        "name": budget.name,
        "scope": str(budget.scope),
        "project": node_project.slug if node_project else None,
        "sprint": budget.sprint.slug if budget.sprint_id else None,
        "agent": budget.agent.name if budget.agent_id else None,
        "model_filter": budget.model_filter,
        "period": budget.period,
        "period_start": live.period_start,
        "period_end": live.period_end,
        "limit_usd": _usd(live.limit_nanos),
        "spent_usd": _usd(live.spent_nanos),
        "burn_rate_usd_per_day": _usd(item.burn_nanos_per_day),
        "projected_usd": _usd(item.projected_nanos),
        "projected_low_usd": _usd(item.low_nanos),
        "projected_high_usd": _usd(item.high_nanos),
        "projected_exhaustion_at": item.exhaustion_at,
        "status": item.status,
    }


PROJECTION_COLUMNS = (
    "id",
    "name",
    "scope",
    "project",
    "sprint",
    "agent",
    "model_filter",
    "period",
    "period_start",
    "period_end",
    "limit_usd",
    "spent_usd",
    "burn_rate_usd_per_day",
    "projected_usd",
    "projected_low_usd",
    "projected_high_usd",
    "projected_exhaustion_at",
    "status",
)


class ProjectionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    scope = serializers.ChoiceField(choices=BudgetScope.choices)
    project = serializers.CharField(allow_null=True)
    sprint = serializers.CharField(allow_null=True)
    agent = serializers.CharField(allow_null=True)
    model_filter = serializers.CharField()
    period = serializers.ChoiceField(choices=PeriodKind.choices)
    period_start = serializers.DateTimeField(allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True)
    limit_usd = serializers.CharField(help_text=_MONEY)
    spent_usd = serializers.CharField(help_text=f"Settled spend of the current period. {_MONEY}")
    burn_rate_usd_per_day = serializers.CharField(allow_null=True, help_text="Over the last 7 local days.")
    projected_usd = serializers.CharField(allow_null=True, help_text=f"At the period's end. {_MONEY}")
    projected_low_usd = serializers.CharField(
        allow_null=True, help_text="Band: projected - 2 x sd(daily spend) x sqrt(days left), at least spent."
    )
    projected_high_usd = serializers.CharField(
        allow_null=True, help_text="Band: projected + 2 x sd(daily spend) x sqrt(days left)."
    )
    projected_exhaustion_at = serializers.DateTimeField(allow_null=True)
    status = serializers.ChoiceField(choices=[(v, v) for v in ProjectionStatus.values])


class ProjectionsOutputSerializer(serializers.Serializer):
    organization = serializers.SlugField()
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ProjectionOutputSerializer(many=True)


class BudgetProjectionsApi(ReportApi):
    report = "budgets"

    @extend_schema(
        summary="Budget projections to the end of each period, with an uncertainty band",
        description="Each budget the caller may read (API keys: those covering their scope), its current "
        "period's settled spend, burn rate (the last 7 local days), projection to the period's end and a "
        "band of ± 2 standard deviations of daily spend x sqrt(days left). `status`: exceeded, "
        "forecast_over, at_risk (only the band's high end reaches the limit), on_track, no_forecast "
        "(inactive, open-ended or too young a period). Read from the daily rollups. Date filters are ignored.",
        parameters=[ReportInputSerializer, *PAGINATION_PARAMETERS],
        responses=report_responses(ProjectionsOutputSerializer),
    )
    def get(self, request):
        scope = report_scope(request, parse(ReportInputSerializer, request))
        if isinstance(request.auth, ApiKey):
            budgets = budgets_visible(scope=request_scope(request))
        else:
            budgets = budget_queryset().filter(organization=scope.organization)
        budgets = budgets.order_by("name", "id")
        payloads = [projection_payload(item) for item in budget_projections(budgets=budgets)]
        if self.wants_csv():
            return self.csv_response(scope, list(PROJECTION_COLUMNS), payloads)
        return self.paginated({"organization": scope.organization.slug}, payloads)


def anomaly_payload(alert) -> dict:
    return {
        "id": alert.pk,
        "fired_at": alert.fired_at,
        "project": alert.project.slug if alert.project_id else (alert.agent.project.slug if alert.agent_id else None),
        "agent": alert.agent.name if alert.agent_id else None,
        "window": alert.window,
        "window_start": alert.window_start,
        "spend_usd": _usd(alert.spend_nanos),
        "baseline_usd": _usd(alert.baseline_nanos),
        "cutoff_usd": _usd(alert.cutoff_nanos),
        "status": alert.status,
        "message": alert.message,
    }


ANOMALY_COLUMNS = (
    "id",
    "fired_at",
    "project",
    "agent",
    "window",
    "window_start",
    "spend_usd",
    "baseline_usd",
    "cutoff_usd",
    "status",
    "message",
)


class AnomalyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The alert's id (/api/v1/alerts/<id>/).")
    fired_at = serializers.DateTimeField()
    project = serializers.CharField(allow_null=True)
    agent = serializers.CharField(allow_null=True, help_text="Null for a project's anomaly.")
    window = serializers.ChoiceField(choices=AnomalyWindow.choices)
    window_start = serializers.DateTimeField()
    spend_usd = serializers.CharField(help_text=f"The window's spend. {_MONEY}")
    baseline_usd = serializers.CharField(help_text=f"Median of the baseline windows. {_MONEY}")
    cutoff_usd = serializers.CharField(help_text=_MONEY)
    status = serializers.ChoiceField(choices=AlertStatus.choices)
    message = serializers.CharField()


class AnomaliesOutputSerializer(serializers.Serializer):
    organization = serializers.SlugField()
    start = serializers.DateField()
    end = serializers.DateField()
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = AnomalyOutputSerializer(many=True)


class AnomaliesApi(ReportApi):
    report = "anomalies"

    @extend_schema(
        summary="Recent spend anomalies",
        description="Anomaly alerts fired on the range's local days, newest first (API keys: within their scope).",
        parameters=[ReportInputSerializer, *PAGINATION_PARAMETERS],
        responses=report_responses(AnomaliesOutputSerializer),
    )
    def get(self, request):
        scope = report_scope(request, parse(ReportInputSerializer, request))
        check_range(scope.start, scope.end, MAX_RANGE_DAYS)
        alerts = anomalies_recent(
            organization=scope.organization,
            since=local_midnight(scope.start, scope.organization),
            until=local_midnight(scope.end + timedelta(days=1), scope.organization),
            scope=request_scope(request) if isinstance(request.auth, ApiKey) else None,
            project=scope.project,
            agent=scope.agent,
        )
        if self.wants_csv():
            return self.csv_response(scope, list(ANOMALY_COLUMNS), [anomaly_payload(a) for a in alerts])
        return self.paginated(range_payload(scope), [anomaly_payload(a) for a in alerts])
