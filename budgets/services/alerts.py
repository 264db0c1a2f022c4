"""Budget alerts: threshold crossings (detected where spend is booked), their records, and the
operators' acknowledge / resolve (issue 5; ADR 0005).

Once-only is enforced by the database (``BudgetAlert``'s unique constraints): :func:`alert_record`
inserts, and a conflicting insert — the same threshold crossed again in the same period after spend
was released and re-booked, a replayed request, a second run of a periodic job — records nothing and
queues nothing. A new period, or a changed limit, is a new key, so it re-arms the thresholds.

Delivery rows are written in the same transaction as the alert (so an outage loses nothing) and the
first attempt is queued after commit (``budgets.services.delivery``).
"""

import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from budgets.models import (
    AlertKind,
    AlertStatus,
    AuditAction,
    AuditEntry,
    Budget,
    BudgetAlert,
    BudgetPeriod,
    nanos_usd_display,
    severity_for_percent,
)
from budgets.services.actors import actor_identity
from budgets.signals import budget_threshold_crossed

logger = logging.getLogger(__name__)


# --- detection --------------------------------------------------------------------------------


def thresholds_crossed(*, thresholds, before_nanos: int, after_nanos: int, limit_nanos: int) -> list[int]:
    """The thresholds (percent of ``limit_nanos``) with ``before < threshold <= after``, ascending.
    Exact integer arithmetic: threshold t is reached when ``spent x 100 >= t x limit``."""
    if after_nanos <= before_nanos or limit_nanos <= 0:
        return []
    return [
        t
        for t in sorted({t for t in thresholds or () if isinstance(t, int) and not isinstance(t, bool) and t > 0})
        if before_nanos * 100 < t * limit_nanos <= after_nanos * 100
    ]


def thresholds_cross(*, budget: Budget, period: BudgetPeriod, before_nanos: int) -> list[int]:
    """Send ``budget_threshold_crossed`` for each threshold of ``budget`` that moving ``period``'s
    settled spend from ``before_nanos`` to ``period.spent_nanos`` crossed. Call it where spend is
    booked, inside the booking's transaction, with the values the booking's own update returned."""
    from budgets.services.actions import action_thresholds

    crossed = thresholds_crossed(
        thresholds=[*(budget.thresholds or ()), *action_thresholds(budget)],
        before_nanos=before_nanos,
        after_nanos=period.spent_nanos,
        limit_nanos=period.limit_nanos,
    )
    for threshold in crossed:
        budget_threshold_crossed.send(
            sender=Budget,
            budget=budget,
            period=period,
            threshold=threshold,
            spent_nanos=period.spent_nanos,
            limit_nanos=period.limit_nanos,
        )
    return crossed


# --- records ----------------------------------------------------------------------------------


def budget_node_label(budget: Budget) -> str:
    """'Project support-bot', 'Agent triage', ... — who the budget belongs to, for messages."""
    scope = budget.scope
    if scope == "organization":
        return f"Organization {budget.organization.name}"
    node = getattr(budget, scope)
    word = scope.title()
    # Sprints are often named "Sprint 12": don't say "Sprint Sprint 12".
    return node.name if node.name.lower().startswith(word.lower() + " ") else f"{word} {node.name}"


def threshold_alert_record(
    *, budget: Budget, period: BudgetPeriod, threshold: int, spent_nanos: int, limit_nanos: int
) -> BudgetAlert | None:
    """Record that ``budget``'s ``period`` reached ``threshold`` % (None if already recorded)."""
    percent_of_limit = spent_nanos * 100 // limit_nanos if limit_nanos else 0
    message = (
        f"{budget_node_label(budget)} reached {threshold}% of its {budget.period_word}"
        f" budget {budget.name!r}: {nanos_usd_display(spent_nanos)} of {nanos_usd_display(limit_nanos)}"
        f" ({percent_of_limit}%)."
    )
    return alert_record(
        organization_id=budget.organization_id,
        kind=AlertKind.THRESHOLD,
        severity=severity_for_percent(threshold),
        message=message[:300],
        spend_nanos=spent_nanos,
        budget=budget,
        period=period,
        threshold_percent=threshold,
        limit_nanos=limit_nanos,
    )


# The fields of each kind's once-only key (BudgetAlert's unique constraints).
_KEYS = {
    AlertKind.THRESHOLD: ("budget", "period_start", "kind", "threshold_percent", "limit_nanos"),
    AlertKind.FORECAST: ("budget", "period_start", "kind", "threshold_percent", "limit_nanos"),
    AlertKind.ANOMALY: ("organization_id", "project", "agent", "window", "window_start", "kind"),
}
# (An anomaly names either an agent or a project, so filtering on both, one of them null, is its key.)


def alert_record(
    *,
    organization_id: int,
    kind: str,
    severity: str,
    message: str,
    spend_nanos: int,
    fired_at: datetime | None = None,
    budget: Budget | None = None,
    period: BudgetPeriod | None = None,
    threshold_percent: int | None = None,
    limit_nanos: int | None = None,
    **details,
) -> BudgetAlert | None:
    """Insert one alert, once, with its pending deliveries, and queue the first delivery attempt
    after commit. Returns None (and writes nothing) when the alert's once-only key exists already.

    ``details``: the kind's other fields (anomaly: ``project`` / ``agent``, ``window``,
    ``window_start``, ``baseline_nanos``, ``cutoff_nanos``; forecast: ``projected_nanos``,
    ``projected_exhaustion_at``; ``period_start`` / ``period_end`` when there is no ``period``
    row). Runs in the caller's transaction (a savepoint of its own), so a booking that rolls back
    takes its alert with it.
    """
    from budgets.services.delivery import alert_deliveries_create, alert_delivery_queue

    alert = BudgetAlert(
        organization_id=organization_id,
        kind=kind,
        severity=severity,
        message=message,
        spend_nanos=spend_nanos,
        fired_at=fired_at or timezone.now(),
        budget=budget,
        period=period,
        period_start=period.starts_at if period is not None else details.pop("period_start", None),
        period_end=period.ends_at if period is not None else details.pop("period_end", None),
        threshold_percent=threshold_percent,
        limit_nanos=limit_nanos,
        **details,
    )
    try:
        with transaction.atomic():
            alert.save(force_insert=True)
    except IntegrityError:
        key = {field: getattr(alert, field) for field in _KEYS[kind]}
        if BudgetAlert.objects.filter(**key).exists():
            return None  # recorded before: once only
        raise  # another constraint: a bug, not a duplicate
    alert_deliveries_create(alert=alert)
    transaction.on_commit(lambda: alert_delivery_queue(alert_id=alert.pk))
    logger.info("Alert %s recorded: %s", alert.pk, message)
    return alert


# --- operators --------------------------------------------------------------------------------


@transaction.atomic
def alerts_acknowledge(*, alerts, actor=None, actor_label: str = "", now: datetime | None = None) -> list[BudgetAlert]:
    """Acknowledge the open ones among ``alerts`` (a queryset or list); returns those changed.
    Acknowledged alerts stay listed, with who and when. Audited per alert."""
    return _move(alerts, AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED, actor, actor_label, now)


@transaction.atomic
def alerts_resolve(*, alerts, actor=None, actor_label: str = "", now: datetime | None = None) -> list[BudgetAlert]:
    """Resolve the open or acknowledged ones among ``alerts``; returns those changed. Audited."""
    return _move(alerts, None, AlertStatus.RESOLVED, actor, actor_label, now)


def _move(alerts, from_status, to_status, actor, actor_label, now) -> list[BudgetAlert]:
    now = now or timezone.now()
    user, label = actor_identity(actor, actor_label)
    ids = [alert.pk for alert in alerts]
    movable = BudgetAlert.objects.select_for_update().filter(pk__in=ids).exclude(status=AlertStatus.RESOLVED)
    if from_status is not None:
        movable = movable.filter(status=from_status)
    changed = list(movable.order_by("pk"))
    stamp = (
        {"acknowledged_at": now, "acknowledged_by": user}
        if to_status == AlertStatus.ACKNOWLEDGED
        else {"resolved_at": now, "resolved_by": user}
    )
    action = AuditAction.ALERT_ACKNOWLEDGED if to_status == AlertStatus.ACKNOWLEDGED else AuditAction.ALERT_RESOLVED
    for alert in changed:
        old = alert.status
        alert.status = to_status
        alert.handled_by_label = label
        for field, value in stamp.items():
            setattr(alert, field, value)
        alert.save(update_fields=["status", "handled_by_label", *stamp])
        AuditEntry.objects.create(
            organization_id=alert.organization_id,
            budget_id=alert.budget_id,
            agent_id=alert.agent_id,
            actor=user,
            actor_label=label,
            action=action,
            changes={"alert": alert.pk, "status": {"old": old, "new": to_status}},
        )
    return changed
