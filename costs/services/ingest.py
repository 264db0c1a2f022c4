"""Usage ingestion: validate, attribute, price and append usage records to the ledger.

The one entry point is :func:`usage_ingest`; the HTTP API, the demo seeder, benchmarks and imports
all call it, so a record is costed the same way whichever door it came through.

Speed is part of the contract (issue 2: >= 20,000 records/s for batches of 1,000 over HTTP), so a
batch costs a fixed handful of queries whatever its size: one per kind of thing to resolve (projects,
agents, sprints, prices via :class:`pricing.selectors.PriceBook`, replayed rows) and one bulk write —
PostgreSQL ``COPY`` into a temporary table, then a single ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING RETURNING``. Validation is hand-written (:mod:`costs.services.usage_input`), and rows are
built without ``full_clean()``.
"""

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models.base import ModelState
from django.utils import timezone

from config.db import fetch_instances, in_list, row_shape
from config.errors import OutOfScope, ValidationFailed
from costs.models import Agent, ApiKey, CostSource, Project, Sprint, UsageRecord
from costs.services.scope import KeyScope, scope_for_key
from costs.services.usage_input import MAX_USD, usage_clean
from pricing.calculator import Rates, Usage, cost_of, quantize_usd
from pricing.selectors import PriceBook


@dataclass(frozen=True, slots=True)
class IngestedRecord:
    """One answer of :func:`usage_ingest`: the ledger row and whether it already existed."""

    row: UsageRecord
    replayed: bool


def usage_ingest(*, api_key: ApiKey, records: list[dict], now: datetime | None = None) -> list[IngestedRecord]:
    """Append ``records`` (usage objects as in DESIGN.md, "Usage object") to the ledger as ``api_key``.

    Returns one :class:`IngestedRecord` per input record, in input order. All or nothing, in one
    transaction:

    - Every record is validated before anything is written; problems are collected for every bad
      record and raised as ``ValidationFailed`` with ``fields={"records": {"<index>": {field: [...]}}}``
      (code ``batch_too_large`` when there are more than ``SPENDGUARD_INGEST_MAX_BATCH`` records).
    - A record naming a project or agent outside the key's scope, or replaying a ``request_id`` that
      belongs to a row outside it, raises ``OutOfScope`` (HTTP 403) for the whole batch.
    - Attribution (see :mod:`costs.services.scope`): project and agent come from the key's scope when
      omitted; unknown agent names under organization or project keys are registered. The sprint,
      when omitted, is the project's sprint whose dates contain ``occurred_at``'s date in the
      organization's time zone (or none).
    - Cost, in USD: with a catalog price in effect at ``occurred_at`` -> ``computed`` (parts stored,
      the price row linked, a sent ``provider_cost_usd`` kept beside it); without one but with a
      ``provider_cost_usd`` -> ``provided``; otherwise ``unpriced`` with a null cost (never $0).
      Amounts are quantized to the ledger's 12 decimal places.
    - Idempotent on ``request_id`` per organization: a replay returns the original row with
      ``replayed=True`` and writes nothing, even when its content differs and when replays race
      (the unique constraint decides; the loser reads the winner's row back).

    ``now`` (default: the current time) is the default ``occurred_at`` and the reference for the
    future-skew limit (``SPENDGUARD_MAX_FUTURE_SKEW_SECONDS``); ``received_at`` is always the wall
    clock at writing. Newly written rows are passed, inside the transaction, to the hooks registered
    with :func:`register_rows_written_hook` (the seam where budgets settle reservations).
    """
    now = now or timezone.now()
    scope = scope_for_key(api_key)
    _check_batch(records)
    values, errors, out_of_scope = _clean_all(records, scope=scope, now=now)
    if out_of_scope:
        raise OutOfScope(
            f"{_which(out_of_scope)} outside this API key's scope; nothing was written.",
            fields={"records": out_of_scope},
        )
    with transaction.atomic():
        known_agents = _attribute(values, scope=scope, errors=errors)
        if errors:
            raise ValidationFailed(
                f"{_which(errors)} invalid; nothing was written.", fields={"records": _sorted(errors)}
            )
        _register_agents(values, scope=scope, known=known_agents)
        _price(values)
        ingested = _write(values, scope=scope, received_at=timezone.now())
        new_rows = [item.row for item in ingested if not item.replayed]
        if new_rows:
            _after_rows_written(new_rows)
    return ingested


RowsWrittenHook = Callable[[list[UsageRecord]], None]
_rows_written_hooks: list[RowsWrittenHook] = []


def register_rows_written_hook(hook: RowsWrittenHook) -> None:
    """Register ``hook(rows)`` to run once per ingested batch, inside the ingest transaction, with
    the rows just written (replays excluded: they were counted when first written).

    The one seam through which a higher app learns about new usage (``pricing <- costs <- budgets``:
    costs must not import budgets). The budgets app registers its settlement here in
    ``BudgetsConfig.ready()`` — release each row's reservation and count its cost against every
    covering budget in the same transaction as the ledger rows (DESIGN.md flow 2). A hook that
    raises rolls the whole batch back. Hooks must not query per row. Registering twice is a no-op.
    """
    if hook not in _rows_written_hooks:
        _rows_written_hooks.append(hook)


def _after_rows_written(rows: list[UsageRecord]) -> None:
    for hook in _rows_written_hooks:
        hook(rows)


# --- validation -------------------------------------------------------------------------------


def _check_batch(records: Any) -> None:
    if not isinstance(records, list):
        raise ValidationFailed(fields={"records": ["Expected a list of usage objects."]})
    if not records:
        raise ValidationFailed(fields={"records": ["At least one record is required."]})
    limit = settings.SPENDGUARD_INGEST_MAX_BATCH
    if len(records) > limit:
        raise ValidationFailed(
            f"At most {limit} records per batch; got {len(records)}.",
            code="batch_too_large",
            fields={"records": [f"Ensure this list has at most {limit} records."]},
        )


def _clean_all(records: list, *, scope: KeyScope, now: datetime) -> tuple[list[dict | None], dict, dict]:
    """Validate every record; return cleaned values (None where invalid), errors and scope violations,
    both keyed by the record's index as a string."""
    max_future = timedelta(seconds=settings.SPENDGUARD_MAX_FUTURE_SKEW_SECONDS)
    level = scope.level
    cleaned: list[dict | None] = []
    errors: dict[str, dict] = {}
    out_of_scope: dict[str, dict] = {}
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(records):
        values, problems = usage_clean(raw, now=now, max_future=max_future)
        if type(raw) is dict:
            _check_scope(raw, scope, index, out_of_scope)
            if level != "agent" and raw.get("agent") is None and "agent" not in problems:
                article = "an" if level == "organization" else "a"
                problems["agent"] = [f"This field is required for {article} {level}-scoped API key."]
            if level == "organization" and raw.get("project") is None and "project" not in problems:
                problems["project"] = ["This field is required for an organization-scoped API key."]
            request_id = raw.get("request_id")
            if type(request_id) is str and "request_id" not in problems:
                first = first_seen.setdefault(request_id, index)
                if first != index:
                    problems["request_id"] = [f"Duplicate request_id in this batch (first used by record {first})."]
        if problems:
            errors[str(index)] = problems
            values = None
        cleaned.append(values)
    return cleaned, errors, out_of_scope


def _check_scope(raw: dict, scope: KeyScope, index: int, out_of_scope: dict) -> None:
    project, agent = raw.get("project"), raw.get("agent")
    problems = {}
    # Blank or non-string values are field errors (400), not scope violations.
    if type(project) is str and project and not scope.project_allowed(project):
        problems["project"] = [f"This API key may only write to project {scope.project.slug!r}."]
    if type(agent) is str and agent and not scope.agent_allowed(agent):
        problems["agent"] = [f"This API key may only write as agent {scope.agent.name!r}."]
    if problems:
        out_of_scope[str(index)] = problems


def _which(by_index: dict) -> str:
    indexes = sorted(by_index, key=int)
    shown = ", ".join(indexes[:10]) + (", ..." if len(indexes) > 10 else "")
    return f"Record {shown} is" if len(indexes) == 1 else f"Records {shown} are"


def _sorted(by_index: dict) -> dict:
    return {key: by_index[key] for key in sorted(by_index, key=int)}


# --- attribution ------------------------------------------------------------------------------


def _attribute(values: list[dict | None], *, scope: KeyScope, errors: dict) -> dict[tuple[int, str], Agent]:
    """Set ``organization_id``, ``project``, ``sprint`` on each valid record (two queries: projects
    for organization keys, then sprints); unknown project or sprint slugs become errors. Returns the
    records' agents that already exist, read in the sprints' round trip; unknown agents are
    registered later, after the batch is known to be valid, because registering writes."""
    valid = [(index, v) for index, v in enumerate(values) if v is not None]
    if scope.project is not None:
        projects = {scope.project.slug: scope.project}
    else:
        slugs = sorted({v["project_slug"] for _, v in valid})
        found = (
            fetch_instances(
                Project,
                ("id", "organization_id", "slug"),
                f"organization_id = %s AND slug IN {in_list(slugs)}",
                [scope.organization.id, *slugs],
            )
            if slugs
            else []
        )
        projects = {p.slug: p for p in found}

    for index, v in valid:
        project = projects.get(v["project_slug"] or scope.project.slug)
        if project is None:
            errors.setdefault(str(index), {})["project"] = [
                f"Unknown project {v['project_slug']!r} in organization {scope.organization.slug!r}."
            ]
            values[index] = None
        else:
            v["project"] = project

    tz = scope.organization.tzinfo
    wanted = [(index, v) for index, v in enumerate(values) if v is not None]
    for _, v in wanted:
        if v["sprint_slug"] is None:
            v["local_date"] = v["occurred_at"].astimezone(tz).date()
    sprints, known_agents = _load_sprints_and_agents(wanted, with_agents=scope.agent is None)
    by_slug = {(s.project_id, s.slug): s for s in sprints}
    by_project: dict[int, list[Sprint]] = defaultdict(list)
    for sprint in sprints:
        by_project[sprint.project_id].append(sprint)
    containing: dict[tuple[int, date], Sprint | None] = {}

    for index, v in wanted:
        project_id = v["project"].id
        slug = v["sprint_slug"]
        if slug is not None:
            sprint = by_slug.get((project_id, slug))
            if sprint is None:
                errors.setdefault(str(index), {})["sprint"] = [
                    f"Unknown sprint {slug!r} in project {v['project'].slug!r}."
                ]
                values[index] = None
                continue
        else:
            key = (project_id, v["local_date"])
            if key not in containing:
                # Sprints of one project do not overlap, so at most one contains the date.
                containing[key] = next(
                    (s for s in by_project[project_id] if s.start_date <= key[1] <= s.end_date), None
                )
            sprint = containing[key]
        v["sprint"] = sprint
    return known_agents


_SPRINT_COLUMNS = ("id", "project_id", "slug", "start_date", "end_date")
_AGENT_COLUMNS = ("id", "project_id", "name")


def _load_sprints_and_agents(
    wanted: list[tuple[int, dict]], *, with_agents: bool
) -> tuple[list[Sprint], dict[tuple[int, str], Agent]]:
    """The sprints named by slug plus those that may contain an auto-resolved date, and (for keys
    not bound to one agent) the records' existing agents — one round trip, since on the
    single-record path every round trip is ~0.3 ms of a 4 ms budget."""
    if not wanted:
        return [], {}
    project_ids = sorted({v["project"].id for _, v in wanted})
    named = sorted({v["sprint_slug"] for _, v in wanted if v["sprint_slug"] is not None})
    dates = [v["local_date"] for _, v in wanted if v["sprint_slug"] is None]
    conditions, params = [], []
    if named:
        conditions.append(f"slug IN {in_list(named)}")
        params += named
    if dates:
        conditions.append("(start_date <= %s AND end_date >= %s)")
        params += [max(dates), min(dates)]
    sprint_shape, agent_shape = row_shape(Sprint, _SPRINT_COLUMNS), row_shape(Agent, _AGENT_COLUMNS)
    sql = (
        f"SELECT 's', {sprint_shape.select()} FROM {sprint_shape.table} "
        f"WHERE ({' OR '.join(conditions)}) AND project_id IN {in_list(project_ids)}"
    )
    params += project_ids
    pairs = {(v["project"].id, v["agent_name"]) for _, v in wanted} if with_agents else set()
    if pairs:
        names = sorted({name for _, name in pairs})
        # Same column count and types as the sprint branch (name in the slug column, no dates).
        sql += (
            f" UNION ALL SELECT 'a', {agent_shape.select()}, NULL, NULL FROM {agent_shape.table} "
            f"WHERE project_id IN {in_list(project_ids)} AND name IN {in_list(names)}"
        )
        params += [*project_ids, *names]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    sprints = [sprint_shape.instance(row[1:]) for row in rows if row[0] == "s"]
    agents = (agent_shape.instance(row[1:4]) for row in rows if row[0] == "a")
    return sprints, {(a.project_id, a.name): a for a in agents if (a.project_id, a.name) in pairs}


def _register_agents(values: list[dict], *, scope: KeyScope, known: dict[tuple[int, str], Agent]) -> None:
    """Set ``agent`` on every record, registering unknown agent names under their project.

    Concurrency-safe without locks: insert the missing names ignoring conflicts (a concurrent batch
    may be registering the same agent), then read them back. Inserted in a fixed order so that two
    batches registering overlapping sets cannot deadlock.
    """
    if scope.agent is not None:
        for v in values:
            v["agent"] = scope.agent
        return
    wanted = {(v["project"].id, v["agent_name"]) for v in values}
    known = {pair: agent for pair, agent in known.items() if pair in wanted}
    missing = sorted(wanted - known.keys())
    if missing:
        Agent.objects.bulk_create(
            [Agent(project_id=project_id, name=name) for project_id, name in missing], ignore_conflicts=True
        )
        known.update(_agents(set(missing)))
    for v in values:
        v["agent"] = known[(v["project"].id, v["agent_name"])]


def _agents(pairs: set[tuple[int, str]]) -> dict[tuple[int, str], Agent]:
    project_ids = sorted({project_id for project_id, _ in pairs})
    names = sorted({name for _, name in pairs})
    found = fetch_instances(
        Agent,
        ("id", "project_id", "name"),
        f"project_id IN {in_list(project_ids)} AND name IN {in_list(names)}",
        [*project_ids, *names],
    )
    return {(a.project_id, a.name): a for a in found if (a.project_id, a.name) in pairs}


# --- pricing ----------------------------------------------------------------------------------


_COMPUTED, _PROVIDED, _UNPRICED = CostSource.COMPUTED.value, CostSource.PROVIDED.value, CostSource.UNPRICED.value


def _price(values: list[dict]) -> None:
    """Set the cost columns of every record (one PriceBook, two queries, for the whole batch)."""
    book = PriceBook({(v["model"], v["provider"]) for v in values})
    rates_by_price: dict[int, Rates] = {}
    too_large: dict[str, dict] = {}
    for index, v in enumerate(values):
        price = book.resolve(v["model"], v["provider"], v["occurred_at"])
        provided = v["provider_cost_usd"]  # already quantized by validation
        if price is not None:
            rates = rates_by_price.get(price.id)
            if rates is None:
                rates = rates_by_price[price.id] = Rates.from_price(price)
            parts = cost_of(
                rates,
                Usage(
                    prompt_tokens=v["prompt_tokens"],
                    completion_tokens=v["completion_tokens"],
                    cached_tokens=v["cached_tokens"],
                    cache_creation_tokens=v["cache_creation_tokens"],
                    reasoning_tokens=v["reasoning_tokens"],
                    batch=v["is_batch"],
                ),
            )
            total = quantize_usd(parts.total_usd)
            if total >= MAX_USD:  # only with absurd rates: token counts are capped at validation
                too_large[str(index)] = {"prompt_tokens": ["The cost of this usage is too large to record."]}
            v.update(
                price=price,
                cost_source=_COMPUTED,
                cost_usd=total,
                computed_cost_usd=total,
                input_cost_usd=quantize_usd(parts.input_usd),
                cached_input_cost_usd=quantize_usd(parts.cached_input_usd),
                cache_creation_cost_usd=quantize_usd(parts.cache_creation_usd),
                output_cost_usd=quantize_usd(parts.output_usd),
            )
        else:
            v.update(
                price=None,
                cost_source=_PROVIDED if provided is not None else _UNPRICED,
                cost_usd=provided,
                computed_cost_usd=None,
                input_cost_usd=None,
                cached_input_cost_usd=None,
                cache_creation_cost_usd=None,
                output_cost_usd=None,
            )
    if too_large:
        raise ValidationFailed(f"{_which(too_large)} invalid; nothing was written.", fields={"records": too_large})


# --- writing ----------------------------------------------------------------------------------

_FIELDS = UsageRecord._meta.concrete_fields
# Every column but the primary key, in model order: the shape of the COPY / INSERT rows.
_INSERT_FIELDS = [f for f in _FIELDS if not f.primary_key]
_INSERT_ATTNAMES = [f.attname for f in _INSERT_FIELDS]
_COLUMNS = ", ".join(connection.ops.quote_name(f.column) for f in _INSERT_FIELDS)
_TAGS_POSITION = _INSERT_ATTNAMES.index("tags")
_RELATED = ("organization", "project", "sprint", "agent", "price")
# Up to this many rows a plain multi-row INSERT beats creating a temporary table for COPY.
_VALUES_MAX_ROWS = 50


def _write(values: list[dict], *, scope: KeyScope, received_at: datetime) -> list[IngestedRecord]:
    organization = scope.organization
    for v in values:
        v["organization"] = organization
        v["organization_id"] = organization.id
        v["project_id"] = v["project"].id
        v["sprint_id"] = v["sprint"].id if v["sprint"] is not None else None
        v["agent_id"] = v["agent"].id
        v["price_id"] = v["price"].id if v["price"] is not None else None
        v["received_at"] = received_at
        v["_columns"] = [v[attname] for attname in _INSERT_ATTNAMES]
    if connection.vendor == "postgresql":
        new_ids = _insert_postgresql(values)
        replayed_ids = [v["request_id"] for v in values if v["request_id"] not in new_ids]
        originals = _originals(organization.id, replayed_ids) if replayed_ids else {}
    else:
        originals = _originals(organization.id, [v["request_id"] for v in values])
        new_ids = _insert_portable([v for v in values if v["request_id"] not in originals])

    result = []
    alias = connection.alias  # the proxy's thread-local lookup is slow: once per batch
    for index, v in enumerate(values):
        request_id = v["request_id"]
        if request_id in new_ids:
            result.append(IngestedRecord(row=_row(v, new_ids[request_id], alias), replayed=False))
            continue
        original = originals[request_id]
        if not scope.owns(
            organization_id=original.organization_id, project_id=original.project_id, agent_id=original.agent_id
        ):
            # Replaying must not disclose another project's or agent's row to a narrower key.
            raise OutOfScope(
                f"request_id {request_id!r} is already used by a record outside this API key's scope.",
                fields={"records": {str(index): {"request_id": ["Already used outside this key's scope."]}}},
            )
        result.append(IngestedRecord(row=original, replayed=True))
    return result


def _originals(organization_id: int, request_ids: list[str]) -> dict[str, UsageRecord]:
    rows = (
        UsageRecord.objects.select_related("organization", "project", "sprint", "agent")
        .filter(organization_id=organization_id, request_id__in=request_ids)
        .order_by()
    )
    return {row.request_id: row for row in rows}


def _insert_postgresql(values: list[dict]) -> dict[str, int]:
    """Insert, skipping request ids that already exist; return ``{request_id: id}`` of new rows.

    Rows go in ``request_id`` order (byte order, as in Python) so that concurrent batches with
    overlapping request ids take the unique-index locks in the same order and cannot deadlock; a
    conflicting insert from another open transaction makes ours wait for it, then skip the row.
    """
    table = UsageRecord._meta.db_table
    tags = _TAGS_POSITION
    rows = []
    for v in sorted(values, key=lambda v: v["request_id"]):
        row = v["_columns"].copy()
        row[tags] = json.dumps(row[tags])
        rows.append(row)
    conflict = "ON CONFLICT (organization_id, request_id) DO NOTHING RETURNING id, request_id"
    with connection.cursor() as cursor:
        if len(rows) <= _VALUES_MAX_ROWS:
            placeholders = "(" + ", ".join(["%s"] * len(_INSERT_ATTNAMES)) + ")"
            cursor.execute(
                f"INSERT INTO {table} ({_COLUMNS}) VALUES {', '.join([placeholders] * len(rows))} {conflict}",
                [value for row in rows for value in row],
            )
            inserted = cursor.fetchall()
        else:
            # ON COMMIT DROP is the safety net; the explicit DROP lets a caller's outer transaction
            # ingest several batches.
            cursor.execute(
                f"CREATE TEMPORARY TABLE usage_ingest_rows ON COMMIT DROP AS "
                f"SELECT {_COLUMNS} FROM {table} WITH NO DATA"
            )
            with cursor.copy(f"COPY usage_ingest_rows ({_COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"INSERT INTO {table} ({_COLUMNS}) SELECT {_COLUMNS} FROM usage_ingest_rows "
                f'ORDER BY request_id COLLATE "C" {conflict}'
            )
            inserted = cursor.fetchall()
            cursor.execute("DROP TABLE usage_ingest_rows")
    return {request_id: pk for pk, request_id in inserted}


def _insert_portable(values: list[dict]) -> dict[str, int]:
    """Other databases (SQLite, the embedded default): bulk insert, then read the ids back.

    The caller read the existing rows first in this transaction; SQLite allows one writer and fails
    a transaction whose snapshot went stale before its first write, so nothing slips in between.
    """
    if not values:
        return {}
    objs = [UsageRecord(**dict(zip(_INSERT_ATTNAMES, v["_columns"], strict=True))) for v in values]
    UsageRecord.objects.bulk_create(objs, ignore_conflicts=True)
    received_at = _INSERT_ATTNAMES.index("received_at")
    for v, obj in zip(values, objs, strict=True):
        v["_columns"][received_at] = obj.received_at  # auto_now_add set it while saving
    return dict(
        UsageRecord.objects.filter(
            organization_id=values[0]["organization_id"], request_id__in=[v["request_id"] for v in values]
        ).values_list("request_id", "id")
    )


def _row(v: dict, pk: int, alias: str) -> UsageRecord:
    """The new row as a model instance, built from the values just written (no read back).

    Equivalent to ``UsageRecord.from_db(...)`` plus caching the related objects, without running
    ``Model.__init__`` (its per-field descriptor work costs ~5x this, a tenth of a batch's time).
    The ledger model has no init signals, so nothing else is skipped.
    """
    row = UsageRecord.__new__(UsageRecord)
    attrs = row.__dict__
    attrs["id"] = pk
    attrs.update(zip(_INSERT_ATTNAMES, v["_columns"], strict=True))
    state = attrs["_state"] = ModelState()
    state.adding = False
    state.db = alias
    state.fields_cache = {name: v[name] for name in _RELATED}
    return row
