"""Operators' writes on budgets: create, update, delete, reset the current period. Each writes an
:class:`~budgets.models.AuditEntry` (who, when, a field-level diff) in the same transaction.

The admin and the budgets API call these; nothing else writes budgets.

How a change reaches enforcement (live :class:`~budgets.models.BudgetPeriod` rows):

- **limit, grace or enforcement** changed: ``limit_nanos`` / ``ceiling_nanos`` of the budget's
  current and future period rows are rewritten in the same transaction, so the very next check
  compares against the new limit (spend and holds are kept).
- **what is counted** changed — period kind, custom range, time zone, model filter, the node
  (project / sprint / agent), or switched on/off: the budget's period rows are deleted. The next
  check or settlement creates the current one again with its spend taken from the ledger, which
  is the truth. Holds of in-flight reservations on the deleted rows go with them (cascade): those
  requests are no longer counted as reserved against this budget — they are counted as spent when
  their usage arrives. A switched-off budget is neither enforced nor settled, so keeping its rows
  would leave them stale when it is switched on again.
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from budgets.models import (
    AuditAction,
    AuditEntry,
    Budget,
    BudgetPeriod,
    Enforcement,
    ExceededAction,
    PeriodKind,
    Reservation,
    ReservationHold,
    ReservationStatus,
    default_thresholds,
    nanos_usd_text,
)
from budgets.services import redis_store
from budgets.services.actors import actor_identity
from budgets.services.alerts import thresholds_cross
from budgets.services.periods import ledger_spend_nanos, period_bounds, period_ensure
from budgets.services.settlement import reservations_close
from config.errors import ValidationFailed
from costs.models import Agent, Organization, Project, Sprint
from pricing.calculator import format_usd

logger = logging.getLogger(__name__)

# Fields an operator may set (organization is fixed once created: audit rows and tenancy hang on it).
EDITABLE_FIELDS = (
    "name",
    "project",
    "sprint",
    "agent",
    "limit_usd",
    "period",
    "custom_start",
    "custom_end",
    "timezone",
    "model_filter",
    "enforcement",
    "grace_percent",
    "thresholds",
    "action",
    "downgrade_model",
    "is_active",
    "alert_emails",
)
# Changing one of these changes the ceiling a check compares against: rewrite the live rows.
LIMIT_FIELDS = frozenset({"limit_usd", "grace_percent", "enforcement"})
# Changing one of these changes which usage counts or which periods exist: drop the live rows.
RESHAPE_FIELDS = frozenset(
    {"period", "custom_start", "custom_end", "timezone", "model_filter", "project", "sprint", "agent", "is_active"}
)
_NODE_FIELDS = ("project", "sprint", "agent")


@dataclass(frozen=True, slots=True)
class PeriodResetResult:
    """What :func:`period_reset` did (nano-dollars). ``period`` is None when the budget has no
    current period (nothing to reset)."""

    period: BudgetPeriod | None
    released: int
    spent_before: int
    spent_after: int
    reserved_before: int
    reserved_after: int


def _live_release_period(period_id: int, now: datetime) -> tuple[int, int]:
    """Release the Redis store's reservations holding against ``period_id``; returns how many, and
    what the store had reserved on the period before."""
    reserved_before = redis_store.counters([period_id])[period_id][1]
    holding = redis_store.reservations_holding(period_id)
    closed = redis_store.close(status=ReservationStatus.RELEASED.value, now=now, reservation_ids=holding)
    return len(closed), reserved_before


def _live_recount(period: BudgetPeriod) -> int:
    """Recount what the Redis store holds on ``period`` from its held reservations (those made
    since the release) and return it; the re-derived spend is copied into it after the commit."""
    copy = (period.pk, period.spent_nanos, period.spent_version)
    transaction.on_commit(lambda: redis_store.spend_copy([copy]))
    return redis_store.reserved_recount([period.pk], repair=True)[period.pk][1]


def budget_node_resolve(
    *, organization: Organization, project: str | None, sprint: str | None, agent: str | None
) -> dict[str, Any]:
    """The node named by slugs (as the API takes them): ``{"project", "sprint", "agent"}`` objects,
    at most one of them set (the most specific named). ``sprint`` (a slug) and ``agent`` (a name)
    need ``project``. Unknown names raise ValidationFailed with field errors."""
    errors: dict[str, list[str]] = {}
    node: dict[str, Any] = {"project": None, "sprint": None, "agent": None}
    if sprint and agent:
        errors["sprint"] = ["A budget belongs to one node: name a sprint or an agent, not both."]
    if (sprint or agent) and not project:
        errors["project"] = ["Name the project of the sprint or agent."]
    if errors:
        raise ValidationFailed(fields=errors)
    if not project:
        return node
    project_obj = Project.objects.filter(organization=organization, slug=project).first()
    if project_obj is None:
        raise ValidationFailed(fields={"project": [f"No project {project!r} in organization {organization.slug!r}."]})
    if sprint:
        node["sprint"] = Sprint.objects.filter(project=project_obj, slug=sprint).first()
        if node["sprint"] is None:
            raise ValidationFailed(fields={"sprint": [f"No sprint {sprint!r} in project {project!r}."]})
    elif agent:
        node["agent"] = Agent.objects.filter(project=project_obj, name=agent).first()
        if node["agent"] is None:
            raise ValidationFailed(fields={"agent": [f"No agent {agent!r} in project {project!r}."]})
    else:
        node["project"] = project_obj
    return node


@transaction.atomic
def budget_create(
    *,
    organization: Organization,
    name: str,
    limit_usd: Decimal,
    project: Project | None = None,
    sprint: Sprint | None = None,
    agent: Agent | None = None,
    period: str = PeriodKind.MONTHLY,
    custom_start: datetime | None = None,
    custom_end: datetime | None = None,
    timezone: str = "UTC",
    model_filter: str = "",
    enforcement: str = Enforcement.HARD,
    grace_percent: Decimal = Decimal(0),
    thresholds: list[int] | None = None,
    action: str = ExceededAction.BLOCK,
    downgrade_model: str = "",
    is_active: bool = True,
    alert_emails: str = "",
    actor=None,
    actor_label: str = "",
) -> Budget:
    """A new budget on ``organization`` or one project / sprint / agent of it (at most one),
    validated with the model's rules (ValidationFailed with field errors, nothing written).

    ``limit_usd`` in USD; ``grace_percent`` lets hard budgets admit spend up to limit x (1 + grace/100).
    Its current live period is started here, with spend from the ledger, so a budget added to a node
    that already has usage is right from its first check (and reports read its live row instead of
    summing the ledger). Audited (``budget_created``) as ``actor`` (a user) or ``actor_label``.
    """
    budget = Budget(
        organization=organization,
        name=name,
        limit_usd=limit_usd,
        project=project,
        sprint=sprint,
        agent=agent,
        period=period,
        custom_start=custom_start,
        custom_end=custom_end,
        timezone=timezone,
        model_filter=model_filter,
        enforcement=enforcement,
        grace_percent=grace_percent,
        thresholds=default_thresholds() if thresholds is None else thresholds,
        action=action,
        downgrade_model=downgrade_model,
        is_active=is_active,
        alert_emails=alert_emails,
    )
    _validate(budget)
    budget.save()
    current_period_start(budget=budget)
    _audit(
        budget=budget,
        action=AuditAction.BUDGET_CREATED,
        changes={field: {"old": None, "new": _jsonable(getattr(budget, field))} for field in EDITABLE_FIELDS},
        actor=actor,
        actor_label=actor_label,
    )
    return budget


@transaction.atomic
def budget_update(
    *, budget: Budget, data: dict[str, Any], actor=None, actor_label: str = "", now: datetime | None = None
) -> Budget:
    """Apply ``data`` (field -> new value, fields of :data:`EDITABLE_FIELDS`; node fields are
    objects) to ``budget``. Returns the updated budget; a change that changes nothing writes nothing.

    The budget row is locked for the change, so concurrent edits apply one after the other and each
    audit diff is against what the other one wrote. Live periods follow the rules in the module
    docstring, in the same transaction. Audited (``budget_changed``, field-level old/new).
    """
    unknown = set(data) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationFailed(fields={field: ["This field cannot be changed."] for field in sorted(unknown)})
    current = Budget.objects.select_for_update().select_related("organization").get(pk=budget.pk)
    # Moving to another node replaces the node entirely (a budget has exactly one).
    if any(field in data for field in _NODE_FIELDS):
        data = {**{field: None for field in _NODE_FIELDS}, **data}
    changes = {}
    for field, value in data.items():
        old = getattr(current, field)
        if _jsonable(old) != _jsonable(value):
            changes[field] = {"old": _jsonable(old), "new": _jsonable(value)}
            setattr(current, field, value)
    if not changes:
        return current
    _validate(current)
    current.save()

    if RESHAPE_FIELDS & changes.keys():
        BudgetPeriod.objects.filter(budget=current).delete()
        current_period_start(budget=current, now=now)
    elif LIMIT_FIELDS & changes.keys():
        now = now or timezone.now()
        current_period_start(budget=current, now=now)
        live = BudgetPeriod.objects.filter(budget=current).filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now))
        live.update(limit_nanos=current.limit_nanos, ceiling_nanos=current.ceiling_nanos, updated_at=now)
        if "limit_usd" in changes and current.is_active:
            # A changed limit re-arms the thresholds (the alert key holds the limit): the spend already
            # booked this period crosses them again against the new limit, now.
            for period in live.filter(starts_at__lte=now):
                thresholds_cross(budget=current, period=period, before_nanos=0)
    _audit(budget=current, action=AuditAction.BUDGET_CHANGED, changes=changes, actor=actor, actor_label=actor_label)
    return current


def current_period_start(*, budget: Budget, now: datetime | None = None) -> BudgetPeriod | None:
    """Start ``budget``'s live period containing ``now`` (from the ledger) if it is active and has
    one; returns it. What a first check or settlement would do, done when the budget is written so
    the live row is there for reads (budgets.selectors would otherwise sum the ledger per read)."""
    if not budget.is_active:
        return None
    bounds = period_bounds(budget, now or timezone.now())
    if bounds is None:
        return None
    return period_ensure(budget, bounds)[0]


@transaction.atomic
def budget_delete(*, budget: Budget, actor=None, actor_label: str = "") -> None:
    """Delete ``budget`` with its periods and their holds (in-flight reservations stay held against
    the other budgets they cover, and settle normally). Audited (``budget_deleted``) with what the
    budget was; the audit row outlives it (its budget link becomes empty, the id stays in the diff).
    """
    snapshot = {field: {"old": _jsonable(getattr(budget, field)), "new": None} for field in EDITABLE_FIELDS}
    snapshot["id"] = {"old": budget.pk, "new": None}
    organization_id, agent_id = budget.organization_id, budget.agent_id
    budget.delete()
    AuditEntry.objects.create(
        organization_id=organization_id,
        budget=None,
        agent_id=agent_id,
        actor=actor,
        actor_label=_label(actor, actor_label),
        action=AuditAction.BUDGET_DELETED,
        changes=snapshot,
    )


def period_reset(
    *, budget: Budget, actor=None, actor_label: str = "", now: datetime | None = None
) -> PeriodResetResult:
    """Operators' "reset this period": start the budget's current period over from the truth.

    It does **not** forget real spend — the ledger is the truth, and a budget that forgot its spend
    would let agents overspend. It:

    1. releases every reservation still held against the current period (status ``released``; its
       holds on *all* the budgets it covers are given back, since a reservation is one unit) — e.g.
       reservations of crashed agents that would otherwise block until they expire;
    2. re-derives ``spent_nanos`` from the ledger and ``reserved_nanos`` from the reservations still
       held (ones made after step 1 started), under a row lock on the period, so a concurrent
       settlement or check is applied after it, never lost (the same repair reconciliation does).

    To let an agent spend more, raise the limit. Audited (``period_reset``, before/after figures).
    """
    now = now or timezone.now()
    bounds = period_bounds(budget, now)
    if bounds is None:
        return PeriodResetResult(None, 0, 0, 0, 0, 0)
    live = redis_store.enabled()
    with transaction.atomic():
        period, _ = period_ensure(budget, bounds)
    # The Redis store's reservations on the period are released first (outside the transaction:
    # Redis is not part of it); what they held is part of the audited "before".
    live_released, live_before = _live_release_period(period.pk, now) if live else (0, 0)
    with transaction.atomic():
        # A snapshot for the audit row (not locked: reservations are closed before periods are locked,
        # the order every writer follows).
        before = BudgetPeriod.objects.get(pk=period.pk)
        # 1. Release the held reservations (guarded flip, holds given back on every period they cover).
        holding = ReservationHold.objects.filter(period=period).values("reservation_id")
        released = list(
            Reservation.objects.filter(id__in=holding, status=ReservationStatus.HELD).values_list("id", flat=True)
        )
        flipped = reservations_close(reservation_ids=released, status=ReservationStatus.RELEASED, now=now)
        # 2. Re-derive the reset period from the truth while its row is locked (a concurrent settlement
        # or check waits and applies its change after this one, never lost).
        BudgetPeriod.objects.select_for_update().get(pk=period.pk)
        spent = ledger_spend_nanos(budget, bounds)
        reserved = (
            ReservationHold.objects.filter(period=period, reservation__status=ReservationStatus.HELD).aggregate(
                total=Sum("amount_nanos")
            )["total"]
            or 0
        )
        BudgetPeriod.objects.filter(pk=period.pk).update(spent_nanos=spent, reserved_nanos=reserved, updated_at=now)
        period.refresh_from_db()
        if live:
            # Re-derived in Redis from its held reservations (checks made meanwhile) after the commit.
            reserved += _live_recount(period)
        result = PeriodResetResult(
            period,
            len(flipped) + live_released,
            before.spent_nanos,
            spent,
            before.reserved_nanos + live_before,
            reserved,
        )
        _audit(
            budget=budget,
            action=AuditAction.PERIOD_RESET,
            changes={
                "period_start": _jsonable(bounds.starts_at),
                "period_end": _jsonable(bounds.ends_at),
                "spent_usd": {"old": nanos_usd_text(result.spent_before), "new": nanos_usd_text(spent)},
                "reserved_usd": {"old": nanos_usd_text(result.reserved_before), "new": nanos_usd_text(reserved)},
                "released_reservations": len(flipped) + live_released,
            },
            actor=actor,
            actor_label=actor_label,
        )
    if result.spent_before != spent:
        logger.warning(
            "Budget %s period %s: spent was %s nano-USD, the ledger says %s (reset by %s).",
            budget.pk,
            period.pk,
            result.spent_before,
            spent,
            _label(actor, actor_label),
        )
    return result


def _validate(budget: Budget) -> None:
    """The model's rules (fields, ``Budget.clean``, constraints) as field errors. Constraints that
    ``clean`` does not cover get a field-level message here rather than a constraint name."""
    errors: dict[str, list[str]] = {}
    if budget.period == PeriodKind.CUSTOM:
        if budget.custom_start is None:
            errors["custom_start"] = ["A custom period needs a start."]
        if budget.custom_end is None:
            errors["custom_end"] = ["A custom period needs an end."]
        if budget.custom_start and budget.custom_end and budget.custom_start >= budget.custom_end:
            errors["custom_end"] = ["The end must be after the start."]
    if budget.limit_usd is not None and budget.limit_usd <= 0:
        errors["limit_usd"] = ["The limit must be more than 0."]
    if budget.grace_percent is not None and budget.grace_percent < 0:
        errors["grace_percent"] = ["Grace cannot be negative."]
    try:
        budget.full_clean(exclude=list(errors))
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationFailed(fields=errors)


def _audit(*, budget: Budget, action: str, changes: dict, actor, actor_label: str) -> AuditEntry:
    return AuditEntry.objects.create(
        organization_id=budget.organization_id,
        budget=budget,
        agent_id=budget.agent_id,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_label=_label(actor, actor_label),
        action=action,
        changes=changes,
    )


def _label(actor, actor_label: str) -> str:
    return actor_identity(actor, actor_label)[1]


def _jsonable(value: Any) -> Any:
    """A field value as it goes into the audit diff: related objects as ``{"id", "name"}``, money
    as decimal strings, instants in ISO 8601."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return format_usd(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if hasattr(value, "pk"):
        return {"id": value.pk, "name": str(value)}
    return str(value)
