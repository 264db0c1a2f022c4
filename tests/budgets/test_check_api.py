"""POST /api/v1/budget-checks/ and its release, over HTTP: whole bodies, DB state, error codes.

Amounts are worked out by hand from the prices in conftest (gpt-4o: 2.5 / 10 USD per 1M tokens, so
1,000 prompt + 500 max output tokens reserve 0.0075 USD; gpt-4o-mini: 0.15 / 0.6 -> 0.00045 USD).
"""

import datetime as dt
import uuid

import pytest
from freezegun import freeze_time

from budgets.errors import BudgetExceeded
from budgets.models import AuditAction, AuditEntry, BudgetPeriod, Reservation, ReservationStatus
from budgets.services.enforcement import budget_check, worst_case_nanos
from costs.models import Agent, AgentStatus
from costs.services.api_keys import api_key_create
from costs.services.scope import scope_for_key
from tests.budgets import stores
from tests.budgets.conftest import (
    CHECK_URL,
    GPT4O_CHECK_NANOS,
    check_body,
    client_for,
    ledger_row,
    make_budget,
    make_price,
    release_url,
)
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

# Every test runs on both spend stores (tests/budgets/stores.py).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("store")]

NOW = "2026-11-10T12:00:00Z"
NOW_DT = dt.datetime(2026, 11, 10, 12, tzinfo=dt.UTC)
NOVEMBER = {"period_start": "2026-11-01T00:00:00Z", "period_end": "2026-12-01T00:00:00Z"}
NOV_10 = {"period_start": "2026-11-10T00:00:00Z", "period_end": "2026-11-11T00:00:00Z"}


def line(budget, *, limit, spent, reserved, remaining, status, period=None, scope="organization") -> dict:
    return {
        "id": budget.pk,
        "scope": scope,
        **(period or NOVEMBER),
        "limit_usd": limit,
        "spent_usd": spent,
        "reserved_usd": reserved,
        "remaining_usd": remaining,
        "status": status,
    }


def only_reservation() -> Reservation:
    [reservation] = stores.reservations()
    return reservation


def reservation_status(reservation_id) -> str:
    return next(r.status for r in stores.reservations() if str(r.pk) == str(reservation_id))


def only_reserved() -> int:
    [period] = stores.periods()
    return period.reserved_nanos


# --- decisions --------------------------------------------------------------------------------


@freeze_time(NOW)
def test_allow_reserves_the_worst_case_against_every_covering_budget(prices, organization, project, agent):
    org_budget = make_budget(organization=organization, name="org", limit_usd="10")
    agent_budget = make_budget(agent=agent, name="agent", limit_usd="1", period="daily")
    other_agent = AgentFactory(project=project, name="other")
    make_budget(agent=other_agent, name="not covering", limit_usd="0.001")
    client = client_for(organization=organization, project=project, agent=agent)

    response = client.post(CHECK_URL, check_body(request_id="call-1"), format="json")

    assert response.status_code == 201
    reservation = only_reservation()
    assert response.json() == {
        "decision": "allow",
        "model": "gpt-4o",
        "reservation_id": str(reservation.pk),
        "reserved_usd": "0.0075",
        "expires_at": "2026-11-10T12:10:00Z",
        "budgets": [
            line(org_budget, limit="10", spent="0", reserved="0.0075", remaining="9.9925", status="ok"),
            line(
                agent_budget, limit="1", spent="0", reserved="0.0075", remaining="0.9925", status="ok",
                period=NOV_10, scope="agent",
            ),
        ],
    }  # fmt: skip
    assert (reservation.status, reservation.amount_nanos, reservation.request_id, reservation.model) == (
        ReservationStatus.HELD,
        GPT4O_CHECK_NANOS,
        "call-1",
        "gpt-4o",
    )
    assert (reservation.organization_id, reservation.project_id, reservation.agent_id) == (
        organization.pk,
        project.pk,
        agent.pk,
    )
    assert stores.holds() == [
        (org_budget.pk, GPT4O_CHECK_NANOS),
        (agent_budget.pk, GPT4O_CHECK_NANOS),
    ]
    assert stores.period_counters() == [
        (org_budget.pk, GPT4O_CHECK_NANOS, 0),
        (agent_budget.pk, GPT4O_CHECK_NANOS, 0),
    ]


@freeze_time(NOW)
def test_no_covering_budget_still_reserves_for_settlement(prices, organization, agent_client):
    response = agent_client.post(CHECK_URL, check_body(), format="json")

    assert response.status_code == 201
    assert response.json() == {
        "decision": "allow",
        "model": "gpt-4o",
        "reservation_id": str(only_reservation().pk),
        "reserved_usd": "0.0075",
        "expires_at": "2026-11-10T12:10:00Z",
        "budgets": [],
    }


@freeze_time(NOW)
def test_warn_when_a_soft_budget_would_go_over_its_limit(prices, organization, agent, agent_client):
    budget = make_budget(organization=organization, enforcement="soft", limit_usd="0.01")
    ledger_row(agent=agent, cost_usd="0.005", occurred_at=NOW_DT - dt.timedelta(hours=1))

    response = agent_client.post(CHECK_URL, check_body(), format="json")

    assert response.status_code == 201
    assert response.json() == {
        "decision": "warn",
        "model": "gpt-4o",
        "reservation_id": str(only_reservation().pk),
        "reserved_usd": "0.0075",
        "expires_at": "2026-11-10T12:10:00Z",
        "budgets": [line(budget, limit="0.01", spent="0.005", reserved="0.0075", remaining="0", status="exceeded")],
        "warnings": [f"budget_over_limit:{budget.pk}"],
    }
    assert only_reserved() == GPT4O_CHECK_NANOS


@freeze_time(NOW)
def test_warn_when_spend_passes_the_highest_threshold_below_100(prices, organization, agent, agent_client):
    budget = make_budget(organization=organization, limit_usd="0.01", thresholds=[50, 90, 100, 120])
    ledger_row(agent=agent, cost_usd="0.002", occurred_at=NOW_DT)  # 0.002 + 0.0075 = 95 %

    response = agent_client.post(CHECK_URL, check_body(), format="json")

    assert response.status_code == 201
    body = response.json()
    assert (body["decision"], body["warnings"]) == ("warn", [f"budget_threshold:{budget.pk}:90"])
    assert body["budgets"] == [
        line(budget, limit="0.01", spent="0.002", reserved="0.0075", remaining="0.0005", status="warning")
    ]


@freeze_time(NOW)
def test_below_the_highest_threshold_is_allow_with_an_ok_status(prices, organization, agent_client):
    # 75 % after the check: past the 50 and 75 % alert thresholds, but "warning" starts at the highest
    # threshold below 100 % (budgets.selectors.status_of), as in the budgets API.
    budget = make_budget(organization=organization, limit_usd="0.01")

    body = agent_client.post(CHECK_URL, check_body(), format="json").json()

    assert body["decision"] == "allow"
    assert "warnings" not in body
    assert body["budgets"] == [
        line(budget, limit="0.01", spent="0", reserved="0.0075", remaining="0.0025", status="ok")
    ]


@freeze_time(NOW)
def test_downgrade_reserves_the_cheaper_model(prices, organization, project, agent, agent_client):
    project_budget = make_budget(project=project, name="project", limit_usd="10")
    agent_budget = make_budget(
        agent=agent, name="agent", limit_usd="0.005", action="downgrade", downgrade_model="gpt-4o-mini"
    )

    response = agent_client.post(CHECK_URL, check_body(), format="json")

    assert response.status_code == 201
    reservation = only_reservation()
    assert response.json() == {
        "decision": "downgrade",
        "model": "gpt-4o-mini",
        "reservation_id": str(reservation.pk),
        "reserved_usd": "0.00045",
        "expires_at": "2026-11-10T12:10:00Z",
        "budgets": [
            line(project_budget, limit="10", spent="0", reserved="0.00045", remaining="9.99955", status="ok",
                 scope="project"),
            line(agent_budget, limit="0.005", spent="0", reserved="0.00045", remaining="0.00455", status="ok",
                 scope="agent"),
        ],
    }  # fmt: skip
    assert (reservation.model, reservation.amount_nanos) == ("gpt-4o-mini", 450_000)
    assert sorted(p.reserved_nanos for p in stores.periods()) == [450_000, 450_000]


@freeze_time(NOW)
def test_downgrade_that_does_not_fit_either_is_denied(prices, organization, agent, agent_client):
    budget = make_budget(agent=agent, limit_usd="0.0004", action="downgrade", downgrade_model="gpt-4o-mini")

    response = agent_client.post(CHECK_URL, check_body(), format="json")

    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["code"], error["model"], error["required_usd"]) == ("budget_exceeded", "gpt-4o-mini", "0.00045")
    assert [b["id"] for b in error["budgets"]] == [budget.pk]
    assert stores.reservations() == []
    assert only_reserved() == 0


@freeze_time(NOW)
def test_deny_answers_429_with_the_budget_at_fault_and_retry_after(prices, organization, agent, agent_client):
    roomy = make_budget(organization=organization, name="roomy", limit_usd="100")
    daily = make_budget(agent=agent, name="agent daily", limit_usd="0.01", period="daily")
    ledger_row(agent=agent, cost_usd="0.005", occurred_at=NOW_DT - dt.timedelta(hours=2))

    response = agent_client.post(CHECK_URL, check_body(request_id="call-9"), format="json")

    assert response.status_code == 429
    assert response["Retry-After"] == str(12 * 3600)  # to midnight UTC
    assert response.json() == {
        "error": {
            "code": "budget_exceeded",
            "message": f"Reserving 0.0075 USD for gpt-4o would exceed hard budget 'agent daily' (id {daily.pk}).",
            "fields": {},
            "model": "gpt-4o",
            "required_usd": "0.0075",
            "budgets": [
                line(daily, limit="0.01", spent="0.005", reserved="0", remaining="0.005", status="ok",
                     period=NOV_10, scope="agent"),
            ],
        }
    }  # fmt: skip
    # All or none: the roomy organization budget holds nothing either.
    assert stores.reservations() == []
    assert stores.holds() == []
    assert {p.budget_id: p.reserved_nanos for p in stores.periods()} == {roomy.pk: 0, daily.pk: 0}


@freeze_time(NOW)
def test_grace_admits_spend_up_to_limit_plus_grace(prices, organization, agent_client):
    budget = make_budget(organization=organization, limit_usd="0.007", grace_percent="10")  # ceiling 0.0077

    first = agent_client.post(CHECK_URL, check_body(), format="json")
    over = agent_client.post(CHECK_URL, check_body(prompt_tokens=0, max_output_tokens=21), format="json")
    exact = agent_client.post(CHECK_URL, check_body(prompt_tokens=0, max_output_tokens=20), format="json")

    assert first.status_code == 201
    assert first.json()["budgets"][0]["status"] == "exceeded"
    assert first.json()["warnings"] == [f"budget_over_limit:{budget.pk}"]
    assert over.status_code == 429  # 0.0075 + 0.00021 > 0.0077
    assert exact.status_code == 201  # 0.0075 + 0.0002 = 0.0077: exactly the ceiling fits
    assert only_reserved() == 7_700_000


@freeze_time(NOW)
def test_total_budget_denial_has_no_retry_after(prices, organization, agent, agent_client):
    make_budget(organization=organization, limit_usd="0.001", period="total")

    response = agent_client.post(CHECK_URL, check_body(), format="json")

    assert response.status_code == 429
    assert response.json()["error"]["budgets"][0]["period_end"] is None
    assert "Retry-After" not in response


@freeze_time(NOW)
def test_pause_agent_action_pauses_the_agent_when_it_denies(prices, organization, agent, agent_client):
    budget = make_budget(agent=agent, limit_usd="0.001", action="pause_agent")

    denied = agent_client.post(CHECK_URL, check_body(), format="json")
    again = agent_client.post(CHECK_URL, check_body(), format="json")

    assert denied.status_code == 429
    assert denied.json()["error"]["code"] == "budget_exceeded"
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PAUSED
    [audit] = AuditEntry.objects.all()
    assert (audit.action, audit.agent_id, audit.budget_id, audit.organization_id) == (
        AuditAction.AGENT_PAUSED,
        agent.pk,
        budget.pk,
        organization.pk,
    )
    assert audit.changes == {"status": ["active", "paused"], "reason": "budget_exceeded"}
    assert again.status_code == 429
    assert again.json()["error"]["code"] == "agent_paused"


@freeze_time(NOW)
def test_pausing_and_resuming_an_agent_act_on_its_keys_next_checks(prices, organization, agent, agent_client):
    """Changed behind the process's cached check context (and the agent key's cached agent)."""
    make_budget(organization=organization, limit_usd="10")
    statuses = [agent_client.post(CHECK_URL, check_body(), format="json").status_code]
    for status in (AgentStatus.PAUSED, AgentStatus.ACTIVE):
        Agent.objects.filter(pk=agent.pk).update(status=status)
        statuses.append(agent_client.post(CHECK_URL, check_body(), format="json").status_code)

    assert statuses == [201, 429, 201]


@freeze_time(NOW)
def test_paused_agent_is_denied_before_anything_is_reserved(prices, organization, project):
    paused = AgentFactory(project=project, name="sleepy", status=AgentStatus.PAUSED)
    make_budget(organization=organization, limit_usd="10")
    client = client_for(organization=organization, project=project)

    response = client.post(CHECK_URL, check_body(agent="sleepy"), format="json")

    assert response.status_code == 429
    assert response.json() == {
        "error": {
            "code": "agent_paused",
            "message": "Agent 'sleepy' is paused; an operator must resume it.",
            "fields": {},
        }
    }
    assert "Retry-After" not in response
    assert paused.status == AgentStatus.PAUSED
    assert stores.reservations() == []
    assert not BudgetPeriod.objects.exists()


@freeze_time(NOW)
def test_unpriced_model_reserves_nothing_and_warns(prices, organization, agent_client):
    budget = make_budget(organization=organization, limit_usd="1")

    response = agent_client.post(CHECK_URL, check_body(model="mystery-model"), format="json")

    assert response.status_code == 201
    assert response.json() == {
        "decision": "warn",
        "model": "mystery-model",
        "reservation_id": str(only_reservation().pk),
        "reserved_usd": "0",
        "expires_at": "2026-11-10T12:10:00Z",
        "budgets": [line(budget, limit="1", spent="0", reserved="0", remaining="1", status="ok")],
        "warnings": ["unpriced_model"],
    }


@freeze_time(NOW)
def test_agent_model_override_is_the_model_checked(prices, organization, project):
    AgentFactory(project=project, name="thrifty", model_override="gpt-4o-mini")
    client = client_for(organization=organization, project=project)

    body = client.post(CHECK_URL, check_body(agent="thrifty"), format="json").json()

    assert (body["decision"], body["model"], body["reserved_usd"]) == ("allow", "gpt-4o-mini", "0.00045")


@freeze_time(NOW)
def test_unknown_agent_is_checked_as_new_and_not_registered(prices, organization, project, agent):
    project_budget = make_budget(project=project, limit_usd="1")
    make_budget(agent=agent, limit_usd="0.0001")  # another agent's budget: does not apply
    client = client_for(organization=organization)

    response = client.post(CHECK_URL, check_body(project="search", agent="newcomer"), format="json")

    assert response.status_code == 201
    assert [b["id"] for b in response.json()["budgets"]] == [project_budget.pk]
    assert not Agent.objects.filter(name="newcomer").exists()
    reservation = only_reservation()
    assert (reservation.project_id, reservation.agent_id) == (project.pk, None)


def test_worst_case_bills_every_token_at_the_dearer_rate(db):
    price = make_price("thinker", input="2", output="8", cache_write="2.5", reasoning="20")
    # 1,000 input at the cache-write 2.5 + 500 output at the reasoning 20 = 0.0025 + 0.01.
    assert worst_case_nanos(price, 1000, 500) == 12_500_000
    # Rounded up to the nano-dollar: one token at 0.0015 USD / 1M is 1.5 nano-USD -> 2.
    cheap = make_price("cheap", input="0.0015", output="0")
    assert worst_case_nanos(cheap, 1, 0) == 2


# --- periods ----------------------------------------------------------------------------------


@freeze_time(NOW)
def test_budget_added_mid_period_counts_existing_ledger_spend(prices, organization, project, agent, agent_client):
    other_agent = AgentFactory(project=project, name="other")
    ledger_row(agent=agent, cost_usd="0.25", occurred_at=dt.datetime(2026, 11, 3, tzinfo=dt.UTC))
    ledger_row(agent=other_agent, cost_usd="0.5", occurred_at=dt.datetime(2026, 11, 9, tzinfo=dt.UTC))
    ledger_row(agent=agent, cost_usd="7", occurred_at=dt.datetime(2026, 10, 31, 23, 59, tzinfo=dt.UTC))  # October
    ledger_row(agent=agent, cost_usd=None, occurred_at=dt.datetime(2026, 11, 4, tzinfo=dt.UTC))  # unpriced
    org_budget = make_budget(organization=organization, name="org", limit_usd="1")
    agent_budget = make_budget(agent=agent, name="agent", limit_usd="1")

    body = agent_client.post(CHECK_URL, check_body(), format="json").json()

    assert body["budgets"] == [
        line(org_budget, limit="1", spent="0.75", reserved="0.0075", remaining="0.2425", status="ok"),
        line(agent_budget, limit="1", spent="0.25", reserved="0.0075", remaining="0.7425", status="ok", scope="agent"),
    ]


def test_daily_budget_in_berlin_resets_at_local_midnight(prices, organization, agent):
    budget = make_budget(agent=agent, limit_usd="0.01", period="daily", timezone="Europe/Berlin")
    key, _ = api_key_create(organization=organization, project=agent.project, agent=agent, name="k")
    scope = scope_for_key(key)
    # 22:30 UTC is 23:30 in Berlin (CET): still November 10th there.
    ledger_row(agent=agent, cost_usd="0.005", occurred_at=dt.datetime(2026, 11, 10, 22, 30, tzinfo=dt.UTC))

    def check(now):
        return budget_check(
            scope=scope, agent=None, project=None, sprint=None, model="gpt-4o", prompt_tokens=1000,
            max_output_tokens=500, request_id=None, now=now,
        )  # fmt: skip

    with pytest.raises(BudgetExceeded) as denied:
        check(dt.datetime(2026, 11, 10, 22, 59, 30, tzinfo=dt.UTC))  # 23:59:30 Berlin
    assert denied.value.retry_after == 30
    assert denied.value.extra["budgets"][0]["period_start"] == dt.datetime(2026, 11, 9, 23, tzinfo=dt.UTC)
    assert denied.value.extra["budgets"][0]["period_end"] == dt.datetime(2026, 11, 10, 23, tzinfo=dt.UTC)

    after_midnight = check(dt.datetime(2026, 11, 10, 23, 0, tzinfo=dt.UTC))  # 00:00 Berlin, Nov 11th

    assert after_midnight.decision == "allow"
    [line_] = after_midnight.budgets
    assert (line_.period_start, line_.period_end) == (
        dt.datetime(2026, 11, 10, 23, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 11, 23, tzinfo=dt.UTC),
    )
    assert (line_.spent_nanos, line_.reserved_nanos) == (0, GPT4O_CHECK_NANOS)
    assert list(
        BudgetPeriod.objects.filter(budget=budget).order_by("starts_at").values_list("starts_at", flat=True)
    ) == [
        dt.datetime(2026, 11, 9, 23, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 10, 23, tzinfo=dt.UTC),
    ]


@freeze_time(NOW)
def test_sprint_budget_covers_the_running_sprint_only(prices, organization, project, agent, agent_client):
    running = SprintFactory(project=project, slug="s2", start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 14))
    later = SprintFactory(project=project, slug="s3", start_date=dt.date(2026, 11, 15), end_date=dt.date(2026, 11, 28))
    running_budget = make_budget(sprint=running, limit_usd="1", period="sprint")
    # The later sprint's budget applies only to checks that name that sprint.
    later_budget = make_budget(sprint=later, limit_usd="0.0001", period="monthly")

    body = agent_client.post(CHECK_URL, check_body(), format="json").json()

    assert body["budgets"] == [
        line(running_budget, limit="1", spent="0", reserved="0.0075", remaining="0.9925", status="ok", scope="sprint",
             period={"period_start": "2026-11-01T00:00:00Z", "period_end": "2026-11-15T00:00:00Z"}),
    ]  # fmt: skip
    named = agent_client.post(CHECK_URL, check_body(sprint="s3"), format="json")
    assert named.status_code == 429
    assert [b["id"] for b in named.json()["error"]["budgets"]] == [later_budget.pk]


@freeze_time(NOW)
def test_model_filtered_budget_gates_only_that_model(prices, organization, agent_client):
    budget = make_budget(organization=organization, limit_usd="0.001", model_filter="gpt-4o")

    gated = agent_client.post(CHECK_URL, check_body(model="openai/gpt-4o"), format="json")
    other = agent_client.post(CHECK_URL, check_body(model="gpt-4o-mini"), format="json")

    assert gated.status_code == 429
    assert [b["id"] for b in gated.json()["error"]["budgets"]] == [budget.pk]
    assert other.status_code == 201
    assert other.json()["budgets"] == []
    assert only_reservation().model == "gpt-4o-mini"


# --- idempotency, release, tenancy ------------------------------------------------------------


@freeze_time(NOW)
def test_repeated_request_id_returns_the_held_reservation(prices, organization, agent_client):
    make_budget(organization=organization, limit_usd="0.01")

    first = agent_client.post(CHECK_URL, check_body(request_id="retry-me"), format="json")
    second = agent_client.post(CHECK_URL, check_body(request_id="retry-me"), format="json")

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json() == first.json()
    assert len(stores.reservations()) == 1
    assert only_reserved() == GPT4O_CHECK_NANOS


@freeze_time(NOW)
def test_repeated_request_id_is_answered_even_when_the_budget_is_now_full(prices, organization, agent_client):
    make_budget(organization=organization, limit_usd="0.0075")
    first = agent_client.post(CHECK_URL, check_body(request_id="full"), format="json")

    again = agent_client.post(CHECK_URL, check_body(request_id="full"), format="json")
    other = agent_client.post(CHECK_URL, check_body(request_id="another"), format="json")

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 429)
    assert again.json()["reservation_id"] == first.json()["reservation_id"]


@freeze_time(NOW)
def test_repeated_request_id_of_a_released_reservation_is_409(prices, organization, agent_client):
    first = agent_client.post(CHECK_URL, check_body(request_id="done"), format="json")
    agent_client.post(release_url(first.json()["reservation_id"]))

    again = agent_client.post(CHECK_URL, check_body(request_id="done"), format="json")

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "reservation_closed"
    assert len(stores.reservations()) == 1


@freeze_time(NOW)
def test_release_gives_the_amount_back_and_twice_has_no_effect(prices, organization, agent_client):
    make_budget(organization=organization, limit_usd="1")
    reservation_id = agent_client.post(CHECK_URL, check_body(), format="json").json()["reservation_id"]
    agent_client.post(CHECK_URL, check_body(), format="json")  # another, still held

    first = agent_client.post(release_url(reservation_id))
    second = agent_client.post(release_url(reservation_id))

    expected = {"reservation_id": reservation_id, "status": "released", "closed_at": "2026-11-10T12:00:00Z"}
    assert (first.status_code, first.json()) == (200, expected)
    assert (second.status_code, second.json()) == (200, expected)
    assert only_reserved() == GPT4O_CHECK_NANOS
    assert reservation_status(reservation_id) == ReservationStatus.RELEASED


@freeze_time(NOW)
def test_another_organizations_reservation_is_not_found(prices, organization, agent_client):
    make_budget(organization=organization, limit_usd="1")
    reservation_id = agent_client.post(CHECK_URL, check_body(), format="json").json()["reservation_id"]
    stranger_org = OrganizationFactory(slug="globex")
    stranger = client_for(organization=stranger_org)

    response = stranger.post(release_url(reservation_id))
    unknown = agent_client.post(release_url(uuid.uuid4()))

    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    assert unknown.status_code == 404
    assert reservation_status(reservation_id) == ReservationStatus.HELD
    assert only_reserved() == GPT4O_CHECK_NANOS


@freeze_time(NOW)
def test_another_agents_reservation_is_not_found_for_an_agent_key(prices, organization, project, agent_client):
    sibling = AgentFactory(project=project, name="sibling")
    sibling_client = client_for(organization=organization, project=project, agent=sibling)
    reservation_id = sibling_client.post(CHECK_URL, check_body(), format="json").json()["reservation_id"]

    assert agent_client.post(release_url(reservation_id)).status_code == 404
    assert client_for(organization=organization, project=project).post(release_url(reservation_id)).status_code == 200


@freeze_time(NOW)
def test_request_ids_are_per_organization(prices, organization, agent_client):
    other_project = ProjectFactory(organization=OrganizationFactory(slug="globex"), slug="x")
    stranger = client_for(organization=other_project.organization, project=other_project)

    mine = agent_client.post(CHECK_URL, check_body(request_id="same"), format="json")
    theirs = stranger.post(CHECK_URL, check_body(request_id="same", agent="bot"), format="json")

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["reservation_id"] != theirs.json()["reservation_id"]


# --- input and scope --------------------------------------------------------------------------


@freeze_time(NOW)
def test_invalid_input_is_400_with_field_errors_and_writes_nothing(prices, organization, agent_client):
    make_budget(organization=organization, limit_usd="1")

    response = agent_client.post(
        CHECK_URL,
        {"model": "", "prompt_tokens": -1, "max_output_tokens": True, "request_id": 7, "colour": "red"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "Some fields are invalid.",
            "fields": {
                "colour": ["Unknown field."],
                "max_output_tokens": ["Must be an integer."],
                "model": ["May not be blank."],
                "prompt_tokens": ["Must be between 0 and 1000000000."],
                "request_id": ["Must be a string."],
            },
        }
    }
    assert stores.reservations() == []
    assert not BudgetPeriod.objects.exists()


@freeze_time(NOW)
def test_attribution_errors(prices, organization, project, agent_client):
    project_client = client_for(organization=organization, project=project)
    org_client = client_for(organization=organization)

    outside = agent_client.post(CHECK_URL, check_body(agent="someone-else"), format="json")
    missing_agent = project_client.post(CHECK_URL, check_body(), format="json")
    unknown_project = org_client.post(CHECK_URL, check_body(project="nope", agent="a"), format="json")
    unknown_sprint = agent_client.post(CHECK_URL, check_body(sprint="nope"), format="json")
    anonymous = agent_client.__class__().post(CHECK_URL, check_body(), format="json")

    assert (outside.status_code, outside.json()["error"]["code"]) == (403, "out_of_scope")
    assert missing_agent.json()["error"]["fields"] == {
        "agent": ["This field is required for a project-scoped API key."]
    }
    assert unknown_project.json()["error"]["fields"] == {"project": ["Unknown project 'nope' in organization 'acme'."]}
    assert unknown_sprint.json()["error"]["fields"] == {"sprint": ["Unknown sprint 'nope' in project 'search'."]}
    assert anonymous.status_code == 401
    assert stores.reservations() == []
