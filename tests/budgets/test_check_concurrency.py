"""Budget checks racing against real PostgreSQL (and Redis: the first tests run on both spend stores),
with real threads (one connection each), and the PostgreSQL store failing under a row lock held by
another connection."""

import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from budgets.models import BudgetPeriod, Reservation
from tests.budgets import stores
from tests.budgets.conftest import (
    CHECK_URL,
    GPT4O_CHECK_NANOS,
    check_body,
    client_for,
    ledger_row,
    make_budget,
    release_url,
)
from tests.concurrency import run_together
from tests.factories import AgentFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CHECKS = 64


class Sampler:
    """Reads ``spent + reserved`` of one period over and over from its own connection while the
    checks run, remembering every value seen."""

    def __init__(self, period_id: int) -> None:
        self.period_id = period_id
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.samples.append(stores.used_nanos(self.period_id))
        finally:
            connection.close()

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def prime_period(client) -> BudgetPeriod:
    """Create the covering budgets' current periods with one check, then give that reservation
    back. Returns the period with the lowest id."""
    response = client.post(CHECK_URL, check_body(), format="json")
    assert response.status_code == 201, response.json()
    assert client.post(release_url(response.json()["reservation_id"])).status_code == 200
    stores.reservations_forget()
    periods = stores.periods()
    assert [p.reserved_nanos for p in periods] == [0] * len(periods)
    return periods[0]


def test_exactly_k_of_64_concurrent_checks_fit_a_hard_budget(store, prices, organization, project, agent):
    k = 20
    make_budget(organization=organization, limit_usd=str(k * 0.0075))  # fits exactly K worst cases
    clients = [client_for(organization=organization, project=project, agent=agent) for _ in range(CHECKS)]

    responses = run_together(
        [
            lambda c=c, i=i: c.post(CHECK_URL, check_body(request_id=f"r{i}"), format="json")
            for i, c in enumerate(clients)
        ]
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * k + [429] * (CHECKS - k)
    assert {r.json()["decision"] for r in responses if r.status_code == 201} == {"allow", "warn"}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"budget_exceeded"}
    [period] = stores.periods()
    assert (period.spent_nanos, period.reserved_nanos) == (0, k * GPT4O_CHECK_NANOS)
    assert len(stores.reservations()) == k
    assert len(stores.holds()) == k


def test_spent_plus_reserved_never_exceeds_limit_plus_grace(store, prices, organization, project, agent):
    ledger_row(agent=agent, cost_usd="0.01", occurred_at=timezone.now())
    # Ceiling: 0.05 x 1.1 = 0.055 USD; with 0.01 spent, 6 worst cases (0.045) fit, not 7.
    make_budget(organization=organization, limit_usd="0.05", grace_percent="10")
    client = client_for(organization=organization, project=project, agent=agent)
    period = prime_period(client)
    ceiling = period.ceiling_nanos
    assert ceiling == 55_000_000
    clients = [client_for(organization=organization, project=project, agent=agent) for _ in range(CHECKS)]

    def churn(c, i):
        """Check, and give back every other allowed reservation, several times over."""
        statuses = []
        for round_ in range(4):
            response = c.post(CHECK_URL, check_body(request_id=f"r{i}-{round_}"), format="json")
            statuses.append(response.status_code)
            if response.status_code == 201 and (i + round_) % 2:
                c.post(release_url(response.json()["reservation_id"]))
        return statuses

    with Sampler(period.pk) as sampler:
        results = run_together([lambda c=c, i=i: churn(c, i) for i, c in enumerate(clients)])

    assert len(sampler.samples) > 10
    assert max(sampler.samples) <= ceiling
    statuses = [s for r in results for s in r]
    assert statuses.count(201) >= 6 and statuses.count(429) > 0
    [period] = stores.periods()
    held = sum(r.status == "held" for r in stores.reservations())
    assert period.reserved_nanos == held * GPT4O_CHECK_NANOS
    assert period.spent_nanos + period.reserved_nanos <= ceiling


def test_denied_checks_leave_nothing_on_the_other_budget(store, prices, organization, project, agent):
    k = 5
    roomy = make_budget(project=project, name="project", limit_usd="100")
    tight = make_budget(agent=agent, name="agent", limit_usd=str(k * 0.0075))
    clients = [client_for(organization=organization, project=project, agent=agent) for _ in range(CHECKS)]
    prime_period(clients[0])  # creates both periods, the project's first (lower id, locked first)
    periods = {p.budget_id: p for p in stores.periods()}
    assert periods[roomy.pk].pk < periods[tight.pk].pk

    responses = run_together([lambda c=c: c.post(CHECK_URL, check_body(), format="json") for c in clients])

    assert sorted(r.status_code for r in responses) == [201] * k + [429] * (CHECKS - k)
    for period in stores.periods():
        # The project budget was updated first by every check; denied ones rolled it back.
        assert period.reserved_nanos == k * GPT4O_CHECK_NANOS
    assert len(stores.holds()) == 2 * k


def test_concurrent_repeats_of_one_request_id_reserve_once(store, prices, organization, project, agent):
    make_budget(organization=organization, limit_usd="1")
    clients = [client_for(organization=organization, project=project, agent=agent) for _ in range(8)]
    prime_period(clients[0])

    responses = run_together(
        [lambda c=c: c.post(CHECK_URL, check_body(request_id="same"), format="json") for c in clients]
    )

    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["reservation_id"] for r in responses}) == 1
    assert len(stores.reservations()) == 1
    assert [p.reserved_nanos for p in stores.periods()] == [GPT4O_CHECK_NANOS]


# --- the spend store unavailable: a period row locked by another connection ---------------------


class RowLock:
    """Hold ``SELECT ... FOR UPDATE`` on a period row from another connection until exit."""

    def __init__(self, period_id: int) -> None:
        self.period_id = period_id
        self._locked = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            with transaction.atomic():
                list(BudgetPeriod.objects.select_for_update().filter(pk=self.period_id))
                self._locked.set()
                self._release.wait(timeout=30)
        finally:
            connection.close()

    def __enter__(self) -> "RowLock":
        self._thread.start()
        assert self._locked.wait(timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self._thread.join(timeout=30)


@pytest.fixture
def locked_budget(prices, organization, project, agent, settings):
    settings.SPENDGUARD_BUDGET_LOCK_TIMEOUT_MS = 100
    make_budget(organization=organization, limit_usd="1")
    client = client_for(organization=organization, project=project, agent=agent)
    period = prime_period(client)
    return client, period


def test_store_failure_fails_closed_by_default(locked_budget):
    client, period = locked_budget

    started = time.monotonic()
    with RowLock(period.pk):
        response = client.post(CHECK_URL, check_body(request_id="blocked"), format="json")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "code": "budget_store_unavailable",
            "message": "Budgets cannot be checked right now; the request was not allowed. Retry shortly.",
            "fields": {},
        }
    }
    assert elapsed < 5  # the lock timeout answered, not the 30 s lock holder
    assert not Reservation.objects.exists()
    period.refresh_from_db()
    assert period.reserved_nanos == 0
    # The store is back: the same request id reserves normally.
    assert client.post(CHECK_URL, check_body(request_id="blocked"), format="json").status_code == 201


def test_store_failure_fails_open_when_configured(locked_budget, settings):
    settings.SPENDGUARD_BUDGET_STORE_FAILURE = "open"
    client, period = locked_budget

    with RowLock(period.pk):
        response = client.post(CHECK_URL, check_body(), format="json")

    assert response.status_code == 200
    assert response.json() == {
        "decision": "allow",
        "model": "gpt-4o",
        "reservation_id": None,
        "reserved_usd": "0",
        "expires_at": None,
        "budgets": [],
        "warnings": ["budget_store_unavailable"],
    }
    assert not Reservation.objects.exists()
    period.refresh_from_db()
    assert period.reserved_nanos == 0


def test_store_failure_with_only_soft_budgets_allows(prices, organization, project, settings):
    settings.SPENDGUARD_BUDGET_LOCK_TIMEOUT_MS = 100
    make_budget(project=project, limit_usd="1", enforcement="soft")
    agent = AgentFactory(project=project, name="soft-only")
    client = client_for(organization=organization, project=project, agent=agent)
    period = prime_period(client)

    with RowLock(period.pk):
        response = client.post(CHECK_URL, check_body(), format="json")

    assert (response.status_code, response.json()["warnings"]) == (200, ["budget_store_unavailable"])
    assert not Reservation.objects.exists()
