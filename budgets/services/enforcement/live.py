"""The reservation on the Redis live store (``SPENDGUARD_BUDGET_STORE=redis``, ADR 0008): the step
of :class:`~budgets.services.enforcement.check._Check` that replaces the PostgreSQL statement."""

import uuid
from datetime import datetime
from functools import cache

from budgets.models import BudgetPeriod, Enforcement
from budgets.services import context_listener, redis_store
from budgets.services.check_context import version_sql
from budgets.services.enforcement.store import _Attempt, _execute_prepared, _fetch, _PeriodGone, _Refused, _Stale
from config.db import in_list


class _AlreadyReserved(Exception):
    """The check's ``request_id`` already holds a reservation: answer that one."""


_SPENT_SQL = f"SELECT id, spent_nanos, spent_version FROM {BudgetPeriod._meta.db_table} WHERE id IN "


class _LiveStore:
    """Reserving on Redis. A context from this process's cache is used as is while the process
    hears of changes as they commit (:mod:`budgets.services.context_listener`); otherwise its
    version is confirmed on PostgreSQL first (one indexed read: the Redis script cannot see it). So
    a pause, a revoked key or a changed budget acts on the next check, as with the PostgreSQL store
    (with the listener: on the first check after its notification arrived)."""

    def _reserve_live(
        self, attempt: _Attempt, *, reservation_id: uuid.UUID, agent_id: int | None, created_at: datetime, expires_at
    ) -> dict[int, tuple]:
        organization_id = self.scope.organization.pk
        context_listener.listener.ensure_started()
        if self.guard is not None and not self.read_now and not context_listener.listener.healthy():
            (version,) = _execute_prepared(_version_sql(), [organization_id])[0]
            if version != self.guard:
                raise _Stale()
        # Periods read from PostgreSQL by this check carry their spend: copied into the store where
        # newer (after a lost or evicted key the store then starts from the ledger's figure).
        copies = (
            {period.pk: (period.spent_nanos, period.spent_version) for _, _, period in attempt.plan}
            if self.read_now
            else {}
        )
        for _ in range(2):  # a second time only after loading periods the store did not have
            plan = [
                (p.pk, b.enforcement == Enforcement.HARD, p.ceiling_nanos, copies.get(p.pk)) for b, _, p in attempt.plan
            ]
            outcome = redis_store.reserve(
                plan=plan,
                amount_nanos=attempt.amount_nanos,
                reservation_id=reservation_id,
                organization_id=organization_id,
                project_id=self.target.project.pk,
                agent_id=agent_id,
                request_id=self.request_id,
                model=attempt.model,
                created_at=created_at,
                expires_at=expires_at,
            )
            if outcome.kind != "missing":
                break
            # Not in the store (first use, or lost): load every plan period's spend afresh.
            ids = [period.pk for _, _, period in attempt.plan]
            copies = {pid: (spent, version) for pid, spent, version in _fetch(_SPENT_SQL + in_list(ids), ids)}
            if len(copies) < len(ids):
                raise _PeriodGone()
        else:
            raise _PeriodGone()
        if outcome.kind == "replay":
            raise _AlreadyReserved()
        after = {
            period.pk: (*outcome.counters[period.pk], period.limit_nanos, period.ceiling_nanos)
            for _, _, period in attempt.plan
        }
        if outcome.kind == "refused":
            amount = attempt.amount_nanos
            refusing = next(
                period.pk
                for budget, _, period in attempt.plan
                if budget.enforcement == Enforcement.HARD
                and after[period.pk][0] + after[period.pk][1] + amount > period.ceiling_nanos
            )
            raise _Refused(refusing, after)
        return after


@cache
def _version_sql() -> str:
    return version_sql().replace("= %s", "= %s::bigint")  # typed: the statement is prepared
