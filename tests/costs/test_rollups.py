"""Daily rollups (ADR 0006): after every run, the buckets are exactly the ledger rows received before
the organization's watermark — compared whole, bucket by bucket, against a GROUP BY done here in
Python from the ledger rows (local day from ``occurred_at`` in the organization's zone)."""

import datetime as dt
import threading
import time
from collections import defaultdict
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from costs.models import ApiKey, DailyRollup, RollupState, UsageRecord
from costs.services.api_keys import api_key_create
from costs.services.ingest import usage_ingest
from costs.services.rollups import EPOCH, rollup_watermark, rollups_rebuild, rollups_refresh
from costs.tasks import refresh_rollups
from tests.concurrency import run_together
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

TOKENS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens", "reasoning_tokens")
SUMS = ("requests", "error_requests", "unpriced_requests", *TOKENS, "cost_usd")
KEY = ("day", "project", "sprint", "agent", "model", "provider", "operation")


@pytest.fixture(autouse=True)
def no_lag(settings):
    """Most tests roll up to "now": nothing else is ingesting, so every stamped row has committed."""
    settings.SPENDGUARD_ROLLUP_LAG_SECONDS = 0


@pytest.fixture(params=["postgresql", "portable"])
def write_path(request, monkeypatch):
    """Each test runs through the PostgreSQL INSERT ... SELECT and the portable (SQLite) path."""
    if request.param == "portable":
        monkeypatch.setattr(connection, "vendor", "portable")
    elif connection.vendor != "postgresql":
        pytest.skip("PostgreSQL write path")
    return request.param


def ingest(api_key, *records: dict) -> None:
    usage_ingest(api_key=api_key, records=[dict(r) for r in records])


_seq = iter(range(10**9))


def usage(occurred_at: dt.datetime, **fields) -> dict:
    """A usage object; a field given as None is left out (``provider_cost_usd=None``: unpriced)."""
    record = {
        "request_id": f"r-{next(_seq)}",
        "project": "search",
        "agent": "planner",
        "model": "gpt-4o",
        "provider": "openai",
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "provider_cost_usd": "0.002475",
        "occurred_at": occurred_at.isoformat(),
        **fields,
    }
    return {name: value for name, value in record.items() if value is not None}


def rollups(organization) -> list[dict]:
    rows = DailyRollup.objects.filter(organization=organization).values(
        "day", "project_id", "sprint_id", "agent_id", "model", "provider", "operation", *SUMS
    )
    return sorted(
        (
            {
                "day": r["day"],
                "project": r["project_id"],
                "sprint": r["sprint_id"],
                "agent": r["agent_id"],
                "model": r["model"],
                "provider": r["provider"],
                "operation": r["operation"],
                **{k: r[k] for k in SUMS},
            }
            for r in rows
        ),
        key=_order,
    )


def ledger_group_by(organization, *, received_before: dt.datetime) -> list[dict]:
    """The expected buckets, computed independently of the service: Python dates, Decimal sums."""
    tz = organization.tzinfo
    buckets: dict[tuple, dict] = defaultdict(lambda: dict.fromkeys(SUMS, 0) | {"cost_usd": Decimal(0)})
    for row in UsageRecord.objects.filter(organization=organization, received_at__lt=received_before):
        key = (
            row.occurred_at.astimezone(tz).date(),
            row.project_id,
            row.sprint_id,
            row.agent_id,
            row.model,
            row.provider,
            row.operation,
        )
        bucket = buckets[key]
        bucket["requests"] += 1
        bucket["error_requests"] += row.status == "error"
        bucket["unpriced_requests"] += row.cost_source == "unpriced"
        for kind in TOKENS:
            bucket[kind] += getattr(row, kind)
        bucket["cost_usd"] += row.cost_usd or 0
    return sorted((dict(zip(KEY, key, strict=True)) | sums for key, sums in buckets.items()), key=_order)


def _order(bucket: dict) -> tuple:
    return tuple(str(bucket[k]) for k in KEY)


def assert_invariant(organization) -> None:
    watermark = rollup_watermark(organization=organization)
    assert rollups(organization) == ledger_group_by(organization, received_before=watermark)


@pytest.fixture
def org_key(organization, project):
    key, _ = api_key_create(organization=organization, name="rollups")
    return key


# --- what a bucket holds ----------------------------------------------------------------------


@pytest.mark.django_db
def test_buckets_are_the_group_by_of_the_ledger(organization, project, org_key, write_path):
    sprint = SprintFactory(project=project, slug="s1", start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 14))
    other = ProjectFactory(organization=organization, slug="ads")
    nov2, nov3 = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC), dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC)
    ingest(
        org_key,
        usage(nov2, cached_tokens=200, cache_creation_tokens=100),
        usage(nov2 + dt.timedelta(hours=5), completion_tokens=300, reasoning_tokens=50, provider_cost_usd="0.01"),
        usage(nov2, status="error", provider_cost_usd="0.000000000001"),
        usage(nov2, model="mystery-model", provider=""),  # no catalog price: the provider's cost
        usage(nov2, model="mystery-model", provider="", status="error"),
        usage(nov2, operation="embedding", prompt_tokens=10, completion_tokens=0, provider_cost_usd="0.0000001"),
        usage(nov3, agent="critic"),
        usage(nov2, project="ads", provider_cost_usd="1.5"),
        usage(dt.datetime(2026, 10, 30, 9, tzinfo=dt.UTC)),  # before the sprint: no sprint
    )
    for i in range(3):  # unpriced: no catalog price and no provider cost
        ingest(org_key, usage(nov2, model="mystery-model", provider="", provider_cost_usd=None, request_id=f"u{i}"))

    report = rollups_refresh()

    planner = project.agents.get(name="planner")
    critic = project.agents.get(name="critic")
    ads_planner = other.agents.get(name="planner")
    bucket = {"sprint": sprint.pk, "provider": "openai", "operation": "chat", "model": "gpt-4o"}
    zero = dict.fromkeys(SUMS, 0)
    expected = [
        {**bucket, "day": dt.date(2026, 10, 30), "sprint": None, "project": project.pk, "agent": planner.pk}
        | zero
        | {"requests": 1, "prompt_tokens": 1000, "completion_tokens": 100, "cost_usd": Decimal("0.002475")},
        {**bucket, "day": dt.date(2026, 11, 2), "sprint": None, "project": other.pk, "agent": ads_planner.pk}
        | zero
        | {"requests": 1, "prompt_tokens": 1000, "completion_tokens": 100, "cost_usd": Decimal("1.5")},
        {**bucket, "day": dt.date(2026, 11, 2), "project": project.pk, "agent": planner.pk, "operation": "chat"}
        | {
            "requests": 3,
            "error_requests": 1,
            "unpriced_requests": 0,
            "prompt_tokens": 3000,
            "completion_tokens": 500,
            "cached_tokens": 200,
            "cache_creation_tokens": 100,
            "reasoning_tokens": 50,
            "cost_usd": Decimal("0.012475000001"),
        },
        {**bucket, "day": dt.date(2026, 11, 2), "project": project.pk, "agent": planner.pk, "operation": "embedding"}
        | zero
        | {"requests": 1, "prompt_tokens": 10, "cost_usd": Decimal("0.0000001")},
        {**bucket, "day": dt.date(2026, 11, 2), "project": project.pk, "agent": planner.pk}
        | {"model": "mystery-model", "provider": ""}
        | {
            "requests": 5,
            "error_requests": 1,
            "unpriced_requests": 3,
            "prompt_tokens": 5000,
            "completion_tokens": 500,
            "cached_tokens": 0,
            "cache_creation_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": Decimal("0.00495"),
        },
        {**bucket, "day": dt.date(2026, 11, 3), "project": project.pk, "agent": critic.pk}
        | zero
        | {"requests": 1, "prompt_tokens": 1000, "completion_tokens": 100, "cost_usd": Decimal("0.002475")},
    ]
    assert rollups(organization) == sorted(expected, key=_order)
    assert_invariant(organization)
    [done] = report.organizations
    assert (done.days, done.buckets) == ([dt.date(2026, 10, 30), dt.date(2026, 11, 2), dt.date(2026, 11, 3)], 6)


@pytest.mark.django_db
def test_an_unpriced_only_bucket_costs_zero_and_counts_its_rows(organization, org_key, write_path):
    ingest(org_key, usage(dt.datetime(2026, 11, 2, tzinfo=dt.UTC), model="mystery", provider_cost_usd=None))

    rollups_refresh()

    [bucket] = DailyRollup.objects.filter(organization=organization)
    assert (bucket.requests, bucket.unpriced_requests, bucket.cost_usd) == (1, 1, Decimal(0))


@pytest.mark.django_db
def test_the_organization_time_zone_decides_the_day(project, write_path):
    berlin = OrganizationFactory(slug="berlin", timezone="Europe/Berlin")
    tokyo = OrganizationFactory(slug="tokyo", timezone="Asia/Tokyo")
    utc_org = project.organization
    late_evening = dt.datetime(2026, 11, 2, 23, 30, tzinfo=dt.UTC)
    for org in (berlin, tokyo, utc_org):
        if org != utc_org:
            ProjectFactory(organization=org, slug="search")
        key, _ = api_key_create(organization=org, name="tz")
        # 14:59 UTC is 23:59 in Tokyo (Nov 2), 15:00 UTC is Nov 3 there.
        ingest(
            key,
            usage(late_evening),
            usage(dt.datetime(2026, 11, 2, 14, 59, tzinfo=dt.UTC)),
            usage(dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)),
        )

    rollups_refresh()

    def days(org):
        return sorted(DailyRollup.objects.filter(organization=org).values_list("day", "requests"))

    assert days(utc_org) == [(dt.date(2026, 11, 2), 3)]
    assert days(berlin) == [(dt.date(2026, 11, 2), 2), (dt.date(2026, 11, 3), 1)]
    assert days(tokyo) == [(dt.date(2026, 11, 2), 1), (dt.date(2026, 11, 3), 2)]
    for org in (berlin, tokyo, utc_org):
        assert_invariant(org)


# --- incremental, idempotent, the tail ----------------------------------------------------------


@pytest.mark.django_db
def test_refreshing_twice_changes_nothing(organization, org_key, write_path):
    ingest(org_key, *[usage(dt.datetime(2026, 11, d, 8, tzinfo=dt.UTC)) for d in (1, 2, 2, 3)])
    rollups_refresh()
    first = list(DailyRollup.objects.filter(organization=organization).order_by("pk").values())

    again = rollups_refresh()

    assert list(DailyRollup.objects.filter(organization=organization).order_by("pk").values()) == first
    assert (again.days, again.buckets) == (0, 0)
    assert_invariant(organization)


@pytest.mark.django_db
def test_a_late_row_for_an_old_day_is_rolled_by_the_next_refresh(organization, org_key, write_path):
    old_day = dt.datetime(2026, 10, 1, 12, tzinfo=dt.UTC)
    ingest(org_key, usage(old_day), usage(dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)))
    rollups_refresh()
    before = rollups(organization)

    ingest(org_key, usage(old_day + dt.timedelta(hours=3), completion_tokens=7))
    report = rollups_refresh()

    [done] = report.organizations
    assert done.days == [dt.date(2026, 10, 1)]  # only the touched day is recomputed
    after = rollups(organization)
    assert after[1] == before[1]
    assert after[0] == before[0] | {
        "requests": 2,
        "prompt_tokens": 2000,
        "completion_tokens": 107,
        "cost_usd": Decimal("0.004950"),
    }
    assert_invariant(organization)


@pytest.mark.django_db
def test_rows_received_after_the_watermark_are_the_tail_not_the_rollups(organization, org_key, write_path):
    day = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)
    ingest(org_key, usage(day))
    watermark = timezone.now()
    ingest(org_key, usage(day, completion_tokens=1), usage(day + dt.timedelta(days=1)))

    rollups_refresh(until=watermark)

    assert rollup_watermark(organization=organization) == watermark
    [bucket] = rollups(organization)
    assert (bucket["day"], bucket["requests"], bucket["completion_tokens"]) == (dt.date(2026, 11, 2), 1, 100)
    tail = UsageRecord.objects.filter(organization=organization, received_at__gte=watermark)
    assert sorted(tail.values_list("completion_tokens", flat=True)) == [1, 100]
    assert_invariant(organization)

    rollups_refresh()

    assert [(b["day"], b["requests"]) for b in rollups(organization)] == [
        (dt.date(2026, 11, 2), 2),
        (dt.date(2026, 11, 3), 1),
    ]
    assert_invariant(organization)


@pytest.mark.django_db
def test_the_watermark_never_moves_backwards_and_until_may_not_outrun_the_lag(organization, org_key, settings):
    ingest(org_key, usage(dt.datetime(2026, 11, 2, tzinfo=dt.UTC)))
    assert rollup_watermark(organization=organization) == EPOCH
    now = timezone.now()
    rollups_refresh(until=now)
    before = rollups(organization)

    report = rollups_refresh(until=now - dt.timedelta(hours=1))

    assert rollup_watermark(organization=organization) == now
    assert report.organizations[0].rolled_until == now and report.days == 0
    assert rollups(organization) == before

    settings.SPENDGUARD_ROLLUP_LAG_SECONDS = 60
    with pytest.raises(ValueError, match="SPENDGUARD_ROLLUP_LAG_SECONDS"):
        rollups_refresh(until=timezone.now() - dt.timedelta(seconds=30))
    # The default until trails the clock by the lag: a row received just now is still tail.
    ingest(org_key, usage(dt.datetime(2026, 11, 2, tzinfo=dt.UTC)))
    report = rollups_refresh()
    assert report.until < timezone.now() - dt.timedelta(seconds=59)
    assert rollup_watermark(organization=organization) == now  # not moved back to now - 60 s
    assert rollups(organization) == before


@pytest.mark.django_db
def test_one_organization_only(organization, org_key):
    other = OrganizationFactory(slug="other")
    ProjectFactory(organization=other, slug="search")
    other_key, _ = api_key_create(organization=other, name="o")
    ingest(org_key, usage(dt.datetime(2026, 11, 2, tzinfo=dt.UTC)))
    ingest(other_key, usage(dt.datetime(2026, 11, 2, tzinfo=dt.UTC)))

    report = rollups_refresh(organization_id=other.pk)

    assert [o.organization_id for o in report.organizations] == [other.pk]
    assert DailyRollup.objects.filter(organization=organization).count() == 0
    assert DailyRollup.objects.filter(organization=other).count() == 1
    assert not RollupState.objects.filter(organization=organization).exists()


# --- backfill -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rebuild_equals_the_incremental_result(organization, project, org_key, write_path):
    SprintFactory(project=project, start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 3))
    AgentFactory(project=project, name="critic")
    start = dt.datetime(2026, 10, 30, 0, 30, tzinfo=dt.UTC)
    for step in range(4):  # four refreshes, each with rows for old and new days
        ingest(
            org_key,
            *[
                usage(
                    start + dt.timedelta(hours=7 * i + step),
                    agent=("planner", "critic")[i % 2],
                    model=("gpt-4o", "claude-3-5-haiku", "mystery")[i % 3],
                    provider_cost_usd=None if i % 3 == 2 else f"0.00{i + 1}",
                    status="error" if i % 5 == 0 else "success",
                )
                for i in range(20)
            ],
        )
        rollups_refresh()
    incremental = rollups(organization)
    # Damage every bucket, as a bug or a hand edit could; the rebuild restores them from the ledger.
    DailyRollup.objects.filter(organization=organization).update(requests=999, cost_usd=Decimal("1"))
    DailyRollup.objects.filter(organization=organization, day=dt.date(2026, 11, 1)).delete()

    done = rollups_rebuild(organization_id=organization.pk, start=dt.date(2026, 10, 29), end=dt.date(2026, 11, 7))

    assert rollups(organization) == incremental
    assert done.buckets == len(incremental)
    assert done.rolled_until == rollup_watermark(organization=organization)
    assert_invariant(organization)


@pytest.mark.django_db
def test_rebuild_counts_only_rows_below_the_watermark(organization, org_key):
    day = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    ingest(org_key, usage(day))
    rollups_refresh()
    ingest(org_key, usage(day))  # tail

    rollups_rebuild(organization_id=organization.pk, start=dt.date(2026, 11, 2), end=dt.date(2026, 11, 2))

    assert [b["requests"] for b in rollups(organization)] == [1]
    assert_invariant(organization)


@pytest.mark.django_db
def test_rebuild_after_a_time_zone_change_moves_rows_to_their_new_days(organization, org_key):
    ingest(org_key, usage(dt.datetime(2026, 11, 2, 23, 30, tzinfo=dt.UTC)))
    rollups_refresh()
    organization.timezone = "Europe/Berlin"
    organization.save()

    rollups_rebuild(organization_id=organization.pk, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 3))

    assert [b["day"] for b in rollups(organization)] == [dt.date(2026, 11, 3)]
    assert_invariant(organization)


# --- command and task ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_rollup_usage_command_refreshes_and_rebuilds(organization, org_key):
    ingest(org_key, usage(dt.datetime(2026, 11, 2, tzinfo=dt.UTC)), usage(dt.datetime(2026, 11, 3, tzinfo=dt.UTC)))
    out = StringIO()

    call_command("rollup_usage", stdout=out)
    call_command("rollup_usage", "--organization", "acme", "--since", "2026-11-02", "--until", "2026-11-02", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Rolled up to ")
    assert lines[0].endswith(": 1 organizations, 2 days recomputed, 2 buckets written.")
    assert lines[1].startswith("acme: rebuilt 1 days (2026-11-02 to 2026-11-02), 1 buckets written, from rows")
    assert_invariant(organization)
    with pytest.raises(CommandError, match="go together"):
        call_command("rollup_usage", "--since", "2026-11-02")
    with pytest.raises(CommandError, match="No organization"):
        call_command("rollup_usage", "--organization", "nope")


@pytest.mark.django_db
def test_refresh_rollups_task(organization, org_key):
    ingest(org_key, usage(dt.datetime(2026, 11, 2, tzinfo=dt.UTC)))

    result = refresh_rollups.delay().get()

    assert (result["organizations"], result["days"], result["buckets"], result["skipped"]) == (1, 1, 1, [])
    assert_invariant(organization)


# --- concurrency (real threads, real PostgreSQL) ------------------------------------------------


def _seed_many(org_key, *, rows: int) -> None:
    start = timezone.now() - dt.timedelta(days=80)  # 3,000 rows 37 minutes apart: 77 days, none in the future
    records = [
        usage(
            start + dt.timedelta(minutes=37 * i),
            agent=f"agent-{i % 7}",
            model=("gpt-4o", "claude-3-5-haiku", "mystery")[i % 3],
            provider_cost_usd=None if i % 3 == 2 else "0.000123",
        )
        for i in range(rows)
    ]
    for offset in range(0, rows, 1000):
        ingest(org_key, *records[offset : offset + 1000])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_end_with_exactly_the_ledger(organization, org_key):
    _seed_many(org_key, rows=3000)
    until = timezone.now()

    reports = run_together([lambda: rollups_refresh(until=until)] * 3)

    assert_invariant(organization)
    assert rollup_watermark(organization=organization) == until
    # One run did the work; the others skipped the organization it held or found nothing left.
    worked = [r for r in reports if r.days]
    assert len(worked) == 1
    assert worked[0].days == len({b["day"] for b in rollups(organization)})
    assert all(r.skipped == [organization.pk] or (r.days == 0 and not r.skipped) for r in reports if r not in worked)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_refreshes_racing_ingestion_keep_the_invariant_after_every_run(organization, org_key, settings):
    # The lag must outlast every ingest transaction (stamped at start, committed at end); these are
    # batches of 20 rows, far below a second even on a busy machine.
    settings.SPENDGUARD_ROLLUP_LAG_SECONDS = 2
    stop = threading.Event()
    day = dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC)

    def ingestion(side: str) -> int:
        api_key = ApiKey.objects.get(pk=org_key.pk)  # one instance per thread
        batches = 0
        while not stop.is_set():
            ingest(
                api_key,
                *[
                    usage(day - dt.timedelta(days=i % 3), agent=f"{side}-{i % 4}", request_id=f"{side}-{batches}-{i}")
                    for i in range(20)
                ],
            )
            batches += 1
        return batches

    def refresher() -> int:
        runs = 0
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:
                rollups_refresh()
                assert_invariant(organization)
                runs += 1
                time.sleep(0.1)
        finally:
            stop.set()  # a failed check must not leave the ingesting threads running
        return runs

    batches_a, batches_b, runs = run_together([lambda: ingestion("a"), lambda: ingestion("b"), refresher])

    assert batches_a > 0 and batches_b > 0 and runs > 3
    settings.SPENDGUARD_ROLLUP_LAG_SECONDS = 0  # ingestion is over: everything stamped has committed
    rollups_refresh()
    assert_invariant(organization)
    assert (
        sum(b["requests"] for b in rollups(organization)) == UsageRecord.objects.count() == 20 * (batches_a + batches_b)
    )
