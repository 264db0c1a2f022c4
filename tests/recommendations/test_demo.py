"""The demo (``make demo``'s seed commands) shows at least four kinds of recommendation, and each
one's "Ledger rows" link selects exactly the requests its figures were computed from."""

from collections import Counter
from io import StringIO
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.core.management import call_command

from costs.models import UsageRecord
from recommendations.models import ModelTier, Recommendation
from recommendations.selectors import ledger_rows_url

pytestmark = pytest.mark.django_db


def test_the_demo_has_four_kinds_whose_rows_the_page_links_to():
    quiet = {"stdout": StringIO(), "stderr": StringIO()}
    call_command("sync_prices", **quiet)
    call_command("seed_demo", **quiet)
    out = StringIO()
    call_command("seed_demo_recommendations", stdout=out, stderr=StringIO())

    assert ModelTier.objects.filter(family="fast", model="gpt-4o-mini").exists()
    open_recs = Recommendation.objects.filter(status="open")
    kinds = Counter(open_recs.values_list("kind", flat=True))
    assert len(kinds) >= 4, kinds
    assert out.getvalue().startswith(f"Recommendations: {open_recs.count()} new, 0 refreshed; {open_recs.count()} open")
    for rec in open_recs:
        assert rec.estimated_monthly_saving_usd >= 1
        filters = dict(parse_qsl(urlsplit(ledger_rows_url(rec)).query))
        assert UsageRecord.objects.filter(**filters).count() == rec.baseline_requests, (rec.title, filters)

    # Run again: the same opportunities, refreshed, nothing new.
    again = StringIO()
    call_command("seed_demo_recommendations", stdout=again, stderr=StringIO())
    assert again.getvalue().startswith(f"Recommendations: 0 new, {open_recs.count()} refreshed;")
