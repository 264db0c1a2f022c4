"""Idempotency on ``request_id``: a repeated check answers the reservation it already holds."""

from budgets.errors import ReservationClosed
from budgets.models import Budget, BudgetPeriod, Reservation, ReservationStatus
from budgets.services import redis_store
from budgets.services.enforcement.answers import ALLOW, DOWNGRADE, UNPRICED_MODEL, WARN, CheckResult, _warnings
from budgets.services.enforcement.pricing import _price_for
from budgets.services.enforcement.store import _fetch, _sql, _uuid
from budgets.services.periods import Bounds
from config.db import fetch_instances, in_list
from config.errors import OutOfScope


class _Replay:
    """The step of :class:`~budgets.services.enforcement.check._Check` that answers a repeat."""

    def _replay_if_held(self) -> CheckResult | None:
        if not self.request_id:
            return None
        organization_id = self.scope.organization.pk
        held = (
            redis_store.reservation_for_request(organization_id=organization_id, request_id=self.request_id)
            if redis_store.enabled()
            else None
        )
        if held is not None:
            reservation, period_ids = held.as_reservation(), held.period_ids
        else:  # the PostgreSQL store's (also those made before a switch to Redis)
            found = fetch_instances(
                Reservation, None, "organization_id = %s AND request_id = %s", [organization_id, self.request_id]
            )
            if not found:
                return None
            reservation, period_ids = found[0], None
        owned = reservation.project_id is not None and self.scope.owns(
            organization_id=reservation.organization_id,
            project_id=reservation.project_id,
            agent_id=reservation.agent_id,
        )
        if not owned:
            raise OutOfScope(fields={"request_id": ["Already used outside this API key's scope."]})
        if reservation.status != ReservationStatus.HELD:
            raise ReservationClosed(
                f"The reservation for request_id {self.request_id!r} is {reservation.status}; use a new request_id."
            )
        if period_ids is None:
            period_ids = [row[0] for row in _fetch(_sql()["hold_amounts"], [_uuid(reservation.pk)])]
        live = redis_store.counters(period_ids) if held is not None else {}
        periods = (
            fetch_instances(BudgetPeriod, None, f"id IN {in_list(period_ids)} ORDER BY id", period_ids)
            if period_ids
            else []
        )
        budgets = {b.pk: b for b, _ in self.candidates or []}
        missing = sorted({p.budget_id for p in periods} - budgets.keys())
        if missing:  # e.g. a budget deactivated since: still held against, still shown
            for budget in fetch_instances(Budget, None, f"id IN {in_list(missing)}", missing):
                budgets[budget.pk] = budget
        lines, held_budgets = [], []
        for p in periods:
            budget = budgets[p.budget_id]
            held_budgets.append(budget)
            spent, reserved = p.spent_nanos, p.reserved_nanos
            if p.pk in live:  # the Redis store's counters (its spend copy, when loaded)
                copy, reserved = live[p.pk]
                spent = spent if copy is None else copy
            counters = (spent, reserved, p.limit_nanos, p.ceiling_nanos)
            lines.append(self._line(budget, Bounds(p.starts_at, p.ends_at), counters))
        warnings = _warnings(lines, held_budgets)
        if _price_for(reservation.model, self.now) is None:
            warnings.insert(0, UNPRICED_MODEL)
        decision = DOWNGRADE if reservation.model != self.model else (WARN if warnings else ALLOW)
        return CheckResult(
            decision=decision,
            model=reservation.model,
            reservation_id=reservation.pk,
            reserved_nanos=reservation.amount_nanos,
            expires_at=reservation.expires_at,
            budgets=lines,
            warnings=warnings,
            created=False,
        )
