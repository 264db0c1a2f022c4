"""Accept / reject / implement (idempotent, impossible moves refused) and realized savings
measured from the ledger against the baseline window."""

import datetime as dt
from decimal import Decimal

import pytest

from recommendations.models import RecommendationKind, RecommendationStatus
from recommendations.services.generate import recommendations_generate
from recommendations.services.lifecycle import (
    InvalidTransition,
    recommendation_accept,
    recommendation_implement,
    recommendation_reject,
)
from recommendations.services.realized import NotMeasurable, implemented_verify_all, recommendation_verify
from tests.factories import AgentFactory
from tests.recommendations.conftest import NOW, ledger_row
from tests.recommendations.test_generate import finding, run

pytestmark = pytest.mark.django_db
WINDOW_START = NOW - dt.timedelta(days=30)
DONE = NOW + dt.timedelta(days=1)


@pytest.fixture
def rec(org, agent):
    run(org, [finding(agent)])
    return org.recommendations.get()


def test_accept_then_implement_records_who_and_when(rec, admin_user):
    accepted = recommendation_accept(recommendation=rec, actor=admin_user, now=NOW)
    assert (accepted.status, accepted.status_changed_by, accepted.status_changed_by_label) == (
        "accepted",
        admin_user,
        "admin",
    )
    again = recommendation_accept(recommendation=rec, actor=None, now=DONE)
    assert (again.status_changed_at, again.status_changed_by_label) == (NOW, "admin")  # a retry changes nothing

    done = recommendation_implement(recommendation=rec, actor_label="api-key:abc", now=DONE)
    assert (done.status, done.implemented_at, done.status_changed_by_label) == ("implemented", DONE, "api-key:abc")


def test_reject_needs_a_reason_and_is_final(rec):
    with pytest.raises(Exception) as error:
        recommendation_reject(recommendation=rec, reason="  ")
    assert (error.value.code, error.value.fields) == ("validation_error", {"reason": ["This field is required."]})

    rejected = recommendation_reject(recommendation=rec, reason="We need the larger model's quality.")
    assert (rejected.status, rejected.status_reason) == ("rejected", "We need the larger model's quality.")
    with pytest.raises(InvalidTransition) as error:
        recommendation_accept(recommendation=rec)
    assert (error.value.status_code, error.value.code) == (409, "invalid_transition")
    assert error.value.message == "A recommendation that is rejected cannot be marked accepted."


def test_implemented_at_may_not_be_in_the_future(rec):
    with pytest.raises(Exception) as error:
        recommendation_implement(recommendation=rec, implemented_at=NOW + dt.timedelta(hours=1), now=NOW)
    assert error.value.fields == {"implemented_at": ["Must not be in the future."]}
    assert rec.status == RecommendationStatus.OPEN


def test_realized_saving_of_a_model_switch_counts_the_agents_traffic_on_either_model(org, agent, rec):
    # Baseline window: 100 requests on gpt-4o at $0.01 = $0.01 per request.
    for _ in range(100):
        ledger_row(agent, cost="0.01", occurred_at=WINDOW_START + dt.timedelta(days=5))
    # After (10 days from DONE): 40 on gpt-4o-mini at $0.001 and 10 still on gpt-4o at $0.01,
    # 50 requests for $0.14 = $0.0028 per request. Another model and another agent do not count.
    after = DONE + dt.timedelta(days=2)
    for _ in range(40):
        ledger_row(agent, cost="0.001", model="gpt-4o-mini", occurred_at=after)
    for _ in range(10):
        ledger_row(agent, cost="0.01", occurred_at=after)
    ledger_row(agent, cost="5", model="claude-sonnet-4-5", occurred_at=after)
    ledger_row(AgentFactory(project=agent.project), cost="5", occurred_at=after)
    recommendation_implement(recommendation=rec, implemented_at=DONE, now=DONE)

    measured = recommendation_verify(recommendation=rec, now=DONE + dt.timedelta(days=10))

    # (0.01 - 0.0028) x 50 requests x 30 / 10 days = $1.08 a month.
    assert measured.realized_monthly_saving_usd == Decimal("1.08")
    assert measured.realized_evidence == {
        "method": "per_request",
        "baseline": {
            "start": WINDOW_START.isoformat(),
            "end": NOW.isoformat(),
            "requests": 100,
            "cost_usd": "1",
            "days": "30",
        },
        "after": {
            "start": DONE.isoformat(),
            "end": (DONE + dt.timedelta(days=10)).isoformat(),
            "requests": 50,
            "cost_usd": "0.14",
            "days": "10",
        },
        "estimated_monthly_saving_usd": "12.5",
        "realized_monthly_saving_usd": "1.08",
    }


def test_response_caching_is_measured_per_day_and_a_loss_stays_negative(org, agent):
    run_finding = finding(agent, kind=RecommendationKind.RESPONSE_CACHE, target="")
    recommendations_generate_ = run  # the fake generator runs under the kind we pass

    recommendations_generate(
        organization=org, now=NOW, generators={RecommendationKind.RESPONSE_CACHE: lambda c: [run_finding]}
    )
    rec = org.recommendations.get()
    del recommendations_generate_
    # Baseline: $30 over 30 days = $1 a day. After: $4 over 2 days = $2 a day (it got worse).
    for _ in range(3):
        ledger_row(agent, cost="10", occurred_at=WINDOW_START + dt.timedelta(days=1))
    ledger_row(agent, cost="4", occurred_at=DONE + dt.timedelta(hours=1))
    recommendation_implement(recommendation=rec, implemented_at=DONE, now=DONE)

    measured = recommendation_verify(recommendation=rec, now=DONE + dt.timedelta(days=2))
    assert measured.realized_evidence["method"] == "per_day"
    assert measured.realized_monthly_saving_usd == Decimal("-30")  # (1 - 2) x 30


def test_realized_savings_need_an_implemented_recommendation_and_enough_days(rec, settings):
    with pytest.raises(NotMeasurable) as error:
        recommendation_verify(recommendation=rec, now=DONE)
    assert (error.value.status_code, error.value.code) == (409, "not_measurable")

    settings.SPENDGUARD_RECOMMENDATION_MIN_VERIFY_DAYS = 3
    recommendation_implement(recommendation=rec, implemented_at=DONE, now=DONE)
    with pytest.raises(NotMeasurable) as error:
        recommendation_verify(recommendation=rec, now=DONE + dt.timedelta(days=2))
    assert error.value.extra == {"measurable_from": (DONE + dt.timedelta(days=3)).isoformat()}
    assert implemented_verify_all(now=DONE + dt.timedelta(days=2)) == 0


def test_the_daily_job_measures_every_implemented_recommendation_it_can(org, agent, rec):
    ledger_row(agent, cost="0.02", occurred_at=WINDOW_START + dt.timedelta(days=1))
    ledger_row(agent, cost="0.01", occurred_at=DONE + dt.timedelta(hours=1))
    recommendation_implement(recommendation=rec, implemented_at=DONE, now=DONE)

    assert implemented_verify_all(now=DONE + dt.timedelta(days=1)) == 1
    rec.refresh_from_db()
    assert rec.realized_monthly_saving_usd == Decimal("0.3")  # (0.02 - 0.01) x 1 request x 30 / 1 day
