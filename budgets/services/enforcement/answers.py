"""What a check answers: :class:`CheckResult` and its budget lines, warnings, the refusal
(``BudgetExceeded``, the budgets at fault, pausing the agent) and the store-failure answer."""

import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import OperationalError, transaction

from budgets.errors import BudgetExceeded, BudgetStoreUnavailable
from budgets.models import AuditAction, AuditEntry, Budget, Enforcement, ExceededAction, nanos_usd_text
from budgets.selectors import status_of
from budgets.services.enforcement.store import _Attempt, _fetch, _PeriodGone, _Refused, _sql
from budgets.services.periods import Bounds
from costs.models import AgentStatus
from costs.services.hierarchy import agent_set_status

# Named after the package, as before it was split: logging is configured and read by that name.
logger = logging.getLogger(__package__)

ALLOW, WARN, DOWNGRADE = "allow", "warn", "downgrade"

UNPRICED_MODEL = "unpriced_model"
STORE_UNAVAILABLE = "budget_store_unavailable"

# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One covering budget's current period as the check left it (this reservation included)."""

    budget_id: int
    scope: str
    period_start: datetime
    period_end: datetime | None
    limit_nanos: int
    spent_nanos: int
    reserved_nanos: int
    status: str  # ok / warning (past a threshold) / exceeded (over the limit)

    @property
    def remaining_nanos(self) -> int:
        # Clamped at zero, as the budgets API reports it; `status` says when a budget is over.
        return max(0, self.limit_nanos - self.spent_nanos - self.reserved_nanos)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What :func:`budget_check` decided. ``created`` is False for an idempotent replay (the held
    reservation of the same ``request_id``) and for a fail-open answer (nothing reserved)."""

    decision: str
    model: str
    reservation_id: uuid.UUID | None
    reserved_nanos: int
    expires_at: datetime | None
    budgets: list[BudgetLine]
    warnings: list[str] = field(default_factory=list)
    created: bool = True


def budget_line_payload(line: BudgetLine) -> dict:
    """A budget line as in the public API (money as decimal USD strings)."""
    return {
        "id": line.budget_id,
        "scope": line.scope,
        "period_start": line.period_start,
        "period_end": line.period_end,
        "limit_usd": nanos_usd_text(line.limit_nanos),
        "spent_usd": nanos_usd_text(line.spent_nanos),
        "reserved_usd": nanos_usd_text(line.reserved_nanos),
        "remaining_usd": nanos_usd_text(line.remaining_nanos),
        "status": line.status,
    }


class _Answers:
    """The steps of :class:`~budgets.services.enforcement.check._Check` that build its answers."""

    def _at_fault(self, attempt: _Attempt, refused: _Refused) -> list[tuple[Budget, BudgetLine]]:
        """The hard budgets this attempt does not fit in, as they stood (the refusing one always)."""
        refused_id, rows = refused.period_id, refused.counters
        if rows is None:
            ids = [period.pk for _, _, period in attempt.plan]
            rows = {row[0]: row[1:] for row in _fetch(_sql()["periods"](len(ids)), ids)}
        if refused_id not in rows:
            raise _PeriodGone()
        at_fault = []
        for budget, bounds, period in attempt.plan:
            if budget.enforcement != Enforcement.HARD or period.pk not in rows:
                continue
            spent, reserved, limit, ceiling = rows[period.pk]
            if period.pk == refused_id or spent + reserved + attempt.amount_nanos > ceiling:
                at_fault.append((budget, self._line(budget, bounds, (spent, reserved, limit, ceiling))))
        return at_fault

    def _exceeded(self, at_fault, attempt: _Attempt, note: str) -> BudgetExceeded:
        ends = [line.period_end for _, line in at_fault]
        # The request fits again only once every budget at fault has reset (or in-flight
        # reservations are settled for less or released); a total budget never resets.
        retry_after = None
        if ends and all(end is not None for end in ends):
            retry_after = max(1, math.ceil((max(ends) - self.now).total_seconds()))
        names = ", ".join(f"{budget.name!r} (id {budget.pk})" for budget, _ in at_fault)
        amount = nanos_usd_text(attempt.amount_nanos)
        message = f"Reserving {amount} USD for {attempt.model} would exceed hard budget {names}."
        message += note
        return BudgetExceeded(
            message,
            retry_after=retry_after,
            extra={
                "model": attempt.model,
                "required_usd": nanos_usd_text(attempt.amount_nanos),
                "budgets": [budget_line_payload(line) for _, line in at_fault],
            },
        )

    def _pause_agent_if_asked(self, at_fault) -> None:
        agent = self.target.agent
        pausing = [b for b, _ in at_fault if b.action == ExceededAction.PAUSE_AGENT]
        if agent is None or not pausing:
            return
        with transaction.atomic():
            if agent_set_status(agent=agent, status=AgentStatus.PAUSED):
                AuditEntry.objects.create(
                    organization_id=self.scope.organization.pk,
                    budget=pausing[0],
                    agent=agent,
                    actor_label=f"budget-check (api-key:{self.scope.api_key.prefix})",
                    action=AuditAction.AGENT_PAUSED,
                    changes={
                        "status": [AgentStatus.ACTIVE.value, AgentStatus.PAUSED.value],
                        "reason": "budget_exceeded",
                    },
                )

    # -- failure --

    def store_unavailable(self, exc: OperationalError) -> CheckResult:
        # Budgets unknown (the store failed while reading them) count as hard: fail closed means closed.
        hard = self.candidates is None or any(b.enforcement == Enforcement.HARD for b, _ in self.candidates)
        fail_open = settings.SPENDGUARD_BUDGET_STORE_FAILURE == "open" or not hard
        logger.warning(
            "budget store unavailable (%s); %s: organization=%s project=%s agent=%s model=%s request_id=%s",
            exc,
            "allowing without a reservation" if fail_open else "refusing",
            self.scope.organization.pk,
            self.target.project.pk if self.target.project is not None else self.target.project_slug,
            self.target.agent_name,
            self.model,
            self.request_id,
        )
        if not fail_open:
            raise BudgetStoreUnavailable() from exc
        return CheckResult(
            decision=ALLOW,
            model=self.model,
            reservation_id=None,
            reserved_nanos=0,
            expires_at=None,
            budgets=[],
            warnings=[STORE_UNAVAILABLE],
            created=False,
        )

    # -- helpers --

    def _line(self, budget: Budget, bounds: Bounds, counters) -> BudgetLine:
        spent, reserved, limit, _ceiling = counters
        return BudgetLine(
            budget_id=budget.pk,
            scope=budget.scope,
            period_start=bounds.starts_at,
            period_end=bounds.ends_at,
            limit_nanos=limit,
            spent_nanos=spent,
            reserved_nanos=reserved,
            status=status_of(limit_nanos=limit, used_nanos=spent + reserved, thresholds=budget.thresholds),
        )


def _thresholds(thresholds) -> list[int]:
    return [t for t in thresholds or () if isinstance(t, int) and not isinstance(t, bool)]


def _warnings(lines: list[BudgetLine], budgets: list[Budget]) -> list[str]:
    """``budget_over_limit:<id>`` for a budget over its limit after this reservation (a soft one,
    or a hard one inside its grace), ``budget_threshold:<id>:<pct>`` for one past its highest
    alert threshold below 100 %."""
    warnings = []
    for line, budget in zip(lines, budgets, strict=True):
        used = line.spent_nanos + line.reserved_nanos
        if used > line.limit_nanos:
            warnings.append(f"budget_over_limit:{budget.pk}")
            continue
        below_100 = [t for t in _thresholds(budget.thresholds) if t < 100]
        if below_100 and used * 100 >= max(below_100) * line.limit_nanos:
            warnings.append(f"budget_threshold:{budget.pk}:{max(below_100)}")
    return warnings
