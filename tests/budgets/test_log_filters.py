"""A denied budget check is an answer, not a warning: Django's request logger stays quiet for it,
and still reports every other client error."""

import datetime as dt
import logging

import pytest
from freezegun import freeze_time

from tests.budgets.conftest import CHECK_URL, check_body, ledger_row, make_budget

pytestmark = pytest.mark.django_db
NOW = "2026-11-02T12:00:00Z"


@freeze_time(NOW)
def test_a_denied_check_logs_no_warning_but_a_bad_one_does(prices, organization, agent, agent_client, caplog):
    make_budget(agent=agent, name="agent daily", limit_usd="0.01", period="daily")
    ledger_row(agent=agent, cost_usd="0.0099", occurred_at=dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC))

    with caplog.at_level(logging.WARNING, logger="django.request"):
        denied = agent_client.post(CHECK_URL, check_body(request_id="deny-1"), format="json")
        invalid = agent_client.post(CHECK_URL, {"model": 1}, format="json")

    assert (denied.status_code, invalid.status_code) == (429, 400)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("django.request", f"Bad Request: {CHECK_URL}")]
