"""/reports/recommendations/: staff only; the open and accepted opportunities best first with their
figures and evidence, each linked to the ledger rows it was computed from; other statuses, sorting
and a CSV export."""

import csv
import datetime as dt
import html as html_lib
import io
import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from recommendations.models import Confidence, Effort, RecommendationKind, RecommendationStatus
from recommendations.selectors import ledger_rows_url
from tests.factories import AgentFactory
from tests.recommendations.conftest import IN_WINDOW, NOW, ledger_row
from tests.recommendations.factories import RecommendationFactory

pytestmark = pytest.mark.django_db

URL = "/reports/recommendations/"


@pytest.fixture
def staff(db) -> Client:
    """A staff user who may read the ledger in the admin (where the "Ledger rows" links go)."""
    user = get_user_model().objects.create_user("olivia", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def recs(org, project, agent):
    """Open, accepted (higher saving, lower priority), implemented (measured), rejected; and globex's."""
    writer = AgentFactory(project=project, name="writer")
    return {
        "planner": RecommendationFactory(
            agent=agent,
            title="planner: gpt-4o → gpt-4o-mini",
            estimated_monthly_saving_usd=Decimal("120"),
            priority_score=Decimal("120"),
            evidence={"requests": 1000, "current_cost_usd": "12.5", "current": {"model": "gpt-4o", "input": "2.5"}},
        ),
        "writer": RecommendationFactory(
            agent=writer,
            kind=RecommendationKind.BATCH_API,
            title="writer: use the batch API",
            estimated_monthly_saving_usd=Decimal("200"),
            confidence=Confidence.MEDIUM,
            effort=Effort.MEDIUM,
            priority_score=Decimal("60"),
            status=RecommendationStatus.ACCEPTED,
        ),
        "done": RecommendationFactory(
            agent=agent,
            kind=RecommendationKind.OUTPUT_CAP,
            title="planner: cap max_tokens at 800",
            estimated_monthly_saving_usd=Decimal("30"),
            priority_score=Decimal("30"),
            status=RecommendationStatus.IMPLEMENTED,
            implemented_at=NOW,
            realized_monthly_saving_usd=Decimal("27.5"),
        ),
        "rejected": RecommendationFactory(
            agent=agent,
            kind=RecommendationKind.RESPONSE_CACHE,
            title="planner: cache responses",
            priority_score=Decimal("500"),
            status=RecommendationStatus.REJECTED,
            status_reason="Answers must be fresh.",
        ),
        "globex": RecommendationFactory(title="globex: gpt-4o → gpt-4o-mini"),
    }


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="rec-(\d+)">', html)


def pks(recs: dict, *names: str) -> list[str]:
    return [str(recs[name].pk) for name in names]


def test_the_page_is_for_staff_only(client, recs):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/reports/recommendations/"


def test_open_and_accepted_opportunities_highest_priority_first(staff, recs):
    page = staff.get(f"{URL}?organization=acme")

    assert page.status_code == 200
    html = page.content.decode()
    assert row_ids(html) == pks(recs, "planner", "writer")
    planner = html[html.index(f'id="rec-{recs["planner"].pk}"') : html.index(f'id="rec-{recs["writer"].pk}"')]
    assert "<strong>planner: gpt-4o → gpt-4o-mini</strong>" in planner
    assert '<td class="num">$120.00</td>' in planner
    assert "<dt>requests</dt><dd>1000</dd>" in planner
    assert "<dt>current cost usd</dt><dd>12.5</dd>" in planner
    assert "<dt>current</dt><dd>input: 2.5, model: gpt-4o</dd>" in planner  # (jsonb orders keys)
    assert "Ledger rows (1000 requests, $12.50)" in planner
    assert "High" in planner and "Open" in planner
    # The total of what is listed: $120 + $200.
    assert '<div class="value">$320.00</div>' in html
    assert "globex: gpt-4o" not in html


def test_the_ledger_link_lists_exactly_the_rows_behind_the_recommendation(staff, recs, agent, project):
    rec = recs["planner"]
    matching = [ledger_row(agent, cost="0.01", occurred_at=IN_WINDOW + dt.timedelta(minutes=m)) for m in (1, 2)]
    others = [
        ledger_row(AgentFactory(project=project, name="coder"), cost="0.01", occurred_at=IN_WINDOW),
        ledger_row(agent, cost="0.01", model="gpt-4o-mini", occurred_at=IN_WINDOW),
        ledger_row(agent, cost="0.01", occurred_at=NOW - dt.timedelta(days=31)),
        ledger_row(agent, cost="0.01", occurred_at=NOW),  # the window is [start, end)
    ]
    html = staff.get(URL).content.decode()
    links = re.findall(r'<a href="([^"]+)">Ledger rows', html)
    link = html_lib.unescape(links[0])

    ledger = staff.get(link)

    assert link == ledger_rows_url(rec)
    assert ledger.status_code == 200
    listed = ledger.content.decode()
    for row in matching:
        assert row.request_id in listed
    for row in others:
        assert row.request_id not in listed
    assert ledger.context["cl"].result_count == 2


def test_other_statuses_on_request(staff, recs):
    implemented = staff.get(f"{URL}?status=implemented").content.decode()
    rejected = staff.get(f"{URL}?status=rejected").content.decode()
    expired = staff.get(f"{URL}?status=expired").content.decode()

    assert row_ids(implemented) == pks(recs, "done")
    assert '<td class="num">$27.50</td>' in implemented
    assert row_ids(rejected) == pks(recs, "rejected")
    assert "Answers must be fresh." in rejected
    assert row_ids(expired) == []
    assert "No opportunities with this status." in expired


def test_sorting(staff, recs):
    def order(query: str) -> list[str]:
        return row_ids(staff.get(f"{URL}?{query}").content.decode())

    assert order("sort=saving") == pks(recs, "writer", "planner")
    assert order("sort=saving&dir=asc") == pks(recs, "planner", "writer")
    assert order("sort=priority&dir=asc") == pks(recs, "writer", "planner")
    assert order("sort=kind") == pks(recs, "planner", "writer")  # cheaper_model > batch_api
    assert order("sort=nonsense") == pks(recs, "planner", "writer")


def test_csv_export(staff, recs):
    response = staff.get(f"{URL}?organization=acme&format=csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="recommendations-acme.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows == [
        [
            "id",
            "kind",
            "status",
            "scope",
            "title",
            "estimated_monthly_saving_usd",
            "confidence",
            "effort",
            "priority_score",
            "realized_monthly_saving_usd",
            "window_start",
            "window_end",
        ],
        [
            str(recs["planner"].pk),
            "cheaper_model",
            "open",
            "agent planner",
            "planner: gpt-4o → gpt-4o-mini",
            "120",
            "high",
            "low",
            "120",
            "",
            "2026-10-31T12:00:00+00:00",
            "2026-11-30T12:00:00+00:00",
        ],
        [
            str(recs["writer"].pk),
            "batch_api",
            "accepted",
            "agent writer",
            "writer: use the batch API",
            "200",
            "medium",
            "medium",
            "60",
            "",
            "2026-10-31T12:00:00+00:00",
            "2026-11-30T12:00:00+00:00",
        ],
    ]
    implemented = list(csv.reader(io.StringIO(staff.get(f"{URL}?status=implemented&format=csv").content.decode())))
    assert [(row[0], row[9]) for row in implemented[1:]] == [(str(recs["done"].pk), "27.5")]


def test_an_organization_without_recommendations_says_so(staff, org):
    page = staff.get(URL)

    assert page.status_code == 200
    html = page.content.decode()
    assert "Estimated from the last 30 days of the ledger" in html
    assert "No opportunities. Recommendations are generated nightly" in html
    assert '<div class="value">$0.00</div>' in html


def test_another_organization_by_slug(staff, recs):
    globex = staff.get(f"{URL}?organization={recs['globex'].organization.slug}").content.decode()

    assert row_ids(globex) == [str(recs["globex"].pk)]
    assert "globex: gpt-4o → gpt-4o-mini" in globex
