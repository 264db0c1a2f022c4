"""The pre-call budget check and its reservation (issue 3, DESIGN.md flow 1) — the hot path.

:func:`budget_check` prices the worst case of a request, finds every budget covering it for the
current periods, and reserves the amount against all of them in one transaction, or against none
(the protocol and why it is exact under concurrency: docs/adr/0003-budget-enforcement-store.md).
:func:`reservation_release` gives an unused reservation back.

Speed: a check is a handful of round trips — the API key (authentication), the agent when named,
the covering budgets joined with their live periods (one query), then one transaction
(``lock_timeout``, one guarded ``UPDATE`` per period, one ``INSERT`` of the reservation and its
holds). Lookups are plain SQL (:mod:`config.db`): compiling ORM queries would cost more than
running them. Catalog prices are cached per process for ``SPENDGUARD_CHECK_PRICE_CACHE_SECONDS``
(a stale price only changes the estimate held, never what is settled). Budgets, periods, agents and
keys are read fresh on every check, so pausing an agent or changing a budget acts on the next check.
"""

import logging
import math
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING
from functools import cache

import psycopg
from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from budgets.errors import AgentPaused, BudgetExceeded, BudgetStoreUnavailable, ReservationClosed
from budgets.models import (
    NANOS_PER_USD,
    AuditAction,
    AuditEntry,
    Budget,
    BudgetPeriod,
    CheckContextVersion,
    Enforcement,
    ExceededAction,
    PeriodKind,
    Reservation,
    ReservationHold,
    ReservationStatus,
    nanos_usd_text,
)
from budgets.selectors import status_of
from budgets.services import check_context
from budgets.services.check_context import CheckContext
from budgets.services.periods import Bounds, covers, next_local_midnight, period_bounds, period_ensure
from budgets.services.settlement import reservations_close
from config.db import fetch_instances, in_list, row_shape
from config.errors import NotAuthenticated, NotFound, OutOfScope, ValidationFailed
from costs.models import Agent, AgentStatus, Project, Sprint
from costs.services.hierarchy import agent_set_status
from costs.services.scope import KeyScope, scope_for_key
from pricing.calculator import Rates, Usage, cost_of
from pricing.models import ModelPrice
from pricing.selectors import PriceBook

logger = logging.getLogger(__name__)

ALLOW, WARN, DOWNGRADE = "allow", "warn", "downgrade"

UNPRICED_MODEL = "unpriced_model"
STORE_UNAVAILABLE = "budget_store_unavailable"
# BudgetPeriod counters are BIGINT: refuse estimates that could not be added to one.
MAX_AMOUNT_NANOS = 2**62


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


# --- the check --------------------------------------------------------------------------------


def budget_check(
    *,
    scope: KeyScope,
    agent: str | None,
    project: str | None,
    sprint: str | None,
    model: str,
    prompt_tokens: int,
    max_output_tokens: int,
    request_id: str | None,
    now: datetime | None = None,
    context_version: int | None = None,
) -> CheckResult:
    """May this request spend up to its worst case? Reserve it against every covering budget, or none.

    Attribution as in ingestion (:mod:`costs.services.scope`): project and agent from the key's
    scope when omitted; naming one outside it is ``OutOfScope``; an agent name not registered yet
    is checked as a new agent (no budgets of its own; it is *not* registered here — ingestion does
    that); the sprint is the named one, else the project's sprint containing ``now`` in the
    organization's time zone. A paused agent is ``AgentPaused`` (429). An agent's
    ``model_override`` replaces ``model``.

    Worst case, USD rounded up to the nano-dollar: ``prompt_tokens`` of input (all of it billed as
    cache writes if that is dearer) and ``max_output_tokens`` of output (all of it billed as
    reasoning if that is dearer), with the catalog price in effect at ``now``. An unpriced model
    reserves 0 and answers ``warn`` with ``"unpriced_model"``: price alone never denies.

    Decision: ``allow``; ``warn`` when a budget is over its limit after this reservation or has
    passed its highest alert threshold below 100 % (``warnings`` say which); ``downgrade`` when a
    hard budget refused the model and its action names a cheaper ``downgrade_model`` that fits
    (the reservation is priced for that model); otherwise ``BudgetExceeded`` (429, the budgets at
    fault, ``retry_after``). A refusing budget whose action is ``pause_agent`` also pauses the agent
    (audited). The reservation expires after ``SPENDGUARD_RESERVATION_TTL_SECONDS``.

    Idempotent on ``request_id``: repeating it returns the held reservation (``created=False``)
    instead of reserving twice, also when the repeats race; one that is no longer held is
    ``ReservationClosed`` (409).

    Spend store unavailable (a period row locked past ``SPENDGUARD_BUDGET_LOCK_TIMEOUT_MS``, a
    database error): per ``SPENDGUARD_BUDGET_STORE_FAILURE``, ``BudgetStoreUnavailable`` (503,
    "closed", the default, when a hard budget covers the request) or ``allow`` with
    ``"budget_store_unavailable"`` and no reservation ("open"; logged).

    ``context_version``: the check context version (:mod:`budgets.services.check_context`) at which
    ``scope``'s key was known valid, when it came from :func:`check_context.api_key_for_check`.
    Then what the check reads may come from this process's cache, and the reservation is made only
    if nothing changed since (else it reads afresh, the key included: a key revoked since is
    ``NotAuthenticated``). None: read everything afresh.
    """
    now = now or timezone.now()
    target = _target_resolve(scope=scope, agent_name=agent, project_slug=project, sprint_slug=sprint)
    check = _Check(
        scope=scope,
        target=target,
        arguments=(agent, project, sprint),
        version=context_version,
        model=model,
        prompt_tokens=prompt_tokens,
        max_output_tokens=max_output_tokens,
        request_id=request_id or "",
        now=now,
    )
    try:
        return check.run()
    except OperationalError as exc:
        return check.store_unavailable(exc)


@dataclass(slots=True)
class _Target:
    """Who the check is for. ``agent`` is None for a name not registered yet (or not looked up yet:
    ``agent_lookup``)."""

    project: Project | None  # None: ``project_slug`` is looked up (organization keys)
    agent: Agent | None
    agent_name: str
    sprint_slug: str | None
    agent_lookup: bool = False
    project_slug: str | None = None

    @property
    def cache_key(self) -> tuple:
        """Identifies the target among an organization's cached check contexts."""
        project = self.project.pk if self.project is not None else self.project_slug
        agent = self.agent.pk if self.agent is not None and not self.agent_lookup else self.agent_name
        return (project, agent, self.sprint_slug)


def _target_resolve(
    *, scope: KeyScope, agent_name: str | None, project_slug: str | None, sprint_slug: str | None
) -> _Target:
    problems: dict[str, list[str]] = {}
    if project_slug is not None and not scope.project_allowed(project_slug):
        problems["project"] = [f"This API key may only act on project {scope.project.slug!r}."]
    if agent_name is not None and not scope.agent_allowed(agent_name):
        problems["agent"] = [f"This API key may only act as agent {scope.agent.name!r}."]
    if problems:
        raise OutOfScope(fields=problems)
    if scope.agent is None and agent_name is None:
        problems["agent"] = [f"This field is required for a {scope.level}-scoped API key."]
    if scope.project is None and project_slug is None:
        problems["project"] = ["This field is required for an organization-scoped API key."]
    if problems:
        raise ValidationFailed(fields=problems)

    project = scope.project
    if scope.agent is not None:
        return _Target(project=project, agent=scope.agent, agent_name=scope.agent.name, sprint_slug=sprint_slug)
    # Looked up together with the budgets (one round trip).
    return _Target(
        project=project,
        agent=None,
        agent_name=agent_name,
        sprint_slug=sprint_slug,
        agent_lookup=True,
        project_slug=project_slug if project is None else None,
    )


def _project_lookup(*, scope: KeyScope, slug: str) -> Project:
    found = fetch_instances(
        Project, ("id", "organization_id", "slug"), "organization_id = %s AND slug = %s", [scope.organization.pk, slug]
    )
    if not found:
        raise ValidationFailed(
            fields={"project": [f"Unknown project {slug!r} in organization {scope.organization.slug!r}."]}
        )
    return found[0]


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


class _Check:
    """One run of :func:`budget_check` after attribution (kept as an object so the store-failure
    handler knows how far the check got)."""

    def __init__(
        self, *, scope, target, arguments, version, model, prompt_tokens, max_output_tokens, request_id, now
    ) -> None:
        self.scope: KeyScope = scope
        self.target: _Target = target
        # (agent, project, sprint) as asked: to attribute again after the key is read afresh.
        self.arguments: tuple = arguments
        self.version: int | None = version  # the key's check context version (None: no caching)
        self.requested_model: str = model
        self.model: str = model
        self.prompt_tokens: int = prompt_tokens
        self.max_output_tokens: int = max_output_tokens
        self.request_id: str = request_id
        self.now: datetime = now
        self.candidates: list[tuple[Budget, BudgetPeriod | None]] | None = None
        self.context: CheckContext | None = None
        # The version the reservation statement must still find (None: no condition).
        self.guard: int | None = None
        self._sprints: list[Sprint] | None = None
        self._sprint_resolved = False
        self._sprint: Sprint | None = None

    # -- flow --

    def run(self) -> CheckResult:
        for attempt in range(4):
            try:
                return self._run_once()
            except _PeriodGone:
                pass
            except _Stale:
                check_context.forget(organization_id=self.scope.organization.pk)
                # After repeated changes under it, the check stops caching and reads everything afresh.
                self._reread_key(keep_version=attempt < 2)
            self.candidates = self.context = None
        raise BudgetStoreUnavailable("Budget periods kept changing during the check; retry.")

    def _reread_key(self, *, keep_version: bool) -> None:
        """The context changed since the key was read: read the key (and the agent of an agent key)
        afresh — revoked since means 401 — and attribute the request again."""
        api_key, version = check_context.api_key_reread(api_key_id=self.scope.api_key.pk)
        if api_key is None:
            raise NotAuthenticated("Unknown API key.", code="invalid_api_key")
        self.scope = scope_for_key(api_key)
        agent, project, sprint = self.arguments
        self.target = _target_resolve(scope=self.scope, agent_name=agent, project_slug=project, sprint_slug=sprint)
        self.version = version if keep_version else None

    def _run_once(self) -> CheckResult:
        self.model = self.requested_model
        self._context_load()
        agent = self.target.agent
        if agent is not None:
            self.model = agent.model_override or self.model
        first = self._attempt(self.model)
        try:
            return self._reserve(first, decision=ALLOW)
        except _Refused as refused:
            at_fault = self._at_fault(first, refused)
        replay = self._replay_if_held()
        if replay is not None:
            return replay
        downgrade_to = next(
            (
                b.downgrade_model
                for b, _ in at_fault
                if b.action == ExceededAction.DOWNGRADE and b.downgrade_model and b.downgrade_model != self.model
            ),
            None,
        )
        final, note = first, ""
        if downgrade_to is not None:
            cheaper = self._attempt(downgrade_to)
            if cheaper.price is None:  # an unpriced model cannot be shown to fit
                note = f" The downgrade model {downgrade_to} has no price, so it cannot be reserved instead."
            else:
                try:
                    return self._reserve(cheaper, decision=DOWNGRADE)
                except _Refused as refused:
                    at_fault = self._at_fault(cheaper, refused)
                final, note = cheaper, f" (Downgraded from {self.model}; even that does not fit.)"
        self._pause_agent_if_asked(at_fault)
        raise self._exceeded(at_fault, final, note)

    def _context_load(self) -> None:
        """Attribution, candidate budgets and the sprint: from this process's cache when the key's
        version allows (the reservation then runs only if that version still holds), else read —
        and cached when read at the key's version."""
        organization_id = self.scope.organization.pk
        cache_key = self.target.cache_key
        self.guard = None
        if self.version is not None:
            context = check_context.context_get(
                organization_id=organization_id, version=self.version, target=cache_key, now=self.now
            )
            if context is not None:
                self.context, self.candidates, self.guard = context, context.candidates, self.version
                self.target.project, self.target.agent, self.target.agent_lookup = context.project, context.agent, False
                self._sprints, self._sprint, self._sprint_resolved = context.sprints, context.sprint, True
                return
        if self.target.project is None:
            self.target.project = _project_lookup(scope=self.scope, slug=self.target.project_slug)
        read_version, self.candidates = _candidates(
            target=self.target, organization_id=organization_id, now=self.now, with_version=self.version is not None
        )
        agent = self.target.agent
        if agent is not None and agent.status == AgentStatus.PAUSED:
            raise AgentPaused(f"Agent {agent.name!r} is paused; an operator must resume it.")
        for budget, _ in self.candidates:  # what period_bounds reads, already in hand
            budget.organization = self.scope.organization
            if agent is not None and budget.agent_id == agent.pk:
                budget.agent = agent
        if self.target.sprint_slug is not None or any(_needs_sprint(b) for b, _ in self.candidates):
            self._sprint_resolve()
        if self.version is None:
            return
        if read_version != self.version:
            raise _Stale()
        self.guard = self.version
        self.context = CheckContext(
            computed_at=self.now,
            valid_until=self._valid_until(),
            project=self.target.project,
            agent=agent,
            candidates=self.candidates,
            sprints=self._sprints,
            sprint=self._sprint,
        )
        check_context.context_put(
            organization_id=organization_id, version=self.version, target=cache_key, context=self.context
        )

    def _valid_until(self) -> datetime:
        """The first instant after now at which a candidate's period, or the current sprint, may
        change (the clock moves budgets into new periods; the version only tracks edits)."""
        edges = [next_local_midnight(self.now, self.scope.organization.timezone)]  # sprints are dates
        for budget, _ in self.candidates:
            if budget.period == PeriodKind.CUSTOM:
                edges.extend(e for e in (budget.custom_start, budget.custom_end) if e is not None and e > self.now)
            elif budget.period not in (PeriodKind.SPRINT, PeriodKind.TOTAL):
                edges.append(period_bounds(budget, self.now).ends_at)
        return min(edges)

    def _attempt(self, model: str) -> _Attempt:
        price = _price_for(model, self.now)
        amount = 0 if price is None else worst_case_nanos(price, self.prompt_tokens, self.max_output_tokens)
        if amount > MAX_AMOUNT_NANOS:
            raise ValidationFailed(fields={"max_output_tokens": ["The worst-case cost of this request is too large."]})
        plans = self.context.plans if self.context is not None else {}
        plan = plans.get(model)
        if plan is None:
            plan = self._plan(model)
            if self.context is not None:
                if len(plans) >= 64:
                    plans.clear()
                plans[model] = plan
        return _Attempt(model=model, price=price, amount_nanos=amount, plan=plan)

    def _plan(self, model: str) -> list[tuple[Budget, Bounds, BudgetPeriod]]:
        """The periods a request for ``model`` reserves against, in ascending period id."""
        agent_id = self.target.agent.pk if self.target.agent else None
        sprint = self._sprint if self._sprint_resolved else None
        plan = []
        for budget, period in self.candidates:
            if not covers(
                budget,
                project_id=self.target.project.pk,
                sprint_id=sprint.pk if sprint else None,
                agent_id=agent_id,
                model=model,
            ):
                continue
            bounds = period_bounds(budget, self.now, sprints=self._sprints)
            if bounds is None:
                continue
            if period is None or period.starts_at != bounds.starts_at:
                period, _ = period_ensure(budget, bounds)
            plan.append((budget, bounds, period))
        plan.sort(key=lambda item: item[2].pk)
        return plan

    def _reserve(self, attempt: _Attempt, *, decision: str) -> CheckResult:
        """The reservation transaction (ADR 0003): guarded updates in period-id order, then the
        reservation and its holds; a refusal rolls everything back."""
        amount = attempt.amount_nanos
        reservation_id = uuid.uuid4()
        expires_at = self.now + timedelta(seconds=settings.SPENDGUARD_RESERVATION_TTL_SECONDS)
        agent_id = self.target.agent.pk if self.target.agent else None
        stamp = _dt(timezone.now())
        reservation = [
            _uuid(reservation_id), self.scope.organization.pk, self.target.project.pk, agent_id, self.request_id,
            attempt.model, amount, ReservationStatus.HELD.value, stamp, _dt(expires_at),
        ]  # fmt: skip
        try:
            if connection.vendor == "postgresql":
                # Autocommit: the statement is its own transaction. Inside a caller's transaction, a
                # savepoint keeps a failed statement (a duplicate request_id) from dooming it.
                with transaction.atomic() if connection.in_atomic_block else nullcontext():
                    after = _reserve_postgresql(
                        attempt.plan, amount=amount, stamp=stamp, reservation=reservation, guard=self.guard
                    )
            else:
                after = _reserve_portable(attempt.plan, amount=amount, stamp=stamp, reservation=reservation)
        except IntegrityError:
            # The same request_id reserved concurrently (unique per organization): answer that one.
            replay = self._replay_if_held()
            if replay is None:
                raise _PeriodGone() from None  # a period deleted under us (its hold's foreign key)
            return replay
        lines = [self._line(budget, bounds, after[period.pk]) for budget, bounds, period in attempt.plan]
        warnings = _warnings(lines, [b for b, _, _ in attempt.plan])
        if attempt.price is None:
            warnings.insert(0, UNPRICED_MODEL)
        if decision == ALLOW and warnings:
            decision = WARN
        return CheckResult(
            decision=decision,
            model=attempt.model,
            reservation_id=reservation_id,
            reserved_nanos=amount,
            expires_at=expires_at,
            budgets=lines,
            warnings=warnings,
            created=True,
        )

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

    # -- idempotent replay --

    def _replay_if_held(self) -> CheckResult | None:
        if not self.request_id:
            return None
        found = fetch_instances(
            Reservation, None, "organization_id = %s AND request_id = %s", [self.scope.organization.pk, self.request_id]
        )
        if not found:
            return None
        reservation = found[0]
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
        period_ids = [row[0] for row in _fetch(_sql()["hold_amounts"], [_uuid(reservation.pk)])]
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
            counters = (p.spent_nanos, p.reserved_nanos, p.limit_nanos, p.ceiling_nanos)
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

    def _sprint_resolve(self) -> None:
        project = self.target.project
        self._sprints = fetch_instances(
            Sprint, ("id", "project_id", "slug", "start_date", "end_date"), "project_id = %s", [project.pk]
        )
        slug = self.target.sprint_slug
        if slug is not None:
            sprint = next((s for s in self._sprints if s.slug == slug), None)
            if sprint is None:
                raise ValidationFailed(fields={"sprint": [f"Unknown sprint {slug!r} in project {project.slug!r}."]})
        else:
            local = self.now.astimezone(self.scope.organization.tzinfo).date()
            sprint = next((s for s in self._sprints if s.start_date <= local <= s.end_date), None)
        self._sprint, self._sprint_resolved = sprint, True
        # period_bounds reads these relations; the check already holds them.
        for budget, _ in self.candidates:
            if budget.sprint_id is not None and sprint is not None and budget.sprint_id == sprint.pk:
                budget.sprint = sprint

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


def _needs_sprint(budget: Budget) -> bool:
    return budget.sprint_id is not None or budget.period == PeriodKind.SPRINT


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


# --- pricing ----------------------------------------------------------------------------------


def worst_case_nanos(price: ModelPrice, prompt_tokens: int, max_output_tokens: int) -> int:
    """The most a request of ``prompt_tokens`` in and up to ``max_output_tokens`` out can cost with
    ``price``, in nano-dollars rounded up: every input token at the dearer of the input and
    cache-write rates, every output token at the dearer of the output and reasoning rates (tiers
    applied by ``cost_of``)."""
    rates, dearer_writes, dearer_reasoning = _rates(price)
    worst = max(
        cost_of(
            rates,
            Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=max_output_tokens,
                cache_creation_tokens=cache_writes,
                reasoning_tokens=reasoning,
            ),
        ).total_usd
        for cache_writes in ({0, prompt_tokens} if dearer_writes else (0,))
        for reasoning in ({0, max_output_tokens} if dearer_reasoning else (0,))
    )
    return int((worst * NANOS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


# price id -> (rates, may a cache write cost more than input?, may reasoning cost more than output?)
_rates_cache: dict[int, tuple[Rates, bool, bool]] = {}
# model name -> (monotonic expiry, PriceBook holding every version of its price)
_price_cache: dict[str, tuple[float, PriceBook]] = {}
_PRICE_CACHE_MAX = 2048


def _rates(price: ModelPrice) -> tuple[Rates, bool, bool]:
    cached = _rates_cache.get(price.pk)
    if cached is None:
        if len(_rates_cache) >= _PRICE_CACHE_MAX:
            _rates_cache.clear()
        rates = Rates.from_price(price)
        # Conservative: any published cache-write / reasoning rate (base or tier) may be the dearer one.
        levels = [rates, *rates.tiers]
        writes = any(r.cache_write is not None for r in levels)
        reasoning = any(r.reasoning is not None for r in levels)
        cached = _rates_cache[price.pk] = (rates, writes, reasoning)
    return cached


def _price_for(model: str, at: datetime) -> ModelPrice | None:
    """The catalog price in effect at ``at`` (cached per process, see the module docstring)."""
    ttl = settings.SPENDGUARD_CHECK_PRICE_CACHE_SECONDS
    clock = time.monotonic()
    cached = _price_cache.get(model)
    if cached is None or cached[0] < clock:
        book = PriceBook([(model, "")])
        if ttl > 0:
            if len(_price_cache) >= _PRICE_CACHE_MAX:
                _price_cache.clear()
            _price_cache[model] = (clock + ttl, book)
    else:
        book = cached[1]
    return book.resolve(model, "", at)


def check_caches_clear() -> None:
    """Forget cached prices and check contexts (tests; an operator shell after editing prices)."""
    _price_cache.clear()
    _rates_cache.clear()
    check_context.check_context_clear()


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


# --- release ----------------------------------------------------------------------------------


def reservation_release(*, scope: KeyScope, reservation_id: uuid.UUID, now: datetime | None = None) -> Reservation:
    """Give back an unused reservation: flip it from ``held`` to ``released`` (guarded, so releasing
    twice, or releasing one already settled or expired, changes nothing) and subtract its holds
    from their periods' ``reserved_nanos``. Returns the reservation as it now is.

    A reservation outside ``scope`` (another organization's, another agent's) is ``NotFound``.
    """
    now = now or timezone.now()
    found = fetch_instances(
        Reservation, None, "id = %s AND organization_id = %s", [_uuid(reservation_id), scope.organization.pk]
    )
    reservation = found[0] if found else None
    if reservation is None or not (
        reservation.project_id is not None
        and scope.owns(
            organization_id=reservation.organization_id,
            project_id=reservation.project_id,
            agent_id=reservation.agent_id,
        )
    ):
        raise NotFound("No reservation with this id.")
    with transaction.atomic():
        reservations_close(reservation_ids=[reservation.pk], status=ReservationStatus.RELEASED, now=now)
    return Reservation.objects.get(pk=reservation.pk)


# --- SQL --------------------------------------------------------------------------------------


def _candidates(
    *, target: _Target, organization_id: int, now: datetime, with_version: bool
) -> tuple[int | None, list[tuple[Budget, BudgetPeriod | None]]]:
    """Active budgets that may cover a request of ``target`` (organization budgets, the project's,
    its sprints', the agent's), each with its period row containing ``now`` if one exists. Model
    filters and the exact sprint are applied by the caller. Looks up ``target.agent`` by name
    when asked to, in the same round trip, and ``with_version`` the organization's check context
    version first (so what follows is at least as new as the version returned; else None)."""
    moment = _dt(now)
    project_id = target.project.pk
    statements = [(check_context.version_sql(), [organization_id])] if with_version else []
    if target.agent_lookup:
        agent_shape = row_shape(Agent, _AGENT_FIELDS)
        statements.append((_sql()["agent"], [project_id, target.agent_name]))
        params = [moment, moment, organization_id, True, project_id, target.agent_name, project_id, project_id]
        statements.append((_sql()["candidates_by_name"], params))
    else:
        agent_id = target.agent.pk if target.agent is not None else None
        statements.append(
            (_sql()["candidates"], [moment, moment, organization_id, True, agent_id, project_id, project_id])
        )
    results = _run(statements)
    version = results.pop(0)[0][0] if with_version else None
    if target.agent_lookup:
        found = agent_shape.instances(results[0])
        target.agent = found[0] if found else None
        target.agent_lookup = False
    budget_shape, period_shape = row_shape(Budget, _BUDGET_FIELDS), row_shape(BudgetPeriod, _PERIOD_FIELDS)
    split = len(budget_shape.fields)
    result = []
    for row in results[-1]:
        budget = budget_shape.instance(row[:split])
        period = period_shape.instance(row[split:]) if row[split] is not None else None
        result.append((budget, period))
    return version, result


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
