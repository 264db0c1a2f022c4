"""The public service: :func:`budget_check` (attribution, then :class:`_Check`) and
:func:`reservation_release`."""

import uuid
from contextlib import nullcontext
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone
from redis import RedisError

from budgets.errors import BudgetStoreUnavailable
from budgets.models import Budget, BudgetPeriod, ExceededAction, Reservation, ReservationStatus
from budgets.services import check_context, redis_store
from budgets.services.check_context import CheckContext
from budgets.services.enforcement.answers import (
    ALLOW,
    DOWNGRADE,
    UNPRICED_MODEL,
    WARN,
    CheckResult,
    _Answers,
    _warnings,
)
from budgets.services.enforcement.context import _ContextLoading, _Target, _target_resolve
from budgets.services.enforcement.live import _AlreadyReserved, _LiveStore
from budgets.services.enforcement.pricing import _price_for, worst_case_nanos
from budgets.services.enforcement.replay import _Replay
from budgets.services.enforcement.store import (
    _Attempt,
    _dt,
    _PeriodGone,
    _Refused,
    _reserve_portable,
    _reserve_postgresql,
    _Stale,
    _uuid,
)
from budgets.services.periods import Bounds, covers, period_bounds, period_ensure
from budgets.services.settlement import reservations_close
from config.db import fetch_instances
from config.errors import NotAuthenticated, NotFound, ValidationFailed
from costs.models import Sprint
from costs.services.scope import KeyScope, scope_for_key

# BudgetPeriod counters are BIGINT: refuse estimates that could not be added to one.
MAX_AMOUNT_NANOS = 2**62


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
    except (OperationalError, RedisError) as exc:
        return check.store_unavailable(exc)


class _Check(_ContextLoading, _Answers, _Replay, _LiveStore):
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
        # Were the candidates and their periods read from the database by this check (not cached)?
        self.read_now = False
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
        # A repeat of a request that holds a reservation is answered with it, even when the budget is
        # full now. The Redis script already looked its request_id up, in the same atomic step as the
        # refusal; the PostgreSQL statement's snapshot may predate a racing repeat's commit.
        replay = None if redis_store.enabled() else self._replay_if_held()
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

    def _attempt(self, model: str) -> _Attempt:
        price = _price_for(model, self.now)
        amount = 0 if price is None else worst_case_nanos(price, self.prompt_tokens, self.max_output_tokens)
        if amount > (redis_store.MAX_EXACT_NANOS if redis_store.enabled() else MAX_AMOUNT_NANOS):
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
        try:
            if redis_store.enabled():
                after = self._reserve_live(
                    attempt,
                    reservation_id=reservation_id,
                    agent_id=agent_id,
                    created_at=self.now,
                    expires_at=expires_at,
                )
            else:
                after = self._reserve_sql(
                    attempt, reservation_id=reservation_id, agent_id=agent_id, expires_at=expires_at
                )
        except (IntegrityError, _AlreadyReserved):
            # The same request_id reserved already or concurrently (unique per organization): answer that one.
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

    def _reserve_sql(
        self, attempt: _Attempt, *, reservation_id: uuid.UUID, agent_id: int | None, expires_at: datetime
    ) -> dict[int, tuple]:
        """The reservation on the database: one statement on PostgreSQL, a transaction elsewhere."""
        amount = attempt.amount_nanos
        stamp = _dt(timezone.now())
        reservation = [
            _uuid(reservation_id), self.scope.organization.pk, self.target.project.pk, agent_id, self.request_id,
            attempt.model, amount, ReservationStatus.HELD.value, stamp, _dt(expires_at),
        ]  # fmt: skip
        if connection.vendor != "postgresql":
            return _reserve_portable(attempt.plan, amount=amount, stamp=stamp, reservation=reservation)
        # Autocommit: the statement is its own transaction. Inside a caller's transaction, a
        # savepoint keeps a failed statement (a duplicate request_id) from dooming it.
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            return _reserve_postgresql(
                attempt.plan, amount=amount, stamp=stamp, reservation=reservation, guard=self.guard
            )


# --- release ----------------------------------------------------------------------------------


def reservation_release(*, scope: KeyScope, reservation_id: uuid.UUID, now: datetime | None = None) -> Reservation:
    """Give back an unused reservation: flip it from ``held`` to ``released`` (guarded, so releasing
    twice, or releasing one already settled or expired, changes nothing) and subtract its holds
    from their periods' ``reserved_nanos``. Returns the reservation as it now is.

    A reservation outside ``scope`` (another organization's, another agent's) is ``NotFound``.
    """
    now = now or timezone.now()
    try:
        return _release(scope=scope, reservation_id=reservation_id, now=now)
    except RedisError as exc:
        raise BudgetStoreUnavailable() from exc


def _release(*, scope: KeyScope, reservation_id: uuid.UUID, now: datetime) -> Reservation:
    held = redis_store.reservation_get(reservation_id) if redis_store.enabled() else None
    if held is not None:
        reservation = held.as_reservation() if held.organization_id == scope.organization.pk else None
    else:  # the PostgreSQL store's (also those made before a switch to Redis)
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
    if held is not None:
        closed = redis_store.close(
            status=ReservationStatus.RELEASED, now=now, reservation_ids=[held.id], organization_id=held.organization_id
        )
        if closed:  # else it was closed already (or just now, by a settlement or the expiry job): as read
            # The store keeps milliseconds: answer what a repeated release will read back.
            reservation.status = ReservationStatus.RELEASED
            reservation.closed_at = now.replace(microsecond=now.microsecond // 1000 * 1000)
        return reservation
    with transaction.atomic():
        reservations_close(reservation_ids=[reservation.pk], status=ReservationStatus.RELEASED, now=now)
    return Reservation.objects.get(pk=reservation.pk)
