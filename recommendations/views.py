"""``/reports/recommendations/`` — the top savings opportunities with their figures and evidence
(staff login, like the other report pages). Each row links to the ledger rows it was computed from;
``?format=csv`` exports the list; ``?status=`` shows other statuses (e.g. implemented, with their
realized savings)."""

import csv

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpResponse
from django.shortcuts import render

from budgets.views import report_organization
from costs.models import Organization
from pricing.calculator import format_usd
from recommendations.models import RecommendationStatus
from recommendations.selectors import ledger_rows_url, top_opportunities

SORTS = {
    "priority": "priority_score",
    "saving": "estimated_monthly_saving_usd",
    "realized": "realized_monthly_saving_usd",
    "kind": "kind",
}
CSV_COLUMNS = [
    "id",
    "kind",
    "status",
    "scope",
    "title",
    "estimated_monthly_saving_usd",
    "confidence",
    "effort",
    "priority_score",
    "realized_monthly_saving_usd",
    "window_start",
    "window_end",
]


@staff_member_required
def recommendations_report(request):
    organization = report_organization(request)
    status = request.GET.get("status", "")
    statuses = [status] if status in RecommendationStatus.values else None
    recs = top_opportunities(organization=organization, statuses=statuses)
    sort = request.GET.get("sort", "priority")
    field = SORTS.get(sort, SORTS["priority"])
    descending = request.GET.get("dir", "desc") != "asc"
    present = [rec for rec in recs if getattr(rec, field) is not None]
    present.sort(key=lambda rec: getattr(rec, field), reverse=descending)
    recs = present + [rec for rec in recs if getattr(rec, field) is None]
    if request.GET.get("format") == "csv":
        return _csv(recs, organization)
    rows = [{"rec": rec, "ledger_url": ledger_rows_url(rec), "evidence": _evidence_items(rec.evidence)} for rec in recs]
    context = {
        "organization": organization,
        "organizations": Organization.objects.order_by("name"),
        "rows": rows,
        "total": sum((rec.estimated_monthly_saving_usd for rec in recs), start=0),
        "status": status,
        "statuses": RecommendationStatus.choices,
        "sort": sort,
        "descending": descending,
    }
    return render(request, "recommendations/report.html", context)


def _evidence_items(evidence: dict) -> list[tuple[str, str]]:
    """Evidence as (label, value) lines; nested values are shown as compact text."""
    items = []
    for key, value in evidence.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        items.append((key.replace("_", " "), str(value)))
    return items


def _csv(recs, organization: Organization) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="recommendations-{organization.slug}.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for rec in recs:
        writer.writerow(
            [
                rec.pk,
                rec.kind,
                rec.status,
                rec.scope_label,
                rec.title,
                format_usd(rec.estimated_monthly_saving_usd),
                rec.confidence,
                rec.effort,
                format_usd(rec.priority_score),
                format_usd(rec.realized_monthly_saving_usd) if rec.realized_monthly_saving_usd is not None else "",
                rec.window_start.isoformat(),
                rec.window_end.isoformat(),
            ]
        )
    return response
