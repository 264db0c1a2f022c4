"""What an alert says: the link to its report page, and the subject, text, HTML and chat summary
of the message every channel sends."""

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.template.loader import render_to_string
from django.urls import reverse

from budgets.models import (
    AlertKind,
    AnomalyWindow,
    BudgetAlert,
    nanos_usd_display,
)
from budgets.services.alerts import budget_node_label

WINDOW_LENGTHS = {AnomalyWindow.HOUR: timedelta(hours=1), AnomalyWindow.DAY: timedelta(days=1)}
WINDOW_PHRASES = {AnomalyWindow.HOUR: "in the last hour", AnomalyWindow.DAY: "in the last day"}


# --- content ----------------------------------------------------------------------------------


def alert_url(alert: BudgetAlert) -> str:
    """Where a person reads the alert: the report page of what it is about (the agent, sprint or
    project page, else the organization's overview), which lists the alert with a link to
    acknowledge it in the admin. The one place that decides the link (e-mail and webhook use it)."""
    org = alert.organization.slug
    budget = alert.budget
    agent = alert.agent or (budget.agent if budget is not None and budget.agent_id else None)
    sprint = budget.sprint if budget is not None and budget.sprint_id else None
    project = alert.project or (budget.project if budget is not None and budget.project_id else None)
    if agent is not None:
        path = reverse("reports:agent", args=[org, agent.project.slug, agent.name])
    elif sprint is not None:
        path = reverse("reports:sprint", args=[org, sprint.project.slug, sprint.slug])
    elif project is not None:
        path = reverse("reports:project", args=[org, project.slug])
    else:
        path = reverse("reports:overview") + f"?organization={org}"
    return settings.SPENDGUARD_BASE_URL.rstrip("/") + path


@dataclass(frozen=True)
class AlertMessage:
    subject: str
    text: str
    html: str
    summary: str  # one line for chat: the subject and the key figures
    url: str


def alert_message(alert: BudgetAlert) -> AlertMessage:
    """The alert rendered: subject (templates/budgets/email/alert_subject.txt), plain text
    (alert.txt), HTML (alert.html) and a one-line summary for the webhook."""
    context = _context(alert)
    # One line, whatever the names contain: a newline in a header is refused by Django's mail.
    subject = " ".join(render_to_string("budgets/email/alert_subject.txt", context).split())
    context["subject"] = subject
    figures = "; ".join(f"{label}: {value}" for label, value in context["facts"][:3])
    return AlertMessage(
        subject=subject,
        text=render_to_string("budgets/email/alert.txt", context),
        html=render_to_string("budgets/email/alert.html", context),
        summary=f"{subject}. {figures}.",
        url=context["url"],
    )


def _context(alert: BudgetAlert) -> dict:
    budget = alert.budget
    tz_name = budget.timezone if budget is not None else alert.organization.timezone
    context = {
        "alert": alert,
        "kind": alert.kind,
        "severity": alert.get_severity_display(),
        "url": alert_url(alert),
        "timezone": tz_name,
        "fired_at": _local(alert.fired_at, tz_name).strftime("%Y-%m-%d %H:%M"),
        "organization": alert.organization.name,
    }
    if alert.kind == AlertKind.ANOMALY:
        subject_node = alert.agent or alert.project
        context["node_label"] = f"{'Agent' if alert.agent_id else 'Project'} {subject_node.name}"
        context["spend"] = nanos_usd_display(alert.spend_nanos)
        context["window_phrase"] = WINDOW_PHRASES.get(alert.window, "")
        window_end = alert.window_start + WINDOW_LENGTHS.get(alert.window, timedelta(0))
        context["facts"] = [
            ("Spent", f"{nanos_usd_display(alert.spend_nanos)} {context['window_phrase']}".strip()),
            ("Usual (median)", nanos_usd_display(alert.baseline_nanos or 0)),
            ("Anomaly cutoff", nanos_usd_display(alert.cutoff_nanos or 0)),
            ("Window", _span(alert.window_start, window_end, tz_name)),
        ]
    else:
        context["node_label"] = budget_node_label(budget) if budget is not None else "A deleted budget"
        context["budget_name"] = budget.name if budget is not None else ""
        context["period_word"] = budget.period_word if budget is not None else ""
        context["threshold"] = alert.threshold_percent
        limit = alert.limit_nanos or 0
        remaining = limit - alert.spend_nanos
        facts = [
            ("Spent", nanos_usd_display(alert.spend_nanos)),
            ("Limit", nanos_usd_display(limit)),
            ("Used", f"{alert.spend_nanos * 100 // limit}%" if limit else "—"),
            (
                "Remaining",
                nanos_usd_display(remaining) if remaining >= 0 else f"$0.00 (over by {nanos_usd_display(-remaining)})",
            ),
        ]
        if alert.kind == AlertKind.FORECAST:
            exhaustion = alert.projected_exhaustion_at
            context["exhaustion_date"] = _local(exhaustion, tz_name).date().isoformat() if exhaustion else ""
            facts[2:2] = [("Forecast at the period's end", nanos_usd_display(alert.projected_nanos or 0))]
            if exhaustion:
                facts.append(("Limit reached on (forecast)", context["exhaustion_date"]))
        facts.append(("Period", _span(alert.period_start, alert.period_end, tz_name)))
        context["facts"] = facts
    context["facts"].append(("Severity", context["severity"]))
    context["facts"].append(("Fired at", f"{context['fired_at']} ({tz_name})"))
    return context


def _local(moment: datetime, tz_name: str) -> datetime:
    return moment.astimezone(zoneinfo.ZoneInfo(tz_name))


def _span(start: datetime | None, end: datetime | None, tz_name: str) -> str:
    """A half-open range in ``tz_name``: whole days as inclusive dates ("2026-12-01 – 2026-12-31"),
    anything else as times ("2026-12-05 14:00 – 15:00")."""
    if start is None:
        return "—"
    first = _local(start, tz_name)
    if end is None:
        return f"since {first:%Y-%m-%d} (open-ended, {tz_name})"
    last = _local(end, tz_name)
    if first.time() == last.time() == datetime.min.time():
        return f"{first:%Y-%m-%d} – {(last - timedelta(days=1)):%Y-%m-%d} ({tz_name})"
    end_format = "%H:%M" if first.date() == last.date() else "%Y-%m-%d %H:%M"
    return f"{first:%Y-%m-%d %H:%M} – {last.strftime(end_format)} ({tz_name})"
