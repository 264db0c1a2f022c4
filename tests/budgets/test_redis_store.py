"""What only the Redis spend store has to get right (ADR 0008), on this machine's PostgreSQL and
Redis: settlement after the ledger commit (and the pending amount that covers the gap), expiry,
losing Redis or reaching it not at all, reconciliation, resets, and seeing changes made behind a
cached check context. The contract both stores share is tested on both in test_check_api.py and
test_check_concurrency.py."""

import datetime as dt
import time
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from budgets.checks import budget_store_check, redis_store_durability_check
from budgets.models import AuditAction, AuditEntry, BudgetPeriod, ReservationStatus, usd_to_nanos
from budgets.services import check_context, context_listener, redis_store
from budgets.services.budgets import period_reset
from budgets.services.maintenance import budget_spend_reconcile, reservations_expire
from budgets.services.periods import ledger_spend_nanos, period_bounds
from costs.models import Agent, AgentStatus, UsageRecord
from tests.budgets import stores
from tests.budgets.conftest import (
    CHECK_URL,
    GPT4O_CHECK_NANOS,
    check_body,
    client_for,
    make_budget,
    make_price,
    release_url,
)
from tests.concurrency import run_together

pytestmark = [pytest.mark.django_db, pytest.mark.postgres, pytest.mark.redis]

USAGE_URL = "/api/v1/usage/"
# 1,000 prompt + 100 completion tokens of gpt-4o: 0.0025 + 0.001 USD.
USAGE_NANOS = 3_500_000


@pytest.fixture(autouse=True)
def redis_budgets(settings):
    stores.use_redis_store(settings)
    yield
    redis_store.flush()


@pytest.fixture
def client(prices, organization, project, agent):
    return client_for(organization=organization, project=project, agent=agent)


def usage(request_id: str, **fields) -> dict:
    record = {
        "request_id": request_id,
        "model": "gpt-4o",
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "occurred_at": timezone.now().isoformat(),
    }
    record.update(fields)
    return record


def live(period: BudgetPeriod) -> tuple[int | None, int]:
    """(spend copy, reserved) the Redis store holds for ``period``."""
    return redis_store.counters([period.pk])[period.pk]


def only_period() -> BudgetPeriod:
    [period] = BudgetPeriod.objects.all()
    return period


def ingest(client, record: dict, capture) -> dict:
    """POST one usage record; its after-commit step runs at the end (the test transaction never commits)."""
    with capture(execute=True):
        response = client.post(USAGE_URL, record, format="json")
    assert response.status_code in (200, 201), response.content  # 200: a replay
    return response.json()


# --- settlement ---------------------------------------------------------------------------------


def test_usage_settles_its_reservation_and_the_store_copies_the_ledger(
    organization, client, django_capture_on_commit_callbacks
):
    make_budget(organization=organization, limit_usd="1")
    check = client.post(CHECK_URL, check_body(request_id="call-1"), format="json").json()
    period = only_period()
    assert live(period) == (0, GPT4O_CHECK_NANOS)

    record = usage("call-1", reservation_id=check["reservation_id"])
    assert ingest(client, record, django_capture_on_commit_callbacks)["replayed"] is False
    assert ingest(client, record, django_capture_on_commit_callbacks)["replayed"] is True

    period.refresh_from_db()
    assert (
        period.spent_nanos
        == USAGE_NANOS
        == ledger_spend_nanos(period.budget, period_bounds(period.budget, timezone.now()))
    )
    assert live(period) == (USAGE_NANOS, 0)
    assert [(r.status, r.amount_nanos) for r in stores.reservations()] == [
        (ReservationStatus.SETTLED, GPT4O_CHECK_NANOS)
    ]
    assert UsageRecord.objects.count() == 1  # the replay booked nothing


def test_usage_with_only_the_request_id_settles_the_reservation(
    organization, client, django_capture_on_commit_callbacks
):
    make_budget(organization=organization, limit_usd="1")
    client.post(CHECK_URL, check_body(request_id="call-2"), format="json")

    ingest(client, usage("call-2"), django_capture_on_commit_callbacks)

    assert live(only_period()) == (USAGE_NANOS, 0)
    assert [r.status for r in stores.reservations()] == [ReservationStatus.SETTLED]


def test_spend_being_settled_counts_as_reserved_until_the_commit(
    organization, client, django_capture_on_commit_callbacks
):
    """Between the ledger commit and the store's copy a check must not see the spend in neither place."""
    make_budget(organization=organization, limit_usd="1")
    client.post(CHECK_URL, check_body(), format="json")
    period = only_period()

    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(USAGE_URL, usage("unchecked"), format="json").status_code == 201
        # Written to the ledger, not yet committed: the store counts it as reserved.
        assert live(period) == (0, GPT4O_CHECK_NANOS + USAGE_NANOS)

    assert live(period) == (USAGE_NANOS, GPT4O_CHECK_NANOS)


def test_a_settlement_whose_process_died_after_the_commit_is_finished_by_the_expiry_job(
    organization, client, django_capture_on_commit_callbacks
):
    make_budget(organization=organization, limit_usd="1")
    client.post(CHECK_URL, check_body(), format="json")
    period = only_period()
    with django_capture_on_commit_callbacks(execute=False):  # the after-commit step never runs
        assert client.post(USAGE_URL, usage("orphan"), format="json").status_code == 201
    assert live(period) == (0, GPT4O_CHECK_NANOS + USAGE_NANOS)  # too much, never too little

    assert reservations_expire(now=timezone.now()) == 0
    assert live(period) == (0, GPT4O_CHECK_NANOS + USAGE_NANOS)  # not due yet
    reservations_expire(now=timezone.now() + dt.timedelta(seconds=61))

    # The pending amount is dropped and the period's spend copied: the ledger's figure (the
    # check's own reservation, 600 s, is still held).
    assert live(period) == (USAGE_NANOS, GPT4O_CHECK_NANOS)


def test_a_rolled_back_settlement_leaves_no_spend_once_its_pending_amount_expires(organization, client):
    make_budget(organization=organization, limit_usd="1")
    client.post(CHECK_URL, check_body(), format="json")
    period = only_period()
    with pytest.raises(RuntimeError), transaction.atomic():
        assert client.post(USAGE_URL, usage("rolled-back"), format="json").status_code == 201
        raise RuntimeError("the ingest transaction fails after the hook")
    assert not UsageRecord.objects.exists()
    assert live(period) == (0, GPT4O_CHECK_NANOS + USAGE_NANOS)

    reservations_expire(now=timezone.now() + dt.timedelta(seconds=61))

    assert live(period) == (0, GPT4O_CHECK_NANOS)


# --- expiry and release -------------------------------------------------------------------------


def test_an_expired_reservation_is_released_once_and_late_usage_still_books(
    organization, client, django_capture_on_commit_callbacks
):
    make_budget(organization=organization, limit_usd="1")
    check = client.post(CHECK_URL, check_body(request_id="slow"), format="json").json()
    period = only_period()
    later = timezone.now() + dt.timedelta(seconds=601)

    assert reservations_expire(now=later) == 1
    assert reservations_expire(now=later) == 0
    assert live(period) == (0, 0)
    assert [r.status for r in stores.reservations()] == [ReservationStatus.EXPIRED]
    released = client.post(release_url(check["reservation_id"]))
    assert (released.status_code, released.json()["status"]) == (200, "expired")

    ingest(client, usage("slow", reservation_id=check["reservation_id"]), django_capture_on_commit_callbacks)

    assert live(period) == (USAGE_NANOS, 0)  # booked, and the hold not taken off twice
    repeat = client.post(CHECK_URL, check_body(request_id="slow"), format="json")
    assert (repeat.status_code, repeat.json()["error"]["code"]) == (409, "reservation_closed")


def test_due_entries_whose_record_was_lost_do_not_stall_the_expiry_job(organization, client):
    make_budget(organization=organization, limit_usd="1")
    client.post(CHECK_URL, check_body(), format="json")
    due = f"{redis_store._prefix()}due"
    redis_store.client().zadd(due, {str(uuid.uuid4()): 1 for _ in range(5)})

    expired = reservations_expire(now=timezone.now() + dt.timedelta(seconds=601), batch_size=2)

    assert (expired, redis_store.client().zcard(due)) == (1, 0)
    assert live(only_period()) == (0, 0)


# --- changes behind a cached check context ------------------------------------------------------


def test_pausing_an_agent_or_lowering_a_limit_acts_on_the_next_cached_check(organization, agent, client):
    budget = make_budget(organization=organization, limit_usd="1")
    assert client.post(CHECK_URL, check_body(), format="json").status_code == 201  # caches the context

    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.PAUSED)
    paused = client.post(CHECK_URL, check_body(), format="json")
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.ACTIVE)
    assert client.post(CHECK_URL, check_body(), format="json").status_code == 201
    # A plain SQL change of the period's ceiling (the check takes it from its cache on Redis).
    BudgetPeriod.objects.filter(budget=budget).update(
        ceiling_nanos=2 * GPT4O_CHECK_NANOS, limit_nanos=2 * GPT4O_CHECK_NANOS
    )
    full = client.post(CHECK_URL, check_body(), format="json")

    assert (paused.status_code, paused.json()["error"]["code"]) == (429, "agent_paused")
    assert (full.status_code, full.json()["error"]["code"]) == (429, "budget_exceeded")
    assert live(only_period()) == (0, 2 * GPT4O_CHECK_NANOS)


# --- Redis lost, or unreachable -----------------------------------------------------------------


def test_after_redis_lost_its_data_the_store_starts_again_from_the_ledger(
    organization, agent, client, django_capture_on_commit_callbacks
):
    make_budget(organization=organization, limit_usd="0.02")  # 2 worst cases fit, with room for 0.0035 spent
    ingest(client, usage("spent"), django_capture_on_commit_callbacks)
    client.post(CHECK_URL, check_body(), format="json")

    redis_store.flush()  # a restart without persistence; the process keeps its cached context
    first = client.post(CHECK_URL, check_body(), format="json")
    second = client.post(CHECK_URL, check_body(), format="json")
    third = client.post(CHECK_URL, check_body(), format="json")

    # The spend comes back from PostgreSQL; the reservation held at the loss is forgotten (ADR 0008).
    assert [first.status_code, second.status_code, third.status_code] == [201, 201, 429]
    assert live(only_period()) == (USAGE_NANOS, 2 * GPT4O_CHECK_NANOS)


@pytest.fixture
def unreachable(settings):
    """Point the store at a port nothing listens on (a real refused connection)."""
    reachable = settings.SPENDGUARD_BUDGET_REDIS_URL

    def toggle(down: bool) -> None:
        settings.SPENDGUARD_BUDGET_REDIS_URL = "redis://127.0.0.1:9/0" if down else reachable

    yield toggle
    toggle(False)


def test_redis_unreachable_fails_closed_or_open_as_configured(organization, client, settings, unreachable):
    make_budget(organization=organization, limit_usd="1")
    unreachable(True)

    closed = client.post(CHECK_URL, check_body(), format="json")
    settings.SPENDGUARD_BUDGET_STORE_FAILURE = "open"
    opened = client.post(CHECK_URL, check_body(), format="json")

    assert (closed.status_code, closed.json()["error"]["code"]) == (503, "budget_store_unavailable")
    assert (opened.status_code, opened.json()["decision"], opened.json()["warnings"]) == (
        200,
        "allow",
        ["budget_store_unavailable"],
    )
    assert client.post(release_url(uuid.uuid4())).status_code == 503


def test_usage_recorded_while_redis_is_unreachable_is_enforced_once_it_is_back(
    organization, client, unreachable, django_capture_on_commit_callbacks
):
    make_budget(organization=organization, limit_usd="0.01")
    assert client.post(CHECK_URL, check_body(request_id="before"), format="json").status_code == 201
    ingest(client, usage("before"), django_capture_on_commit_callbacks)  # 0.0035 spent, nothing held

    unreachable(True)
    ingest(client, usage("during"), django_capture_on_commit_callbacks)  # the ledger is written all the same
    unreachable(False)

    # 0.007 spent: another 0.0075 does not fit in 0.01, although Redis last saw 0.0035.
    after = client.post(CHECK_URL, check_body(), format="json")

    assert UsageRecord.objects.count() == 2
    assert (after.status_code, after.json()["error"]["budgets"][0]["spent_usd"]) == (429, "0.007")
    assert live(only_period()) == (2 * USAGE_NANOS, 0)


# --- reconciliation and reset -------------------------------------------------------------------


def test_reconciliation_reports_and_repairs_drift_in_the_store(
    organization, client, django_capture_on_commit_callbacks
):
    make_budget(organization=organization, limit_usd="1")
    client.post(CHECK_URL, check_body(), format="json")
    ingest(client, usage("spent"), django_capture_on_commit_callbacks)
    period = only_period()
    key = f"{redis_store._prefix()}p:{period.pk}"
    redis_store.client().hincrby(key, "r", 123)
    redis_store.client().hset(key, "s", 1)

    found = budget_spend_reconcile(repair=False)
    repaired = budget_spend_reconcile(repair=True)
    again = budget_spend_reconcile(repair=True)

    [drift] = found.drifts
    assert (drift.spent_nanos, drift.ledger_nanos, drift.reserved_nanos, drift.held_nanos) == (
        1,
        USAGE_NANOS,
        GPT4O_CHECK_NANOS + 123,
        GPT4O_CHECK_NANOS,
    )
    assert len(repaired.drifts) == 1 and again.drifts == []
    assert live(period) == (USAGE_NANOS, GPT4O_CHECK_NANOS)


def test_reset_releases_the_reservations_held_in_redis_and_audits_them(organization, client):
    budget = make_budget(organization=organization, limit_usd="1")
    for _ in range(2):
        client.post(CHECK_URL, check_body(), format="json")

    result = period_reset(budget=budget, actor_label="ops")

    assert (result.released, result.reserved_before, result.reserved_after) == (2, 2 * GPT4O_CHECK_NANOS, 0)
    assert live(only_period()) == (0, 0)
    assert [r.status for r in stores.reservations()] == [ReservationStatus.RELEASED] * 2
    audit = AuditEntry.objects.get(action=AuditAction.PERIOD_RESET)
    assert (audit.changes["released_reservations"], audit.changes["reserved_usd"]) == (
        2,
        {"old": "0.015", "new": "0"},
    )


def test_the_budgets_api_shows_what_redis_holds(organization, client, authed_client):
    budget = make_budget(organization=organization, limit_usd="1")
    client.post(CHECK_URL, check_body(), format="json")

    [row] = authed_client(organization=organization).get("/api/v1/budgets/").json()["results"]

    assert (row["id"], row["spent_usd"], row["reserved_usd"], row["remaining_usd"]) == (
        budget.pk,
        "0",
        "0.0075",
        "0.9925",
    )


# --- racing, on real threads ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_racing_checks_settlements_and_unchecked_usage_end_equal_to_the_ledger(prices, organization, project, agent):
    """32 threads check and settle, 32 record usage without a check, all at once: at the end the
    store's spend equals the ledger to the nano-dollar and nothing is left reserved."""
    make_budget(organization=organization, limit_usd="10")
    clients = [client_for(organization=organization, project=project, agent=agent) for _ in range(64)]
    prime = clients[0].post(CHECK_URL, check_body(prompt_tokens=0, max_output_tokens=0), format="json")  # the period
    released = clients[0].post(release_url(prime.json()["reservation_id"]))
    assert released.status_code == 200, released.content
    period = only_period()

    def checked(c, i):
        check = c.post(CHECK_URL, check_body(request_id=f"c{i}"), format="json").json()
        return c.post(USAGE_URL, usage(f"c{i}", reservation_id=check["reservation_id"]), format="json").status_code

    def unchecked(c, i):
        return c.post(USAGE_URL, usage(f"u{i}", completion_tokens=i), format="json").status_code

    statuses = run_together([lambda c=c, i=i: (checked if i % 2 else unchecked)(c, i) for i, c in enumerate(clients)])

    assert statuses == [201] * 64
    period.refresh_from_db()
    ledger = sum(usd_to_nanos(row.cost_usd) for row in UsageRecord.objects.all())
    assert period.spent_nanos == ledger
    assert live(period) == (ledger, 0)
    assert (
        sorted(r.status for r in stores.reservations())
        == [ReservationStatus.RELEASED] + [ReservationStatus.SETTLED] * 32
    )


# --- settings -------------------------------------------------------------------------------------


def test_an_unknown_store_is_a_system_check_error(settings):
    settings.SPENDGUARD_BUDGET_STORE = "memcached"

    assert [error.id for error in budget_store_check(None)] == ["budgets.E001"]
    with pytest.raises(SystemCheckError):
        call_command("check")


def test_amounts_of_a_million_dollars_stay_exact(organization, client):
    """Lua prints numbers of 15 digits and more as exponents: counters must stay integers."""
    make_price("opus-huge", input="1000", output="0")
    make_budget(organization=organization, limit_usd="5000000")
    body = check_body(model="opus-huge", prompt_tokens=10**9, max_output_tokens=0)

    first = client.post(CHECK_URL, body, format="json")
    second = client.post(CHECK_URL, body, format="json")
    client.post(release_url(first.json()["reservation_id"]))

    assert [r.status_code for r in (first, second)] == [201, 201]
    assert second.json()["budgets"][0]["reserved_usd"] == "2000000"
    assert live(only_period()) == (0, 10**15)


def test_the_deploy_check_warns_when_redis_may_lose_reservations(settings):
    """This machine's Redis runs without the append-only file (see .ci/run): the check says so."""
    appendonly = redis_store.client().config_get("appendonly")["appendonly"]

    warnings = [w.id for w in redis_store_durability_check(None)]

    assert ("budgets.W003" in warnings) == (appendonly != "yes")
    settings.SPENDGUARD_BUDGET_STORE = "postgresql"
    assert redis_store_durability_check(None) == []


def test_the_admin_shows_what_redis_holds(organization, client):
    budget = make_budget(organization=organization, name="org monthly", limit_usd="1")
    client.post(CHECK_URL, check_body(), format="json")
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("olivia", "olivia@example.com", "unused"))

    changelist = staff.get("/admin/budgets/budget/").content.decode()
    change = staff.get(f"/admin/budgets/budget/{budget.pk}/change/").content.decode()
    reservations = staff.get("/admin/budgets/reservation/", follow=True)

    for cell in ("$1", "$0", "$0.0075", "$0.9925", "ok"):
        assert f">{cell}<" in changelist, cell
    assert "$0 spent + $0.0075 reserved of $1 ($0.9925 remaining)" in change
    assert ">$0.0075<" in change  # the live period inline
    assert [str(m) for m in reservations.context["messages"]] == [
        "Budgets are enforced by the Redis store: 1 reservation(s) are held there ($0.0075 in all). This list "
        "shows those made while PostgreSQL enforced; to release what Redis holds against a budget, use the "
        "budget's “reset period” action."
    ]


# --- hearing of changes as they commit (the check context listener) -------------------------------


@pytest.fixture
def listening(settings):
    settings.SPENDGUARD_CHECK_CONTEXT_LISTEN = True
    yield context_listener.listener
    context_listener.listener.stop()


def eventually(condition, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.01)


@pytest.mark.django_db(transaction=True)
def test_a_committed_pause_is_heard_and_refused_by_the_next_cached_check(
    prices, organization, agent, client, listening
):
    make_budget(organization=organization, limit_usd="1")
    assert client.post(CHECK_URL, check_body(), format="json").status_code == 201  # starts the listener
    eventually(listening.healthy)
    assert client.post(CHECK_URL, check_body(), format="json").status_code == 201  # caches the context
    assert organization.pk in check_context._organizations

    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.PAUSED)  # commits: autocommit
    eventually(lambda: organization.pk not in check_context._organizations)
    paused = client.post(CHECK_URL, check_body(), format="json")

    assert (paused.status_code, paused.json()["error"]["code"]) == (429, "agent_paused")
    assert listening.healthy()


@pytest.mark.django_db(transaction=True)
def test_changes_made_while_the_listener_was_cut_off_are_seen_once_it_is_back(
    prices, organization, agent, client, listening
):
    make_budget(organization=organization, limit_usd="1")
    client.post(CHECK_URL, check_body(), format="json")
    eventually(listening.healthy)
    client.post(CHECK_URL, check_body(), format="json")
    assert organization.pk in check_context._organizations
    connected = listening.connected_times

    with connection.cursor() as cursor:  # the listener's connection dies (a server restart, a proxy)
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [context_listener.APPLICATION_NAME],
        )
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.PAUSED)  # nobody hears this one
    eventually(lambda: listening.connected_times == connected + 1 and listening.healthy())
    paused = client.post(CHECK_URL, check_body(), format="json")

    assert (paused.status_code, paused.json()["error"]["code"]) == (429, "agent_paused")
