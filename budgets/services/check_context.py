"""What a budget check reads before it reserves, cached per process (ADR 0003, "Check context cache").

A check needs the caller's API key (with its organization, project, agent), the covering budgets
with their current period rows, the sprints and the agent. Reading them costs two round trips and
most of the check's CPU, yet they change rarely. So each process keeps them, per organization,
tagged with the organization's :class:`~budgets.models.CheckContextVersion` as it was when they were
read — and the reservation statement itself (one round trip, the only one of a cached check)
proceeds only if the version is still that value. PostgreSQL triggers bump the version on every
change that matters (a paused agent, a revoked key, a new budget or period row, ...), so a cached
check acts on them exactly as a check that read everything afresh would.

Only used on PostgreSQL (the triggers live there); elsewhere every check reads afresh.

Entries are also bounded in time: a context is used only between the moment it was read and the
first instant its periods or the current sprint could change (``valid_until``); the clock, not a
version bump, moves a budget into its next period.

Thread safety: plain dict reads and single assignments (atomic under the GIL); a lost insert only
costs a later re-read.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection

from budgets.models import CheckContextVersion
from costs.models import ApiKey
from costs.selectors import api_key_from_row, api_key_sql

# Bounds on what one process keeps (per organization / in all); past them it starts afresh.
MAX_CONTEXTS_PER_ORGANIZATION = 4096
MAX_ORGANIZATIONS = 4096


@dataclass(slots=True)
class CheckContext:
    """What :class:`budgets.services.enforcement.check._Check` read for one target (project, agent,
    sprint) at ``version``: valid for checks at ``computed_at <= now < valid_until``."""

    computed_at: datetime
    valid_until: datetime | None
    project: object
    agent: object | None
    candidates: list
    sprints: list | None
    sprint: object | None  # the sprint the target is in (None: none, or no budget needs one)
    # model -> the periods it reserves against ((budget, bounds, period) in period-id order)
    plans: dict = field(default_factory=dict)

    def usable_at(self, now: datetime) -> bool:
        return self.computed_at <= now and (self.valid_until is None or now < self.valid_until)


@dataclass(slots=True)
class _Organization:
    version: int
    keys: dict[str, ApiKey] = field(default_factory=dict)  # key hash -> key (not revoked at `version`)
    contexts: dict[tuple, CheckContext] = field(default_factory=dict)


_organizations: dict[int, _Organization] = {}
_key_organizations: dict[str, int] = {}  # key hash -> organization id
# Moves on whenever something is forgotten: what a read that began before then found is not cached,
# since a change it may have missed was just announced (budgets.services.context_listener).
_generation = 0


def enabled() -> bool:
    return connection.vendor == "postgresql"


# --- API keys -----------------------------------------------------------------------------------


def api_key_for_check(*, secret: str) -> tuple[ApiKey | None, int | None]:
    """The API key of ``secret`` and the check context version it is known valid at.

    From the cache when this process saw the key at its organization's current cached version;
    otherwise read (revoked keys included, so that the caller can say so) together with the
    version, in one round trip. The version is None where the cache is off."""
    key_hash = ApiKey.hash_secret(secret)
    org_id = _key_organizations.get(key_hash)
    if org_id is not None:
        state = _organizations.get(org_id)
        if state is not None:
            api_key = state.keys.get(key_hash)
            if api_key is not None:
                return api_key, state.version
    return _read_key("k.key_hash = %s", key_hash)


def api_key_reread(*, api_key_id: int) -> tuple[ApiKey | None, int | None]:
    """The key (fresh) and the version it was read at: after a cached check found its context stale."""
    return _read_key("k.id = %s", api_key_id)


def _read_key(where: str, value) -> tuple[ApiKey | None, int | None]:
    """Read a key (revoked ones included, so that the caller can say so) with its organization's
    version, in one round trip; remember it when it is valid and the cache is on."""
    began = _generation
    with connection.cursor() as cursor:
        cursor.execute(_key_sql(where), [value])
        row = cursor.fetchone()
    if row is None:
        return None, None
    api_key = api_key_from_row(row)
    if not enabled():
        return api_key, None
    version = row[-1]
    if api_key.revoked_at is None:
        state = _state_at(api_key.organization_id, version, generation=began)
        if state is not None:
            if len(_key_organizations) >= MAX_ORGANIZATIONS * 16:
                _key_organizations.clear()
            state.keys[api_key.key_hash] = api_key
            _key_organizations[api_key.key_hash] = api_key.organization_id
    return api_key, version


def _key_sql(where: str) -> str:
    if not enabled():
        return api_key_sql(where=where)
    table = connection.ops.quote_name(CheckContextVersion._meta.db_table)
    version = f"coalesce((SELECT version FROM {table} WHERE organization_id = k.organization_id), 0)"
    return api_key_sql(where=where, extra_columns=version)


# --- contexts -----------------------------------------------------------------------------------


def context_get(*, organization_id: int, version: int, target: tuple, now: datetime) -> CheckContext | None:
    state = _organizations.get(organization_id)
    if state is None or state.version != version:
        return None
    context = state.contexts.get(target)
    return context if context is not None and context.usable_at(now) else None


def context_put(*, organization_id: int, version: int, target: tuple, context: CheckContext, generation: int) -> None:
    """Cache ``context``, read at ``version`` by a read that began at ``generation``."""
    state = _state_at(organization_id, version, generation=generation)
    if state is None:
        return
    if len(state.contexts) >= MAX_CONTEXTS_PER_ORGANIZATION:
        state.contexts.clear()
    state.contexts[target] = context


def version_sql() -> str:
    """One row, one column: the current version of the organization given as the parameter."""
    table = connection.ops.quote_name(CheckContextVersion._meta.db_table)
    return f"SELECT coalesce((SELECT version FROM {table} WHERE organization_id = %s), 0)"


def generation() -> int:
    """Capture before reading what is to be cached (see ``_generation``)."""
    return _generation


def forget(*, organization_id: int) -> None:
    """Drop what this process holds for an organization (its version moved on)."""
    global _generation
    _generation += 1
    _organizations.pop(organization_id, None)


def check_context_clear() -> None:
    global _generation
    _generation += 1
    _organizations.clear()
    _key_organizations.clear()


def _state_at(organization_id: int, version: int, *, generation: int) -> _Organization | None:
    """The organization's cache entry at ``version``: replaced when ``version`` is newer, None
    (do not cache) when it is older than what is held or the read began before something was
    forgotten."""
    if generation != _generation:
        return None
    state = _organizations.get(organization_id)
    if state is None or version > state.version:
        if state is None and len(_organizations) >= MAX_ORGANIZATIONS:
            _organizations.clear()
        state = _organizations[organization_id] = _Organization(version=version)
    return state if state.version == version else None
