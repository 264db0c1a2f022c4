"""Reads of the costs app: the usage ledger as an API key may see it, and API key lookup."""

from functools import cache

from django.db import connection
from django.db.models import QuerySet

from config.db import row_shape
from config.errors import NotFound
from costs.models import Agent, ApiKey, Organization, Project, UsageRecord
from costs.services.scope import KeyScope


def usage_records_visible(*, scope: KeyScope) -> QuerySet[UsageRecord]:
    """The ledger rows ``scope`` may read (organization, project or agent), newest first, with what
    the API answer needs joined in."""
    return (
        UsageRecord.objects.filter(**scope.usage_filter())
        .select_related("organization", "project", "sprint", "agent")
        .order_by("-occurred_at", "-id")
    )


def usage_record_get(*, scope: KeyScope, pk: int) -> UsageRecord:
    """One ledger row; rows outside ``scope`` (e.g. another organization's) are "not found"."""
    row = usage_records_visible(scope=scope).filter(pk=pk).first()
    if row is None:
        raise NotFound("No usage record with this id.")
    return row


def api_key_get_by_secret(*, secret: str) -> ApiKey | None:
    """The API key whose secret is ``secret`` (revoked ones included), with its organization,
    project and agent loaded — one plain-SQL round trip, since this runs on every agent request."""
    with connection.cursor() as cursor:
        cursor.execute(api_key_sql(), [ApiKey.hash_secret(secret)])
        row = cursor.fetchone()
    return None if row is None else api_key_from_row(row)


def api_key_from_row(row: tuple) -> ApiKey:
    """An :func:`api_key_sql` row (its leading columns) -> the ApiKey with its relations filled in."""
    objects, start = [], 0
    for model in _API_KEY_JOIN:
        shape = row_shape(model)
        values = row[start : start + len(shape.fields)]
        start += len(shape.fields)
        objects.append(shape.instance(values) if values[0] is not None else None)
    api_key, organization, project, agent = objects
    # Assigning fills the relation caches, so api_key.project etc. cost no further query.
    api_key.organization, api_key.project, api_key.agent = organization, project, agent
    return api_key


_API_KEY_JOIN = (ApiKey, Organization, Project, Agent)


@cache
def api_key_sql(*, where: str = "k.key_hash = %s", extra_columns: str = "") -> str:
    """SELECT of an API key joined with its organization (``o``), project (``p``) and agent
    (``a``), filtered by ``where`` on ``k``; ``extra_columns`` (SQL, e.g. a scalar subquery on
    ``k.organization_id``) are appended after the columns :func:`api_key_from_row` reads."""
    k, o, p, a = (row_shape(model) for model in _API_KEY_JOIN)
    extra = f", {extra_columns}" if extra_columns else ""
    return (
        f"SELECT {k.select('k')}, {o.select('o')}, {p.select('p')}, {a.select('a')}{extra} FROM {k.table} k "
        f"JOIN {o.table} o ON o.id = k.organization_id "
        f"LEFT JOIN {p.table} p ON p.id = k.project_id "
        f"LEFT JOIN {a.table} a ON a.id = k.agent_id "
        f"WHERE {where}"
    )
