"""The Redis live-spend store (``SPENDGUARD_BUDGET_STORE=redis``; ADR 0008): reserved amounts and
held reservations live in Redis, settled spend is copied from PostgreSQL.

The contract is ADR 0003's: a reservation is added to every covering period or to none, only if
``spent + reserved + amount <= ceiling`` holds for each hard one at that instant, and closing a
reservation (settled, released, expired) takes its holds off exactly once. Redis runs each script
below atomically (no other command interleaves), which plays the role of PostgreSQL's row locks.

What is where:

* ``{prefix}p:<period id>`` (hash): ``s`` settled spend and ``v`` its version, copied from
  ``BudgetPeriod.spent_nanos`` / ``spent_version`` (the ledger stays the source of truth; a copy
  is taken only from the same or a newer version, so copies applied in any order keep the newest,
  and a copy of the current version repairs a damaged figure), and ``r``
  the reserved amount. A hash without ``v`` is not loaded yet: the check loads it and retries.
* ``{prefix}res:<reservation id>`` (hash): one reservation (status, attribution, amount, deadline,
  the period ids it holds against). Kept while held; ``SPENDGUARD_BUDGET_REDIS_CLOSED_RETENTION_SECONDS``
  after it closes (a repeated ``request_id`` then still answers 409), then Redis drops it — its
  outcome is in the ledger (usage rows carry the reservation id).
* ``{prefix}rq:<organization id>:<request id>``: the reservation of a ``request_id``.
* ``{prefix}due`` (sorted set): held reservations by deadline (ms), for the expiry job.
* ``{prefix}pend:<token>`` (hash) and ``{prefix}pdue``: spend being settled. Ingestion adds a batch's
  cost to ``r`` *before* its ledger transaction commits and moves it to ``s`` in one script after,
  so no check sees the spend in neither (which would let it overspend). A batch that rolled back
  or whose process died leaves its pending amount until the expiry job drops it (counting too much
  for a while, never too little) and copies the periods' spend again.

Money is integer nano-dollars. Lua numbers are doubles: sums and comparisons are exact below 2**53
nano-dollars (9,007,199 USD) per counter, which :data:`MAX_EXACT_NANOS` enforces on what is reserved.
"""

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

MAX_EXACT_NANOS = 2**53 - 1

# (period id, hard?, ceiling nano-dollars, (spent, version) read from PostgreSQL or None)
PlanPeriod = tuple[int, bool, int, tuple[int, int] | None]


def enabled() -> bool:
    return settings.SPENDGUARD_BUDGET_STORE == "redis"


@cache
def _client(url: str, timeout_ms: int) -> redis.Redis:
    # One pool per process (thread-safe). A short socket timeout: an unreachable store must fail
    # the check (closed or open, per SPENDGUARD_BUDGET_STORE_FAILURE) instead of hanging it.
    return redis.Redis.from_url(
        url, socket_timeout=timeout_ms / 1000, socket_connect_timeout=timeout_ms / 1000, decode_responses=True
    )


def client() -> redis.Redis:
    return _client(settings.SPENDGUARD_BUDGET_REDIS_URL, settings.SPENDGUARD_BUDGET_REDIS_TIMEOUT_MS)


def _prefix() -> str:
    return settings.SPENDGUARD_BUDGET_REDIS_PREFIX


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _from_ms(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC) if value else None


# --- scripts ------------------------------------------------------------------------------------

_MIRROR_FN = """
local function mirror(p, pid, s, v)
  local key = p .. 'p:' .. pid
  local cur = redis.call('HGET', key, 'v')
  if (not cur) or tonumber(cur) <= tonumber(v) then redis.call('HSET', key, 's', s, 'v', v) end
  redis.call('HSETNX', key, 'r', 0)
end
-- amount: a decimal string (Lua's own number formatting turns 1e14 and up into exponents). A period
-- whose hash is gone (lost, or its budget deleted) is not created again just to hold a zero.
local function unhold(key, amount)
  if amount == '0' or redis.call('EXISTS', key) == 0 then return end
  if redis.call('HINCRBY', key, 'r', '-' .. amount) < 0 then redis.call('HSET', key, 'r', 0) end
end
"""

# KEYS: the n period hashes (ascending id), the reservation hash, its request-id key, the due set.
# ARGV: n, amount, reservation id, deadline ms, has request id (1/0), organization, project, agent,
# request id, model, created ms, period ids (comma-separated), then per period: hard (1/0), ceiling,
# and a copy of its settled spend and version read from PostgreSQL ('' '' = none; applied first,
# where newer). Returns {'replay', id} | {'missing', i} | {'refused', s1, r1, ...} |
# {'reserved', s1, r1, ...} (counters as strings: as they were when refused, after the addition
# when reserved).
_RESERVE = """
local n = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[n + 2])
  if existing then return {'replay', existing} end
end
local s, r = {}, {}
local fits = true
for i = 1, n do
  local a = 9 + 4 * i
  if ARGV[a + 3] ~= '' then
    local cur = redis.call('HGET', KEYS[i], 'v')
    if (not cur) or tonumber(cur) <= tonumber(ARGV[a + 3]) then
      redis.call('HSET', KEYS[i], 's', ARGV[a + 2], 'v', ARGV[a + 3])
    end
  end
  local v = redis.call('HMGET', KEYS[i], 's', 'r', 'v')
  if not v[3] then return {'missing', tostring(i)} end
  s[i], r[i] = v[1], v[2] or '0'
  if ARGV[a] == '1' and tonumber(s[i]) + tonumber(r[i]) + amount > tonumber(ARGV[a + 1]) then fits = false end
end
local out = {fits and 'reserved' or 'refused'}
for i = 1, n do
  if fits then r[i] = string.format('%d', redis.call('HINCRBY', KEYS[i], 'r', ARGV[2])) end
  out[#out + 1] = s[i]
  out[#out + 1] = r[i]
end
if fits then
  redis.call('HSET', KEYS[n + 1], 'st', 'held', 'org', ARGV[6], 'proj', ARGV[7], 'agent', ARGV[8],
    'req', ARGV[9], 'model', ARGV[10], 'amt', ARGV[2], 'exp', ARGV[4], 'at', ARGV[11], 'holds', ARGV[12])
  redis.call('ZADD', KEYS[n + 3], ARGV[4], ARGV[3])
  if ARGV[5] == '1' then redis.call('SET', KEYS[n + 2], ARGV[3]) end
end
return out
"""

# KEYS: the due set, the pending due set.
# ARGV: prefix, status, closed ms, retention s, organization ('' = any), #ids, #request ids,
# #copies, pending token ('' = none), then the ids, the request ids, and (period id, spent, version)
# per copy. Closes the held reservations among the ids (and the request ids' reservations of the
# organization), copies spend, drops the pending batch — in one step. Returns the closed ids.
_CLOSE = (
    _MIRROR_FN
    + """
local p = ARGV[1]
local nr, nq, nm = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local token = ARGV[9]
local i = 10
local ids = {}
for _ = 1, nr do ids[#ids + 1] = ARGV[i]; i = i + 1 end
for _ = 1, nq do
  local rid = redis.call('GET', p .. 'rq:' .. ARGV[5] .. ':' .. ARGV[i])
  if rid then ids[#ids + 1] = rid end
  i = i + 1
end
local closed = {}
for _, rid in ipairs(ids) do
  local key = p .. 'res:' .. rid
  local f = redis.call('HMGET', key, 'st', 'org', 'amt', 'holds', 'req')
  if f[1] == 'held' and (ARGV[5] == '' or f[2] == ARGV[5]) then
    for pid in string.gmatch(f[4], '[^,]+') do unhold(p .. 'p:' .. pid, f[3]) end
    redis.call('HSET', key, 'st', ARGV[2], 'closed', ARGV[3])
    redis.call('EXPIRE', key, ARGV[4])
    if f[5] ~= '' then redis.call('EXPIRE', p .. 'rq:' .. f[2] .. ':' .. f[5], ARGV[4]) end
    redis.call('ZREM', KEYS[1], rid)
    closed[#closed + 1] = rid
  elseif f[1] ~= 'held' then
    redis.call('ZREM', KEYS[1], rid)  -- not held (or its record lost): nothing is due for it
  end
end
for _ = 1, nm do
  mirror(p, ARGV[i], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
if token ~= '' then
  local pkey = p .. 'pend:' .. token
  local h = redis.call('HGETALL', pkey)
  for k = 1, #h, 2 do unhold(p .. 'p:' .. h[k], h[k + 1]) end
  redis.call('DEL', pkey)
  redis.call('ZREM', KEYS[2], token)
end
return closed
"""
)

# KEYS: the pending due set. ARGV: prefix, token, deadline ms, then (period id, nano-dollars) pairs.
_PENDING = """
local p = ARGV[1]
local pkey = p .. 'pend:' .. ARGV[2]
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', pkey, ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', p .. 'p:' .. ARGV[i], 'r', ARGV[i + 1])
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
return 1
"""

# KEYS: the due set, the pending due set. ARGV: prefix, repair (1/0), then period ids.
# What the held reservations and pending batches add up to on each period, against its ``r``
# (set to that sum when repairing). Returns (period id, found, expected) triples.
_RECOUNT = """
local p = ARGV[1]
local want = {}
for i = 3, #ARGV do want[ARGV[i]] = 0 end
for _, rid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', p .. 'res:' .. rid, 'st', 'amt', 'holds')
  if f[1] == 'held' then
    for pid in string.gmatch(f[3], '[^,]+') do
      if want[pid] then want[pid] = want[pid] + tonumber(f[2]) end
    end
  end
end
for _, token in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local h = redis.call('HGETALL', p .. 'pend:' .. token)
  for k = 1, #h, 2 do
    if want[h[k]] then want[h[k]] = want[h[k]] + tonumber(h[k + 1]) end
  end
end
local out = {}
for i = 3, #ARGV do
  local key = p .. 'p:' .. ARGV[i]
  local found = tonumber(redis.call('HGET', key, 'r') or '0')
  local expected = want[ARGV[i]]
  if ARGV[2] == '1' and found ~= expected then redis.call('HSET', key, 'r', string.format('%d', expected)) end
  out[#out + 1] = ARGV[i]
  out[#out + 1] = string.format('%d', found)
  out[#out + 1] = string.format('%d', expected)
end
return out
"""


@cache
def _scripts(url: str, timeout_ms: int) -> dict:
    # register_script runs EVALSHA and loads the script again after a Redis restart (NOSCRIPT).
    redis_client = _client(url, timeout_ms)
    return {
        name: redis_client.register_script(source)
        for name, source in (("reserve", _RESERVE), ("close", _CLOSE), ("pending", _PENDING), ("recount", _RECOUNT))
    }


def _script(name: str):
    return _scripts(settings.SPENDGUARD_BUDGET_REDIS_URL, settings.SPENDGUARD_BUDGET_REDIS_TIMEOUT_MS)[name]


_hot = threading.local()


def _call_hot(name: str, keys: list, args: list):
    """Run a script on this thread's own connection, not through the client: its pool, retry and
    event plumbing cost about as much CPU as the call itself, and the budget check makes one per
    request. Errors are redis-py's (a broken connection is dropped and made again next time)."""
    script = _script(name)
    key = (settings.SPENDGUARD_BUDGET_REDIS_URL, settings.SPENDGUARD_BUDGET_REDIS_TIMEOUT_MS, os.getpid())
    conn = getattr(_hot, "conn", None)
    if conn is None or _hot.key != key:
        pool = client().connection_pool  # its settings, not one of its connections (not counted there)
        conn = _hot.conn = pool.connection_class(**pool.connection_kwargs)
        _hot.key = key
    try:
        conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return conn.read_response()
    except redis.exceptions.NoScriptError:  # a restarted Redis: load it again (as Script does)
        conn.send_command("SCRIPT", "LOAD", script.script)
        script.sha = conn.read_response()
        conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return conn.read_response()


# --- reservations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    """``kind``: reserved / refused / replay (the ``request_id`` holds ``replay_id``) / missing
    (``plan[missing_index]``'s counters are not loaded). ``counters``: {period id: (spent, reserved)}."""

    kind: str
    counters: dict[int, tuple[int, int]]
    replay_id: uuid.UUID | None = None
    missing_index: int | None = None


def reserve(
    *,
    plan: list[PlanPeriod],
    amount_nanos: int,
    reservation_id: uuid.UUID,
    organization_id: int,
    project_id: int | None,
    agent_id: int | None,
    request_id: str,
    model: str,
    created_at: datetime,
    expires_at: datetime,
) -> ReserveOutcome:
    """Hold ``amount_nanos`` on every period of ``plan`` (ascending id) and record the reservation,
    or do nothing: in one script, so all or none, against the counters as they are at that instant
    (after applying the plan's spend copies where newer). Nothing is written unless it fits."""
    p = _prefix()
    keys = [f"{p}p:{pid}" for pid, *_ in plan]
    keys += [f"{p}res:{reservation_id}", f"{p}rq:{organization_id}:{request_id}", f"{p}due"]
    args = [
        len(plan), amount_nanos, str(reservation_id), _ms(expires_at), 1 if request_id else 0,
        organization_id, project_id or "", agent_id or "", request_id, model, _ms(created_at),
        ",".join(str(pid) for pid, *_ in plan),
    ]  # fmt: skip
    for _, hard, ceiling, copy in plan:
        args += [1 if hard else 0, ceiling, *(copy if copy is not None else ("", ""))]
    reply = _call_hot("reserve", keys, args)
    kind = reply[0]
    if kind == "replay":
        return ReserveOutcome(kind, {}, replay_id=uuid.UUID(reply[1]))
    if kind == "missing":
        return ReserveOutcome(kind, {}, missing_index=int(reply[1]) - 1)
    values = [int(v) for v in reply[1:]]
    counters = {pid: (values[2 * i], values[2 * i + 1]) for i, (pid, *_) in enumerate(plan)}
    return ReserveOutcome(kind, counters)


@dataclass(frozen=True, slots=True)
class HeldReservation:
    """A reservation as the Redis store keeps it."""

    id: uuid.UUID
    organization_id: int
    project_id: int | None
    agent_id: int | None
    request_id: str
    model: str
    amount_nanos: int
    status: str
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    period_ids: list[int]

    def as_reservation(self):
        """An unsaved :class:`~budgets.models.Reservation` with these values (for shared code and
        the API's payloads)."""
        from budgets.models import Reservation

        return Reservation(
            id=self.id,
            organization_id=self.organization_id,
            project_id=self.project_id,
            agent_id=self.agent_id,
            request_id=self.request_id,
            model=self.model,
            amount_nanos=self.amount_nanos,
            status=self.status,
            created_at=self.created_at,
            expires_at=self.expires_at,
            closed_at=self.closed_at,
        )


def reservation_get(reservation_id: uuid.UUID) -> HeldReservation | None:
    fields = client().hgetall(f"{_prefix()}res:{reservation_id}")
    if not fields.get("st"):
        return None
    return HeldReservation(
        id=reservation_id,
        organization_id=int(fields["org"]),
        project_id=int(fields["proj"]) if fields.get("proj") else None,
        agent_id=int(fields["agent"]) if fields.get("agent") else None,
        request_id=fields.get("req", ""),
        model=fields.get("model", ""),
        amount_nanos=int(fields["amt"]),
        status=fields["st"],
        created_at=_from_ms(fields.get("at")),
        expires_at=_from_ms(fields.get("exp")),
        closed_at=_from_ms(fields.get("closed")),
        period_ids=[int(pid) for pid in fields.get("holds", "").split(",") if pid],
    )


def reservation_for_request(*, organization_id: int, request_id: str) -> HeldReservation | None:
    found = client().get(f"{_prefix()}rq:{organization_id}:{request_id}")
    return reservation_get(uuid.UUID(found)) if found else None


def close(
    *,
    status: str,
    now: datetime,
    reservation_ids=(),
    organization_id: int | None = None,
    request_ids=(),
    copies: list[tuple[int, int, int]] = (),
    pending_token: str = "",
) -> list[uuid.UUID]:
    """In one script: close the held reservations among ``reservation_ids`` (of ``organization_id``
    when given) and those of ``request_ids`` in ``organization_id`` as ``status``, taking their holds
    off; copy settled spend ``(period id, spent, version)``; drop the pending batch ``pending_token``.
    Returns the ids closed now (closing twice, or racing another closer, closes once)."""
    p = _prefix()
    args = [
        p, status, _ms(now), settings.SPENDGUARD_BUDGET_REDIS_CLOSED_RETENTION_SECONDS,
        organization_id if organization_id is not None else "", len(reservation_ids), len(request_ids),
        len(copies), pending_token, *(str(i) for i in reservation_ids), *request_ids,
    ]  # fmt: skip
    for copy in copies:
        args.extend(copy)
    reply = _script("close")(keys=[f"{p}due", f"{p}pdue"], args=args)
    return [uuid.UUID(value) for value in reply]


def spend_copy(copies: list[tuple[int, int, int]]) -> None:
    """Copy ``(period id, spent, version)`` from PostgreSQL where newer than what the store holds
    (also marks the periods loaded)."""
    if copies:
        close(status="settled", now=datetime.now(UTC), copies=copies)


def pending_add(*, token: str, spend: dict[int, int], deadline: datetime) -> None:
    """Count ``spend`` ({period id: nano-dollars}) as reserved under ``token`` until :func:`close`
    drops it (or the expiry job does, after ``deadline``)."""
    p = _prefix()
    args = [p, token, _ms(deadline)]
    for period_id, nanos in sorted(spend.items()):
        args += [period_id, nanos]
    _script("pending")(keys=[f"{p}pdue"], args=args)


def due_reservations(*, now: datetime, limit: int) -> list[uuid.UUID]:
    found = client().zrangebyscore(f"{_prefix()}due", "-inf", _ms(now), start=0, num=limit)
    return [uuid.UUID(value) for value in found]


def due_pending(*, now: datetime, limit: int) -> dict[str, list[int]]:
    """Pending batches past their deadline: {token: their period ids}."""
    p = _prefix()
    redis_client = client()
    tokens = redis_client.zrangebyscore(f"{p}pdue", "-inf", _ms(now), start=0, num=limit)
    return {token: sorted(int(pid) for pid in redis_client.hkeys(f"{p}pend:{token}")) for token in tokens}


def reservations_holding(period_id: int) -> list[uuid.UUID]:
    """The held reservations with a hold on ``period_id`` (scans the held ones: an operator's action)."""
    p = _prefix()
    redis_client = client()
    ids = redis_client.zrange(f"{p}due", 0, -1)
    if not ids:
        return []
    with redis_client.pipeline(transaction=False) as pipe:
        for rid in ids:
            pipe.hmget(f"{p}res:{rid}", "st", "holds")
        replies = pipe.execute()
    wanted = str(period_id)
    return [
        uuid.UUID(rid)
        for rid, (status, holds) in zip(ids, replies, strict=True)
        if status == "held" and wanted in (holds or "").split(",")
    ]


@dataclass(frozen=True, slots=True)
class HeldSummary:
    count: int
    amount_nanos: int


def held_summary() -> HeldSummary:
    """How many reservations the store holds, and their amounts' sum (for operators)."""
    p = _prefix()
    redis_client = client()
    ids = redis_client.zrange(f"{p}due", 0, -1)
    with redis_client.pipeline(transaction=False) as pipe:
        for rid in ids:
            pipe.hget(f"{p}res:{rid}", "amt")
        amounts = pipe.execute() if ids else []
    return HeldSummary(count=len(ids), amount_nanos=sum(int(a or 0) for a in amounts))


def counters(period_ids: list[int]) -> dict[int, tuple[int | None, int]]:
    """{period id: (spent copy or None if not loaded, reserved)} in one round trip."""
    if not period_ids:
        return {}
    p = _prefix()
    with client().pipeline(transaction=False) as pipe:
        for pid in period_ids:
            pipe.hmget(f"{p}p:{pid}", "s", "r", "v")
        replies = pipe.execute()
    return {
        pid: (int(s) if v is not None and s is not None else None, int(r or 0))
        for pid, (s, r, v) in zip(period_ids, replies, strict=True)
    }


def reserved_recount(period_ids: list[int], *, repair: bool) -> dict[int, tuple[int, int]]:
    """{period id: (reserved as found, what held reservations and pending batches add up to)},
    setting ``r`` to the latter when ``repair`` — atomically, so no concurrent check is lost.
    Scans every held reservation: a job's work, not a check's."""
    if not period_ids:
        return {}
    p = _prefix()
    reply = _script("recount")(keys=[f"{p}due", f"{p}pdue"], args=[p, 1 if repair else 0, *period_ids])
    return {int(reply[i]): (int(reply[i + 1]), int(reply[i + 2])) for i in range(0, len(reply), 3)}


def flush() -> int:
    """Delete every key of this store's prefix (tests; an operator rebuilding the store)."""
    redis_client = client()
    deleted = 0
    for key in redis_client.scan_iter(match=f"{_prefix()}*", count=1000):
        deleted += redis_client.delete(key)
    return deleted
