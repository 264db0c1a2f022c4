"""Server-rendered report pages (issue 6): ``/reports/`` (overview) and a page per project, sprint
and agent, for staff users (session login; the admin's login page).

They live in the budgets app although the spend figures are ``costs.analytics``: every page shows
budgets (gauges, projections) and alerts beside the spend, and costs may not import budgets. Each
view is parse -> selectors -> render; charts are inline SVG (``costs.charts``), tables sort on the
server (``?sort=<column>&dir=asc|desc``, so they work without JavaScript) and every table links to
the CSV of the same figures from the reports API.
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone

from budgets.models import nanos_to_usd
from budgets.selectors import alerts_recent, budget_projections, budget_queryset
from costs import analytics
from costs.charts import Bar, bar_chart_svg, gauge_svg
from costs.models import Agent, Organization, Project, Sprint

TREND_DAYS = 30
# budgets.selectors.ProjectionStatus values, as people read them.
PROJECTION_WORDS = {
    "exceeded": "limit reached",
    "forecast_over": "forecast over the limit",
    "at_risk": "at risk",
    "on_track": "on track",
    "no_forecast": "no forecast yet",
}
TOP_ROWS = 10


# --- helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    numeric: bool = False


@dataclass
class Table:
    """A sortable table: ``rows`` are dicts keyed by the columns' keys; ``csv_url`` exports it."""

    name: str  # the query-string prefix of its sort parameters (several tables on one page)
    columns: list[Column]
    rows: list[dict]
    csv_url: str
    sort: str = ""
    descending: bool = True
    total_rows: int = 0  # rows before a "top N" cut (the CSV has them all)

    def header(self, request) -> list[dict]:
        out = []
        for column in self.columns:
            descending = not (self.sort == column.key and self.descending)
            query = request.GET.copy()
            query[f"{self.name}_sort"] = column.key
            query[f"{self.name}_dir"] = "desc" if descending else "asc"
            out.append(
                {
                    "column": column,
                    "url": f"?{query.urlencode()}",
                    "sorted": self.sort == column.key,
                    "ascending": self.sort == column.key and not self.descending,
                }
            )
        return out


def _sorted_table(request, table: Table, *, default: str) -> Table:
    keys = {column.key for column in table.columns}
    sort = request.GET.get(f"{table.name}_sort", default)
    sort = sort if sort in keys else default
    descending = request.GET.get(f"{table.name}_dir", "desc") != "asc"

    def key(row):
        value = row.get(sort)
        # None last whatever the direction; numbers and text each in their own order.
        return (value is None, value if value is not None else 0)

    present = [row for row in table.rows if row.get(sort) is not None]
    absent = [row for row in table.rows if row.get(sort) is None]
    present.sort(key=key, reverse=descending)
    table.rows, table.sort, table.descending = present + absent, sort, descending
    return table


def _csv_url(report: str, organization: Organization, **params) -> str:
    query = {"organization": organization.slug, "format": "csv", **{k: v for k, v in params.items() if v}}
    return f"{reverse(f'v1:report-{report}')}?{urlencode(query)}"


def report_organization(request) -> Organization:
    """The organization a report page shows: ``?organization=<slug>``, else the first by name (404
    when there is none yet). The overview and the savings page pick theirs this way."""
    slug = request.GET.get("organization")
    organizations = Organization.objects.order_by("name")
    organization = organizations.filter(slug=slug).first() if slug else organizations.first()
    if organization is None:
        raise Http404("No organization yet: run `manage.py seed_demo` or create one in the admin.")
    return organization


def _range(request, organization: Organization) -> tuple[date, date]:
    today = timezone.now().astimezone(organization.tzinfo).date()
    try:
        end = date.fromisoformat(request.GET.get("end", "")) if request.GET.get("end") else today
        start = (
            date.fromisoformat(request.GET["start"])
            if request.GET.get("start")
            else end - timedelta(days=TREND_DAYS - 1)
        )
    except ValueError:
        start, end = today - timedelta(days=TREND_DAYS - 1), today
    if end < start or (end - start).days >= analytics.MAX_RANGE_DAYS:
        start, end = end - timedelta(days=TREND_DAYS - 1), end
    return start, end


def _trend_chart(organization, start, end, caption, **filters):
    points = analytics.spend_trend(organization=organization, start=start, end=end, interval="day", **filters)
    bars = [Bar(point.period.strftime("%d %b"), point.cost_usd) for point in points]
    return bar_chart_svg(bars, label_every=max(len(bars) // 10, 1), caption=caption), points


def _breakdown_table(
    request, name, organization, start, end, by: str, label: str, *, top: int | None = None, rows=None, **filters
) -> Table:
    """A breakdown by ``by`` as a sortable table; ``top`` keeps only the costliest rows (the overview's
    "Top ..." tables: the CSV link still has every row). ``rows``: the breakdown, when the caller
    already has it (regrouped from a finer one)."""
    if rows is None:
        rows = analytics.spend_breakdown(organization=organization, start=start, end=end, group_by=[by], **filters)
    total_rows = len(rows)
    if top is not None:
        rows = sorted(rows, key=lambda row: row.cost_usd, reverse=True)[:top]
    columns = [
        Column(by, label),
        Column("cost_usd", "Cost", numeric=True),
        Column("requests", "Requests", numeric=True),
        Column("total_tokens", "Tokens", numeric=True),
        Column("cost_per_request", "Per request", numeric=True),
        Column("cost_per_1k_tokens", "Per 1K tokens", numeric=True),
        Column("unpriced_requests", "Unpriced", numeric=True),
    ]
    table_rows = [
        {
            by: row.key.get(by) if row.key.get(by) is not None else "—",
            "link": _node_link(organization, by, row.key),
            "cost_usd": row.cost_usd,
            "requests": row.requests,
            "total_tokens": row.total_tokens,
            "cost_per_request": row.cost_per_request,
            "cost_per_1k_tokens": row.cost_per_1k_tokens,
            "unpriced_requests": row.unpriced_requests,
        }
        for row in rows
    ]
    csv = _csv_url(
        "breakdown",
        organization,
        start=start.isoformat(),
        end=end.isoformat(),
        group_by=by,
        project=filters.get("project") and filters["project"].slug,
        sprint=filters.get("sprint") and filters["sprint"].slug,
        agent=filters.get("agent") and filters["agent"].name,
    )
    table = Table(name, columns, table_rows, csv, total_rows=total_rows)
    return _sorted_table(request, table, default="cost_usd")


def _node_link(organization, by: str, key: dict) -> str:
    """The report page of a breakdown row's project / sprint / agent ("" for other dimensions)."""
    project = key.get("project")
    if by == "project" and project:
        return reverse("reports:project", args=[organization.slug, project])
    if by == "agent" and project and key.get("agent"):
        return reverse("reports:agent", args=[organization.slug, project, key["agent"]])
    if by == "sprint" and project and key.get("sprint"):
        return reverse("reports:sprint", args=[organization.slug, project, key["sprint"]])
    return ""


def _budget_rows(budgets, now) -> list[dict]:
    rows = []
    for projection in budget_projections(budgets=budgets, now=now):
        live = projection.live
        projected = nanos_to_usd(projection.projected_nanos) if projection.projected_nanos is not None else None
        rows.append(
            {
                "budget": live.budget,
                "status": live.status,
                "projection_status": PROJECTION_WORDS.get(projection.status, projection.status),
                "spent": live.spent_usd,
                "reserved": live.reserved_usd,
                "remaining": live.remaining_usd,
                "limit": live.budget.limit_usd,
                "projected": projected,
                "low": nanos_to_usd(projection.low_nanos) if projection.low_nanos is not None else None,
                "high": nanos_to_usd(projection.high_nanos) if projection.high_nanos is not None else None,
                "gauge": gauge_svg(
                    limit=live.budget.limit_usd, spent=live.spent_usd, reserved=live.reserved_usd, projected=projected
                ),
                "period_start": live.period_start,
                "period_end": live.period_end,
            }
        )
    order = {"exceeded": 0, "warning": 1, "ok": 2, "inactive": 3}
    rows.sort(key=lambda row: (order.get(row["status"], 9), row["budget"].name))
    return rows


def _month_forecast(organization, now, month_to_date: Decimal, daily: list | None = None) -> Decimal | None:
    """The month's spend projected to its end: month to date + the burn rate of the last (up to) 7
    local days, from their first midnight to now, times the time left — the forecast alerts' rule on
    the rollups' day grid. None in the month's first day (too young to tell)."""
    tz = organization.tzinfo
    today = now.astimezone(tz).date()
    month_start = today.replace(day=1)
    if today == month_start:
        return None
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    window_start = max(month_start, today - timedelta(days=6))
    # The page's daily trend already holds these days when its range covers them: no second query.
    by_day = {point.period: point.cost_usd for point in daily or ()}
    days = [window_start + timedelta(days=n) for n in range((today - window_start).days + 1)]
    if all(day in by_day for day in days):
        recent = sum((by_day[day] for day in days), Decimal(0))
    else:
        recent = analytics.spend_totals(organization=organization, start=window_start, end=today).cost_usd
    observed = now - datetime.combine(window_start, time.min, tz)
    remaining = datetime.combine(next_month, time.min, tz) - now
    rate = recent / Decimal(observed.total_seconds())  # USD per second: Decimal, never float
    return (month_to_date + rate * Decimal(remaining.total_seconds())).quantize(Decimal("0.01"))


# --- pages --------------------------------------------------------------------------------------


@staff_member_required
def overview(request):
    organization = report_organization(request)
    now = timezone.now()
    start, end = _range(request, organization)
    current = analytics.spend_today_and_month_to_date(organization=organization, now=now)
    chart, daily = _trend_chart(organization, start, end, f"Daily spend, {start} to {end}")
    budgets = budget_queryset().filter(organization=organization, is_active=True)
    # The three "Top" tables from one project x agent x model breakdown (one query, not three).
    fine = analytics.spend_breakdown(
        organization=organization, start=start, end=end, group_by=["project", "agent", "model"]
    )
    tops = (("projects", "project", "Project"), ("agents", "agent", "Agent"), ("models", "model", "Model"))
    context = {
        "organization": organization,
        "organizations": Organization.objects.order_by("name"),
        "start": start,
        "end": end,
        "current": current,
        "month_forecast": _month_forecast(organization, now, current.month_to_date.cost_usd, daily),
        "chart": chart,
        "budgets": _budget_rows(budgets, now),
        "alerts": alerts_recent(organization=organization),
        "tables": [
            _breakdown_table(
                request,
                name,
                organization,
                start,
                end,
                by,
                label,
                top=TOP_ROWS,
                rows=analytics.breakdown_regroup(fine, group_by=[by]),
            )
            for name, by, label in tops
        ],
        "unpriced": analytics.unpriced_usage(organization=organization, start=start, end=end),
    }
    return render(request, "budgets/reports/overview.html", context)


@staff_member_required
def project_report(request, organization: str, project: str):
    project_obj = get_object_or_404(
        Project.objects.select_related("organization"), organization__slug=organization, slug=project
    )
    return _node_page(request, project_obj.organization, f"Project {project_obj.name}", project=project_obj)


@staff_member_required
def sprint_report(request, organization: str, project: str, sprint: str):
    sprint_obj = get_object_or_404(
        Sprint.objects.select_related("project__organization"),
        project__organization__slug=organization,
        project__slug=project,
        slug=sprint,
    )
    return _node_page(
        request,
        sprint_obj.project.organization,
        sprint_obj.name if sprint_obj.name.lower().startswith("sprint") else f"Sprint {sprint_obj.name}",
        project=sprint_obj.project,
        sprint=sprint_obj,
    )


@staff_member_required
def agent_report(request, organization: str, project: str, agent: str):
    agent_obj = get_object_or_404(
        Agent.objects.select_related("project__organization"),
        project__organization__slug=organization,
        project__slug=project,
        name=agent,
    )
    return _node_page(
        request, agent_obj.project.organization, f"Agent {agent_obj.name}", project=agent_obj.project, agent=agent_obj
    )


def _node_page(request, organization, title, *, project, sprint=None, agent=None):
    now = timezone.now()
    start, end = _range(request, organization)
    if sprint is not None and "start" not in request.GET:
        start, end = sprint.start_date, min(sprint.end_date, now.astimezone(organization.tzinfo).date())
    filters = {"project": project, "sprint": sprint, "agent": agent}
    chart, _ = _trend_chart(organization, start, end, f"Daily spend of {title}", **filters)
    totals = analytics.spend_totals(organization=organization, start=start, end=end, **filters)
    tables = [_breakdown_table(request, "models", organization, start, end, "model", "Model", **filters)]
    if agent is None:
        tables.insert(0, _breakdown_table(request, "agents", organization, start, end, "agent", "Agent", **filters))
    budgets = _covering_budgets(organization, project=project, sprint=sprint, agent=agent)
    # The node's budgets' alerts, and the agent's or project's own anomaly alerts.
    alerts = Q(budget__in=[b.pk for b in budgets])
    if agent is not None:
        alerts |= Q(agent=agent)
    elif sprint is None:
        alerts |= Q(project=project)
    context = {
        "organization": organization,
        "title": title,
        "project": project,
        "sprint": sprint,
        "agent": agent,
        "start": start,
        "end": end,
        "totals": totals,
        "chart": chart,
        "tables": tables,
        "budgets": _budget_rows(budgets, now),
        "alerts": alerts_recent(organization=organization, where=alerts),
        "sprints": project.sprints.order_by("-start_date") if agent is None and sprint is None else [],
        "agents": project.agents.order_by("name") if agent is None else [],
    }
    return render(request, "budgets/reports/node.html", context)


def _covering_budgets(organization, *, project, sprint, agent) -> list:
    """The node's own budgets and those above it that cover it (organization, project, sprint)."""
    budgets = budget_queryset().filter(organization=organization, is_active=True)
    own = []
    for budget in budgets:
        if budget.agent_id:
            keep = agent is not None and budget.agent_id == agent.pk
        elif budget.sprint_id:
            keep = sprint is not None and budget.sprint_id == sprint.pk
        elif budget.project_id:
            keep = budget.project_id == project.pk
        else:
            keep = True
        if keep:
            own.append(budget)
    return own
