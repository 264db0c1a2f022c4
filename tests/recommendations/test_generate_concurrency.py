"""Two generations of one organization at once (the nightly job and an alert-triggered run) write
one row per opportunity: runs are serialised on the organization's row, and the fingerprint is
unique in the database."""

import datetime as dt

import pytest

from recommendations.models import Recommendation
from recommendations.services.generate import recommendations_generate
from tests.concurrency import run_together
from tests.recommendations.conftest import NOW
from tests.recommendations.test_generate import KIND, finding

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_concurrent_generations_write_each_opportunity_once(org, agent):
    found = [finding(agent)]

    def generate(offset: int):
        return lambda: recommendations_generate(
            organization=org, now=NOW + dt.timedelta(seconds=offset), generators={KIND: lambda c: found}
        )

    reports = run_together([generate(i) for i in range(6)])

    rec = Recommendation.objects.get()
    assert sorted(len(r.created) for r in reports) == [0, 0, 0, 0, 0, 1]
    assert sum(len(r.refreshed) for r in reports) == 5
    assert rec.status == "open"
