"""Reports API v1 (issue 6): ``GET /api/v1/reports/...`` — where the money went, from the
daily rollups plus the ledger's not-yet-rolled tail (:mod:`costs.analytics`).

Who may read:

- an **API key**, within its scope: a project key sees only its project's spend, an agent key only
  its agent's — the scope narrows every figure; naming another project or agent is 403
  ``out_of_scope``, never a silent widening.
- a **staff user** (session login) names the organization: ``?organization=<slug>``. Other session
  logins are refused (403 ``operator_only``), as for budgets.

Common parameters: ``start`` / ``end`` (organization-local dates, both included; default the 30
days ending today there; at most 366 days), ``project`` (slug), ``sprint`` (slug) and ``agent``
(name) — sprint and agent are named within a project (the parameter or the key's) —, ``model``
(also matches behind a provider prefix), ``provider``, ``operation``.

Every report is also CSV: add ``?format=csv`` (or send ``Accept: text/csv``). CSV has every row
(no pagination), one header line, money as plain decimal strings and empty cells for nulls.
Errors are always JSON.
"""

from dataclasses import dataclass, replace
from datetime import date, timedelta

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response

from config.api import FastJSONRenderer
from config.errors import OutOfScope, ValidationFailed
from costs import analytics
from costs.analytics import BreakdownRow, SpendFigures
from costs.api.authentication import request_scope
from costs.api.serializers import ApiErrorSerializer
from costs.models import Agent, ApiKey, Operation, Organization, Project, Sprint
from pricing.calculator import format_usd

_MONEY = 'USD as a decimal string, e.g. "0.002475".'
DEFAULT_RANGE_DAYS = 30

# --- who may call, and what they see ----------------------------------------------------------


class IsApiKeyOrStaff(BasePermission):
    """API keys and staff session users may read reports; other session logins are refused."""

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        user = request.user
        if user is not None and user.is_authenticated:
            if user.is_staff:
                return True
            raise OutOfScope("Only staff users may read reports with a session login.", code="operator_only")
        return False  # DRF answers 401 not_authenticated


@dataclass(frozen=True, slots=True)
class ReportScope:
    """What a report covers: one organization, narrowed by the caller's scope and the filters."""

    organization: Organization
    start: date
    end: date
    project: Project | None
    sprint: Sprint | None
    agent: Agent | None
    model: str | None
    provider: str | None
    operation: str | None

    def filters(self) -> dict:
        """The keyword filters every :mod:`costs.analytics` selector takes."""
        return {
            "project": self.project,
            "sprint": self.sprint,
            "agent": self.agent,
            "model": self.model,
            "provider": self.provider,
            "operation": self.operation,
        }


def report_scope(request, params: dict) -> ReportScope:
    """The tenancy door of the reports: an API key's scope (:func:`request_scope`) or, for staff,
    the organization named by ``params["organization"]``; then the filters resolved inside it."""
    slug = params.get("organization")
    project = agent = None
    if isinstance(request.auth, ApiKey):
        key = request_scope(request)
        organization, project, agent = key.organization, key.project, key.agent
        if slug and slug != organization.slug:
            raise OutOfScope("This API key may not read another organization's reports.")
    else:
        if not slug:
            raise ValidationFailed(fields={"organization": ["Staff sessions name the organization (its slug)."]})
        organization = Organization.objects.filter(slug=slug).first()
        if organization is None:
            raise ValidationFailed(fields={"organization": ["No such organization."]})

    if params.get("project"):
        if project is not None and params["project"] != project.slug:
            raise OutOfScope("This API key may not read another project's spend.")
        project = project or Project.objects.filter(organization=organization, slug=params["project"]).first()
        if project is None:
            raise ValidationFailed(fields={"project": ["No such project."]})
    sprint = None
    if params.get("sprint"):
        if project is None:
            raise ValidationFailed(fields={"sprint": ["Name the project too (sprints are named per project)."]})
        sprint = Sprint.objects.filter(project=project, slug=params["sprint"]).first()
        if sprint is None:
            raise ValidationFailed(fields={"sprint": ["No such sprint in this project."]})
    if params.get("agent"):
        if agent is not None and params["agent"] != agent.name:
            raise OutOfScope("This API key may not read another agent's spend.")
        if project is None:
            raise ValidationFailed(fields={"agent": ["Name the project too (agents are named per project)."]})
        agent = agent or Agent.objects.filter(project=project, name=params["agent"]).first()
        if agent is None:
            raise ValidationFailed(fields={"agent": ["No such agent in this project."]})

    end = params.get("end") or timezone.now().astimezone(organization.tzinfo).date()
    start = params.get("start") or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    return ReportScope(
        organization=organization,
        start=start,
        end=end,
        project=project,
        sprint=sprint,
        agent=agent,
        model=params.get("model") or None,
        provider=params.get("provider"),
        operation=params.get("operation") or None,
    )


# --- parameters ---------------------------------------------------------------------------------


class ReportInputSerializer(serializers.Serializer):
    organization = serializers.SlugField(
        required=False, help_text="Organization slug: required for staff sessions; API keys read their own."
    )
    start = serializers.DateField(required=False, help_text="First local day (default: 29 days before end).")
    end = serializers.DateField(required=False, help_text="Last local day, included (default: today, local).")
    project = serializers.SlugField(required=False, help_text="Project slug.")
    sprint = serializers.SlugField(required=False, help_text="Sprint slug (within the project).")
    agent = serializers.CharField(required=False, max_length=200, help_text="Agent name (within the project).")
    model = serializers.CharField(
        required=False, max_length=255, help_text="Model as recorded; also matches behind a provider prefix."
    )
    provider = serializers.CharField(required=False, allow_blank=True, max_length=64)
    operation = serializers.ChoiceField(required=False, choices=Operation.choices)


class BreakdownInputSerializer(ReportInputSerializer):
    group_by = serializers.CharField(
        required=False,
        default="project",
        help_text="Comma-separated dimensions: org, project, sprint, agent, model, provider, operation, "
        "day, week, month, or tag:<key> (reads the ledger: at most 31 days). Default: project.",
    )

    def validate_group_by(self, value: str) -> list[str]:
        dims = [part.strip() for part in value.split(",") if part.strip()]
        if not dims:
            raise serializers.ValidationError("Name at least one dimension.")
        return dims


class TrendInputSerializer(ReportInputSerializer):
    interval = serializers.ChoiceField(choices=analytics.TIME_DIMENSIONS, default="day")


class TopInputSerializer(ReportInputSerializer):
    by = serializers.ChoiceField(choices=analytics.TOP_BY, default="agent")
    limit = serializers.IntegerField(min_value=1, max_value=100, default=10)


def parse(serializer_class, request) -> dict:
    """The query parameters validated by ``serializer_class`` (others, e.g. ``format``, ignored)."""
    serializer = serializer_class(data=request.query_params)
    if not serializer.is_valid():
        raise ValidationFailed(fields=serializer.errors)
    return dict(serializer.validated_data)


# --- shapes -------------------------------------------------------------------------------------

FIGURE_COLUMNS = (*analytics.METRICS[:-1], "total_tokens", "cost_usd", "cost_per_request", "cost_per_1k_tokens")


def figures_payload(figures: SpendFigures) -> dict:
    """The JSON (and CSV) form of :class:`~costs.analytics.SpendFigures`: counts as integers,
    money as decimal strings."""
    payload = {name: getattr(figures, name) for name in analytics.METRICS[:-1]}
    payload["total_tokens"] = figures.total_tokens
    payload["cost_usd"] = format_usd(figures.cost_usd)
    payload["cost_per_request"] = format_usd(figures.cost_per_request)
    payload["cost_per_1k_tokens"] = format_usd(figures.cost_per_1k_tokens)
    return payload


def row_payload(row: BreakdownRow) -> dict:
    return {**row.key, **figures_payload(row)}


def range_payload(scope: ReportScope) -> dict:
    return {"organization": scope.organization.slug, "start": scope.start, "end": scope.end}


class FiguresOutputSerializer(serializers.Serializer):
    """Declares the figures' shape for the OpenAPI schema; answers are built by :func:`figures_payload`."""

    requests = serializers.IntegerField()
    error_requests = serializers.IntegerField()
    unpriced_requests = serializers.IntegerField(help_text="Requests without a price: they add no cost.")
    prompt_tokens = serializers.IntegerField(help_text="Includes cached and cache-write tokens.")
    completion_tokens = serializers.IntegerField(help_text="Includes reasoning tokens.")
    cached_tokens = serializers.IntegerField()
    cache_creation_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField(help_text="prompt_tokens + completion_tokens.")
    cost_usd = serializers.CharField(help_text=_MONEY)
    cost_per_request = serializers.CharField(allow_null=True, help_text=f"cost / requests. {_MONEY}")
    cost_per_1k_tokens = serializers.CharField(allow_null=True, help_text=f"cost x 1000 / total_tokens. {_MONEY}")


class BreakdownRowOutputSerializer(FiguresOutputSerializer):
    project = serializers.CharField(
        required=False, allow_null=True, help_text="Grouped by project (also by sprint or agent)."
    )
    sprint = serializers.CharField(required=False, allow_null=True, help_text="Null: usage outside any sprint.")
    agent = serializers.CharField(required=False)
    model = serializers.CharField(required=False)
    provider = serializers.CharField(required=False)
    operation = serializers.CharField(required=False)
    day = serializers.DateField(required=False)
    week = serializers.DateField(required=False, help_text="The ISO week's Monday.")
    month = serializers.DateField(required=False, help_text="The month's first day.")
    org = serializers.CharField(required=False)


class _RangeOutputSerializer(serializers.Serializer):
    organization = serializers.SlugField()
    start = serializers.DateField()
    end = serializers.DateField()


class BreakdownOutputSerializer(_RangeOutputSerializer):
    group_by = serializers.ListField(child=serializers.CharField())
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = BreakdownRowOutputSerializer(many=True, help_text="One object per group; also a `tag:<key>` member.")


class TotalsOutputSerializer(_RangeOutputSerializer, FiguresOutputSerializer):
    pass


class TrendPointOutputSerializer(FiguresOutputSerializer):
    period = serializers.DateField(help_text="The bucket's first day (the day, the Monday, the 1st).")


class TrendOutputSerializer(_RangeOutputSerializer):
    interval = serializers.ChoiceField(choices=analytics.TIME_DIMENSIONS)
    points = TrendPointOutputSerializer(many=True)


class CurrentOutputSerializer(serializers.Serializer):
    organization = serializers.SlugField()
    timezone = serializers.CharField()
    today = serializers.DateField()
    month_start = serializers.DateField()
    today_totals = FiguresOutputSerializer()
    month_to_date = FiguresOutputSerializer()


class TopOutputSerializer(_RangeOutputSerializer):
    by = serializers.ChoiceField(choices=analytics.TOP_BY)
    results = BreakdownRowOutputSerializer(many=True)


class UnpricedRowOutputSerializer(serializers.Serializer):
    model = serializers.CharField()
    provider = serializers.CharField()
    unpriced_requests = serializers.IntegerField()
    first_day = serializers.DateField()
    last_day = serializers.DateField()


class UnpricedOutputSerializer(_RangeOutputSerializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = UnpricedRowOutputSerializer(many=True)


ERRORS = {
    400: OpenApiResponse(ApiErrorSerializer, description="validation_error (dates, range, group_by, filters)"),
    401: OpenApiResponse(ApiErrorSerializer, description="not_authenticated, invalid_api_key or api_key_revoked"),
    403: OpenApiResponse(
        ApiErrorSerializer, description="out_of_scope (another organization, project or agent) or operator_only"
    ),
}
# The paginated reports (breakdown, unpriced, budgets, anomalies) take LimitOffsetPagination's parameters.
PAGINATION_PARAMETERS = [
    OpenApiParameter("limit", OpenApiTypes.INT, description="Rows per page (default 100); not for CSV."),
    OpenApiParameter("offset", OpenApiTypes.INT, description="Rows to skip."),
]
CSV_RESPONSE = OpenApiResponse(OpenApiTypes.STR, description="With ?format=csv or Accept: text/csv: every row.")


def report_responses(output) -> dict:
    return {(200, "application/json"): output, (200, "text/csv"): CSV_RESPONSE, **ERRORS}


# --- CSV ----------------------------------------------------------------------------------------


class CSVRenderer(BaseRenderer):
    """Renders ``{"columns": [...], "rows": [[...], ...]}`` as CSV (nulls as empty cells)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(data["columns"])
        for row in data["rows"]:
            writer.writerow(["" if value is None else value for value in row])
        return buffer.getvalue().encode(self.charset)


class ReportApi(GenericAPIView):
    """Base of the report views: permission, JSON or CSV, errors always JSON."""

    permission_classes = [IsApiKeyOrStaff]
    renderer_classes = [FastJSONRenderer, CSVRenderer]
    # One word per report: names its CSV file.
    report = "report"

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        self.request.accepted_renderer = FastJSONRenderer()
        self.request.accepted_media_type = FastJSONRenderer.media_type
        return response

    def wants_csv(self) -> bool:
        return getattr(self.request.accepted_renderer, "format", None) == "csv"

    def csv_response(self, scope: ReportScope, columns: list[str], rows: list[dict]) -> Response:
        filename = f"spendguard-{self.report}-{scope.organization.slug}-{scope.start}-{scope.end}.csv"
        return Response(
            {"columns": columns, "rows": [[row.get(column) for column in columns] for row in rows]},
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def paginated(self, meta: dict, rows: list[dict]) -> Response:
        page = self.paginate_queryset(rows)
        response = self.get_paginated_response(page)
        response.data = {**meta, **response.data}
        return response


# --- views --------------------------------------------------------------------------------------


class BreakdownApi(ReportApi):
    report = "breakdown"

    @extend_schema(
        summary="Spend broken down by any dimensions",
        description="Totals per group of `group_by` over the date range, ordered by time bucket (when "
        "grouped by day, week or month), then cost descending. Paginated (limit / offset); CSV has every row.",
        parameters=[BreakdownInputSerializer, *PAGINATION_PARAMETERS],
        responses=report_responses(BreakdownOutputSerializer),
    )
    def get(self, request):
        params = parse(BreakdownInputSerializer, request)
        scope = report_scope(request, params)
        group_by = params["group_by"]
        rows = analytics.spend_breakdown(
            organization=scope.organization, start=scope.start, end=scope.end, group_by=group_by, **scope.filters()
        )
        payloads = [row_payload(row) for row in rows]
        if self.wants_csv():
            return self.csv_response(scope, [*_key_columns(group_by), *FIGURE_COLUMNS], payloads)
        return self.paginated({**range_payload(scope), "group_by": group_by}, payloads)


def _key_columns(group_by: list[str]) -> list[str]:
    columns = []
    for dim in group_by:
        if dim in ("agent", "sprint") and "project" not in group_by and "project" not in columns:
            columns.append("project")
        columns.append(dim)
    return columns


class TotalsApi(ReportApi):
    report = "totals"

    @extend_schema(
        summary="Total spend of a date range",
        parameters=[ReportInputSerializer],
        responses=report_responses(TotalsOutputSerializer),
    )
    def get(self, request):
        scope = report_scope(request, parse(ReportInputSerializer, request))
        totals = analytics.spend_totals(
            organization=scope.organization, start=scope.start, end=scope.end, **scope.filters()
        )
        payload = {**range_payload(scope), **figures_payload(totals)}
        if self.wants_csv():
            return self.csv_response(scope, ["organization", "start", "end", *FIGURE_COLUMNS], [payload])
        return Response(payload)


class TrendApi(ReportApi):
    report = "trend"

    @extend_schema(
        summary="Spend per day, week or month",
        description="Every bucket of the range, zeros included, oldest first. Weeks are ISO weeks (from "
        "Monday), months calendar months, of local days; a bucket cut by the range counts only its days.",
        parameters=[TrendInputSerializer],
        responses=report_responses(TrendOutputSerializer),
    )
    def get(self, request):
        params = parse(TrendInputSerializer, request)
        scope = report_scope(request, params)
        points = analytics.spend_trend(
            organization=scope.organization,
            start=scope.start,
            end=scope.end,
            interval=params["interval"],
            **scope.filters(),
        )
        payloads = [{"period": point.period, **figures_payload(point)} for point in points]
        if self.wants_csv():
            return self.csv_response(scope, ["period", *FIGURE_COLUMNS], payloads)
        return Response({**range_payload(scope), "interval": params["interval"], "points": payloads})


class CurrentApi(ReportApi):
    report = "current"

    @extend_schema(
        summary="Spend today and month to date",
        description="In the organization's time zone, now. `start` and `end` are ignored.",
        parameters=[ReportInputSerializer],
        responses=report_responses(CurrentOutputSerializer),
    )
    def get(self, request):
        scope = report_scope(request, parse(ReportInputSerializer, request))
        current = analytics.spend_today_and_month_to_date(
            organization=scope.organization, now=timezone.now(), **scope.filters()
        )
        if self.wants_csv():
            rows = [
                {
                    "period": "today",
                    "start": current.today,
                    "end": current.today,
                    **figures_payload(current.today_figures),
                },
                {
                    "period": "month_to_date",
                    "start": current.month_start,
                    "end": current.today,
                    **figures_payload(current.month_to_date),
                },
            ]
            scope = replace(scope, start=current.month_start, end=current.today)
            return self.csv_response(scope, ["period", "start", "end", *FIGURE_COLUMNS], rows)
        return Response(
            {
                "organization": scope.organization.slug,
                "timezone": scope.organization.timezone,
                "today": current.today,
                "month_start": current.month_start,
                "today_totals": figures_payload(current.today_figures),
                "month_to_date": figures_payload(current.month_to_date),
            }
        )


class TopApi(ReportApi):
    report = "top"

    @extend_schema(
        summary="Top spenders: agents, projects or models",
        description="The `limit` (1-100, default 10) costliest of `by` over the range, costliest first.",
        parameters=[TopInputSerializer],
        responses=report_responses(TopOutputSerializer),
    )
    def get(self, request):
        params = parse(TopInputSerializer, request)
        scope = report_scope(request, params)
        rows = analytics.top_spenders(
            organization=scope.organization,
            start=scope.start,
            end=scope.end,
            by=params["by"],
            limit=params["limit"],
            **scope.filters(),
        )
        payloads = [row_payload(row) for row in rows]
        if self.wants_csv():
            return self.csv_response(scope, [*_key_columns([params["by"]]), *FIGURE_COLUMNS], payloads)
        return Response({**range_payload(scope), "by": params["by"], "results": payloads})


class UnpricedApi(ReportApi):
    report = "unpriced"

    @extend_schema(
        summary="Usage without a price",
        description="Per model (as recorded) and provider: requests that went unpriced in the range and the "
        "first and last day they did, most first. Add a price in the admin; old rows stay unpriced "
        "(the ledger is append-only).",
        parameters=[ReportInputSerializer, *PAGINATION_PARAMETERS],
        responses=report_responses(UnpricedOutputSerializer),
    )
    def get(self, request):
        scope = report_scope(request, parse(ReportInputSerializer, request))
        rows = analytics.unpriced_usage(
            organization=scope.organization, start=scope.start, end=scope.end, **scope.filters()
        )
        payloads = [
            {
                "model": row.model,
                "provider": row.provider,
                "unpriced_requests": row.unpriced_requests,
                "first_day": row.first_day,
                "last_day": row.last_day,
            }
            for row in rows
        ]
        if self.wants_csv():
            columns = ["model", "provider", "unpriced_requests", "first_day", "last_day"]
            return self.csv_response(scope, columns, payloads)
        return self.paginated(range_payload(scope), payloads)
