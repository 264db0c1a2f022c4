"""The spend store in SQL: the statements (prepared on PostgreSQL), running them, and the
reservation itself (ADR 0003) — one statement on PostgreSQL, a transaction of single statements
elsewhere."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import psycopg
from django.conf import settings
from django.db import connection, transaction

from budgets.models import Budget, BudgetPeriod, CheckContextVersion, Enforcement, Reservation, ReservationHold
from budgets.services.periods import Bounds
from config.db import in_list, row_shape
from costs.models import Agent, Sprint
from pricing.models import ModelPrice


class _Refused(Exception):
    """A hard period refused the amount (raised inside the reservation transaction, it rolls it
    back). ``counters``: ``{period id: (spent, reserved, limit, ceiling)}`` as they were when
    refused, when the store reported them (else they are read again)."""

    def __init__(self, period_id: int, counters: dict[int, tuple] | None = None) -> None:
        super().__init__(period_id)
        self.period_id = period_id
        self.counters = counters


class _PeriodGone(Exception):
    """A period row vanished between lookup and update (deleted by an operator): check again."""


class _Stale(Exception):
    """The check context version moved on since what the check used was read: read afresh."""


@dataclass(slots=True)
class _Attempt:
    """One model tried against the covering budgets: what it costs and the periods it needs."""

    model: str
    price: ModelPrice | None
    amount_nanos: int
    # (budget, bounds, period), in ascending period id: the order every writer locks periods in.
    plan: list[tuple[Budget, Bounds, BudgetPeriod]]


# --- the reservation -------------------------------------------------------------------------


def _reserve_postgresql(plan, *, amount: int, stamp, reservation: list, guard: int | None) -> dict[int, tuple]:
    """Reserve ``amount`` on every period of ``plan`` and record the reservation, all or none, in
    ONE statement (ADR 0003): lock the periods in ascending id order (``FOR UPDATE``, waiting at
    most ``SPENDGUARD_BUDGET_LOCK_TIMEOUT_MS``, set local to this statement's transaction), decide
    from the locked, current counters whether every hard period fits, and only then add the
    amount and insert the reservation and its holds.

    One statement instead of a transaction of several: the hot period row stays locked only while
    PostgreSQL runs it and commits, never across a round trip to this process — with every check
    of an organization on one row, that lock hold time bounds the checks per second.

    ``guard``: the organization's check context version the plan was read at; the statement does
    nothing and :class:`_Stale` is raised when it has moved on (None: no such condition).

    Returns ``{period id: (spent, reserved, limit, ceiling)}`` after the reservation; raises
    :class:`_Refused` (with the counters as they were) when a hard period refused.
    """
    organization_id = reservation[1]
    fresh = [guard, organization_id, guard]
    if not plan:  # no covering budget: the reservation still records what settlement will release
        if not _execute_prepared(_sql()["insert_reservation_typed"], [*reservation, *fresh]):
            raise _Stale()
        return {}
    rows = _execute_prepared(_sql()["reserve"](len(plan)), _reserve_params(plan, amount, stamp, reservation, fresh))
    if rows and rows[0][0] == "stale":
        raise _Stale()
    counters = {row[1]: tuple(row[2:]) for row in rows}
    if rows and rows[0][0] == "reserved":
        return counters
    if len(counters) < len(plan):
        raise _PeriodGone()
    for budget, _, period in plan:
        spent, reserved, _limit, ceiling = counters[period.pk]
        if budget.enforcement == Enforcement.HARD and spent + reserved + amount > ceiling:
            raise _Refused(period.pk, counters)
    raise _PeriodGone()  # pragma: no cover - the statement refuses only for a hard period


def _reserve_params(plan, amount: int, stamp, reservation: list, fresh: list) -> list:
    hard = [budget.enforcement == Enforcement.HARD for budget, _, _ in plan]
    ids = [period.pk for _, _, period in plan]
    return [
        str(settings.SPENDGUARD_BUDGET_LOCK_TIMEOUT_MS),
        *fresh,
        *(value for period_id, is_hard in zip(ids, hard, strict=True) for value in (period_id, amount, is_hard)),
        *ids,
        len(plan),
        stamp,
        *reservation,
        reservation[0],
    ]


def _reserve_portable(plan, *, amount: int, stamp, reservation: list) -> dict[int, tuple]:
    """The same protocol as a transaction of single statements (SQLite, the embedded default: its
    writers are serialised by the database lock, so the guarded updates cannot interleave)."""
    after: dict[int, tuple] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        for budget, _, period in plan:
            if budget.enforcement == Enforcement.HARD:
                cursor.execute(_sql()["reserve_hard"], [amount, stamp, period.pk, amount])
            else:
                cursor.execute(_sql()["reserve_soft"], [amount, stamp, period.pk])
            row = cursor.fetchone()
            if row is None:
                raise _Refused(period.pk)
            after[period.pk] = row
        cursor.execute(_sql()["insert_reservation"], reservation)
        for _, _, period in plan:
            cursor.execute(_sql()["insert_hold"], [reservation[0], period.pk, amount])
    return after


# --- SQL --------------------------------------------------------------------------------------

# What the check (and period_ensure, period_bounds, covers) read; bookkeeping columns stay unloaded.
_BUDGET_FIELDS = tuple(
    f.attname for f in Budget._meta.concrete_fields if f.attname not in ("is_active", "created_at", "updated_at")
)
_PERIOD_FIELDS = tuple(
    f.attname for f in BudgetPeriod._meta.concrete_fields if f.attname not in ("created_at", "updated_at")
)
_AGENT_FIELDS = ("id", "project_id", "name", "status", "model_override")


def _run(statements: list[tuple[str, list]]) -> list[list[tuple] | None]:
    """Execute ``statements`` in order and return each one's rows (None for those without).

    On PostgreSQL they go in one round trip (psycopg pipeline mode): every round trip costs the
    web process more CPU than the statement costs the server. Errors surface as Django's database
    exceptions, as from a Django cursor."""
    if connection.vendor != "postgresql":
        results = []
        with connection.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)
                results.append(cursor.fetchall() if _returns_rows(sql) else None)
        return results
    if len(statements) == 1:  # nothing to pipeline: entering pipeline mode would cost more
        sql, params = statements[0]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [cursor.fetchall() if _returns_rows(sql) else None]
    connection.ensure_connection()
    raw = connection.connection
    cursors = []
    with connection.wrap_database_errors:
        try:
            with raw.pipeline():
                for sql, params in statements:
                    cursor = raw.cursor()
                    cursors.append(cursor)
                    cursor.execute(sql, params)
            # (Not cursor.description: psycopg builds a Column object per column on every access.)
            return [
                cursor.fetchall() if _returns_rows(sql) else None
                for cursor, (sql, _) in zip(cursors, statements, strict=True)
            ]
        finally:
            for cursor in cursors:
                cursor.close()


def _execute_prepared(sql: str, params: list) -> list[tuple]:
    """Run one statement on PostgreSQL as a server-side prepared statement: this connection parses
    and plans it once instead of on every check (planning the reservation statement costs
    PostgreSQL about as much as running it). Every parameter must have a type PostgreSQL can
    infer or is cast (``%s::bigint``); a Python int sent for ``id IN (...)`` could arrive as
    ``numeric`` and lose the index."""
    with connection.cursor() as django_cursor:  # connects and runs Django's health check if due
        raw = django_cursor.cursor.connection
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall() if _returns_rows(sql) else []


def _returns_rows(sql: str) -> bool:
    return sql.startswith("SELECT") or "RETURNING" in sql


def _dt(value: datetime):
    """A datetime as the database stores it (SQLite: Django's naive-UTC text)."""
    return connection.ops.adapt_datetimefield_value(value)


def _uuid(value: uuid.UUID):
    """A UUID as the database stores it (native on PostgreSQL, 32 hex characters on SQLite)."""
    return value if connection.features.has_native_uuid_field else value.hex


def _fetch(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


@cache
def _statements(vendor: str) -> dict:
    quote = connection.ops.quote_name
    budget, period = row_shape(Budget, _BUDGET_FIELDS), row_shape(BudgetPeriod, _PERIOD_FIELDS)
    budgets_t, periods_t = budget.table, period.table
    reservations_t = quote(Reservation._meta.db_table)
    holds_t = quote(ReservationHold._meta.db_table)
    sprints_t = quote(Sprint._meta.db_table)
    reservation_cols = (
        "id, organization_id, project_id, agent_id, request_id, model, amount_nanos, status, created_at, expires_at"
    )
    agent = row_shape(Agent, _AGENT_FIELDS)
    agents_t = agent.table
    counters = "spent_nanos, reserved_nanos, limit_nanos, ceiling_nanos"
    # Has the organization's check context version moved on? (params: guard, organization id, guard;
    # a null guard means no condition)
    fresh = (
        f"(%s::bigint IS NULL OR coalesce((SELECT version FROM {quote(CheckContextVersion._meta.db_table)} "
        "WHERE organization_id = %s::bigint), 0) = %s::bigint)"
    )
    candidates = (
        f"SELECT {budget.select('b')}, {period.select('p')} FROM {budgets_t} b "
        f"LEFT JOIN {periods_t} p ON p.budget_id = b.id AND p.starts_at <= %s "
        "AND (p.ends_at IS NULL OR p.ends_at > %s) "
        "WHERE b.organization_id = %s AND b.is_active = %s AND ("
        "b.agent_id = {agent} OR b.project_id = %s "
        f"OR b.sprint_id IN (SELECT id FROM {sprints_t} WHERE project_id = %s) "
        "OR (b.project_id IS NULL AND b.sprint_id IS NULL AND b.agent_id IS NULL)) ORDER BY b.id"
    )
    guarded = f"UPDATE {periods_t} SET reserved_nanos = reserved_nanos + %s, updated_at = %s WHERE id = %s"
    return {
        "candidates": candidates.format(agent="%s"),
        "candidates_by_name": candidates.format(
            agent=f"(SELECT id FROM {agents_t} WHERE project_id = %s AND name = %s)"
        ),
        "agent": f"SELECT {agent.select()} FROM {agent.table} WHERE project_id = %s AND name = %s",
        "reserve_hard": f"{guarded} AND spent_nanos + reserved_nanos + %s <= ceiling_nanos RETURNING {counters}",
        "reserve_soft": f"{guarded} RETURNING {counters}",
        "periods": lambda n: f"SELECT id, {counters} FROM {periods_t} WHERE id IN {in_list([None] * n)}",
        "insert_reservation": f"INSERT INTO {reservations_t} ({reservation_cols}) VALUES ({', '.join(['%s'] * 10)})",
        "insert_hold": f"INSERT INTO {holds_t} (reservation_id, period_id, amount_nanos) VALUES (%s, %s, %s)",
        "reserve": lambda n: (
            "WITH cfg AS (SELECT set_config('lock_timeout', %s, true) AS lock_timeout), "
            f"fresh AS (SELECT {fresh} AS ok), "
            "want (id, amount, hard) AS (VALUES "
            + ", ".join(["(%s::bigint, %s::bigint, %s::boolean)"] * n)
            + f"), locked AS (SELECT p.id, p.{counters.replace(', ', ', p.')} FROM {periods_t} p, cfg, fresh "
            f"WHERE fresh.ok AND p.id IN ({', '.join(['%s::bigint'] * n)}) ORDER BY p.id FOR UPDATE OF p), "
            "verdict AS (SELECT count(*) = %s::bigint AND coalesce(bool_and(NOT w.hard "
            "OR l.spent_nanos + l.reserved_nanos + w.amount <= l.ceiling_nanos), true) AS fits "
            "FROM locked l JOIN want w ON w.id = l.id), "
            f"upd AS (UPDATE {periods_t} p SET reserved_nanos = p.reserved_nanos + w.amount, updated_at = %s "
            f"FROM want w, verdict v WHERE p.id = w.id AND v.fits RETURNING p.id, p.{counters.replace(', ', ', p.')}), "
            f"r AS (INSERT INTO {reservations_t} ({reservation_cols}) SELECT %s::uuid, %s::bigint, %s::bigint, "
            "%s::bigint, %s::varchar, %s::varchar, %s::bigint, %s::varchar, %s::timestamptz, %s::timestamptz "
            "FROM verdict WHERE fits), "
            f"h AS (INSERT INTO {holds_t} (reservation_id, period_id, amount_nanos) "
            "SELECT %s::uuid, w.id, w.amount FROM want w, verdict v WHERE v.fits) "
            "SELECT 'reserved', * FROM upd "
            "UNION ALL SELECT 'refused', * FROM locked WHERE NOT (SELECT fits FROM verdict) "
            "UNION ALL SELECT 'stale', NULL, NULL, NULL, NULL, NULL FROM fresh WHERE NOT fresh.ok"
        ),
        "insert_reservation_typed": (
            f"INSERT INTO {reservations_t} ({reservation_cols}) SELECT %s::uuid, %s::bigint, %s::bigint, "
            "%s::bigint, %s::varchar, %s::varchar, %s::bigint, %s::varchar, %s::timestamptz, %s::timestamptz "
            f"WHERE {fresh} RETURNING id"
        ),
        "hold_amounts": f"SELECT period_id, amount_nanos FROM {holds_t} WHERE reservation_id = %s ORDER BY period_id",
    }


def _sql() -> dict:
    return _statements(connection.vendor)
