"""``manage.py seed_demo`` on top of ``manage.py sync_prices``: realistic, costed like real traffic,
and a pure replay when run again."""

import re
from datetime import datetime, timedelta
from io import StringIO
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.db.models import Count, Max, Q, Sum
from django.test import RequestFactory
from django.utils import timezone

from costs.api.authentication import ApiKeyAuthentication
from costs.management.commands.seed_demo import PRICED_MODELS, RECORDS_PER_DAY, UNPRICED_MODELS, demo_usage
from costs.models import Agent, ApiKey, CostSource, Organization, Project, Sprint, UsageRecord
from pricing.calculator import Rates, Usage, cost_of, quantize_usd

pytestmark = pytest.mark.django_db

DAYS = 3


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", "--days", str(DAYS), "--base-url", "http://127.0.0.1:8123", stdout=out, stderr=StringIO())
    return out.getvalue()


def ledger_totals() -> dict:
    return UsageRecord.objects.aggregate(rows=Count("id"), cost=Sum("cost_usd"), last=Max("id"))


@pytest.fixture
def seeded():
    call_command("sync_prices", stdout=StringIO(), stderr=StringIO())
    started = timezone.now()
    output = seed()
    return started, output


def test_demo_hierarchy(seeded):
    organization = Organization.objects.get(slug="acme")
    assert (organization.name, organization.timezone) == ("Acme AI", "Europe/Berlin")
    projects = Project.objects.filter(organization=organization)
    assert sorted(projects.values_list("slug", flat=True)) == [
        "code-review",
        "data-pipeline",
        "research",
        "support-bot",
    ]
    for project in projects:
        assert 3 <= project.agents.count() <= 4
        sprints = list(project.sprints.order_by("start_date"))
        assert len(sprints) >= 3
        assert all((s.end_date - s.start_date).days == 13 for s in sprints)
        assert all(a.end_date < b.start_date for a, b in pairwise(sprints))
        today = timezone.now().astimezone(organization.tzinfo).date()
        assert sprints[0].start_date <= today - timedelta(days=40) and sprints[-1].end_date >= today


def test_demo_usage_is_realistic_and_costed_by_the_catalog(seeded):
    started, _ = seeded
    rows = UsageRecord.objects.filter(organization__slug="acme")

    assert rows.count() == DAYS * RECORDS_PER_DAY
    assert set(rows.values_list("request_id", flat=True)) == {
        f"demo-{n:06d}" for n in range(1, DAYS * RECORDS_PER_DAY + 1)
    }
    assert not rows.filter(occurred_at__gt=timezone.now()).exists()
    assert not rows.filter(occurred_at__lt=started - timedelta(days=DAYS)).exists()
    assert not rows.filter(sprint__isnull=True).exists()
    # Every model name used is a real one the catalog prices, except the deliberately unpriced ones.
    assert set(rows.values_list("model", flat=True)) == set(PRICED_MODELS) | set(UNPRICED_MODELS)
    assert len(PRICED_MODELS) >= 12
    assert set(rows.unpriced().values_list("model", flat=True)) == set(UNPRICED_MODELS)
    assert not rows.unpriced().filter(cost_usd__isnull=False).exists()
    priced = rows.exclude(cost_source=CostSource.UNPRICED)
    assert set(priced.values_list("cost_source", flat=True)) == {CostSource.COMPUTED}
    assert not priced.filter(Q(price__isnull=True) | Q(cost_usd__isnull=True)).exists()
    assert set(priced.values_list("model", flat=True)) == set(PRICED_MODELS)
    assert priced.aggregate(total=Sum("cost_usd"))["total"] > 1
    # The token kinds the calculator distinguishes all occur.
    assert rows.filter(cached_tokens__gt=0).exists()
    assert rows.filter(cache_creation_tokens__gt=0, model__startswith="claude").exists()
    assert rows.filter(reasoning_tokens__gt=0, model="o3-mini").exists()
    assert rows.filter(operation="embedding", completion_tokens=0, model="text-embedding-3-small").exists()
    assert rows.filter(is_batch=True).exists()
    errors = rows.filter(status="error").count()
    assert 0 < errors < rows.count() * 0.05
    # Costs are the catalog's, exactly as for real traffic.
    for row in priced.select_related("price").order_by("request_id")[:: DAYS * 20]:
        expected = cost_of(
            Rates.from_price(row.price),
            Usage(
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                cached_tokens=row.cached_tokens,
                cache_creation_tokens=row.cache_creation_tokens,
                reasoning_tokens=row.reasoning_tokens,
                batch=row.is_batch,
            ),
        )
        assert row.cost_usd == quantize_usd(expected.total_usd)


def test_generated_usage_is_deterministic_with_a_daily_rhythm():
    tz = ZoneInfo("Europe/Berlin")
    now = timezone.now()
    records = demo_usage(days=28, now=now, tz=tz)
    local = [datetime.fromisoformat(r["occurred_at"]).astimezone(tz) for r in records]

    assert demo_usage(days=28, now=now, tz=tz) == records

    weekday = sum(1 for t in local if t.weekday() < 5) / 20
    weekend = sum(1 for t in local if t.weekday() >= 5) / 8
    office = sum(1 for t in local if 9 <= t.hour < 18) / 9
    night = sum(1 for t in local if t.hour < 6) / 6
    assert weekday > 1.5 * weekend
    assert office > 2 * night
    assert [r["request_id"] for r in records] == [f"demo-{n:06d}" for n in range(1, 28 * RECORDS_PER_DAY + 1)]


def test_second_run_is_a_pure_replay(seeded):
    before = ledger_totals()
    hierarchy = (Project.objects.count(), Sprint.objects.count(), Agent.objects.count())

    output = seed()

    assert ledger_totals() == before
    assert (Project.objects.count(), Sprint.objects.count(), Agent.objects.count()) == hierarchy
    assert f"0 written, {DAYS * RECORDS_PER_DAY:,} already there" in output
    # A fresh key on each run, both usable.
    assert ApiKey.objects.filter(organization__slug="acme", revoked_at__isnull=True).count() == 2


def test_prints_a_working_login_key_and_curl_example(seeded):
    _, output = seeded

    assert "Admin:    http://127.0.0.1:8123/admin/" in output
    assert "Reports:  http://127.0.0.1:8123/reports/   API docs: http://127.0.0.1:8123/api/v1/docs/" in output
    assert "Login:    admin / spendguard-demo" in output
    user = authenticate(username="admin", password="spendguard-demo")
    assert user is not None and user.is_superuser and user.is_staff
    secret = re.search(r"API key:\s+(sg_\S+)", output).group(1)
    request = RequestFactory().post("/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    _, api_key = ApiKeyAuthentication().authenticate(request)
    assert (api_key.organization.slug, api_key.scope) == ("acme", "organization")
    assert "curl -s http://127.0.0.1:8123/api/v1/usage/" in output
    assert f'-H "Authorization: Bearer {secret}"' in output


def test_rerun_resets_the_admin_password(seeded):
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("changed")
    admin.save()

    seed()

    assert authenticate(username="admin", password="spendguard-demo") is not None


def test_refuses_to_seed_without_prices(db):
    with pytest.raises(CommandError, match=re.escape("run `manage.py sync_prices` first")):
        seed()

    assert not UsageRecord.objects.exists()
