"""costs.services.ingest.usage_ingest called directly (the seeder, imports and benchmarks do)."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection

from config.errors import NotAuthenticated, OutOfScope, ValidationFailed
from costs.models import UsageRecord
from costs.services import ingest
from costs.services.api_keys import api_key_create, api_key_revoke
from costs.services.ingest import IngestedRecord, usage_ingest
from tests.costs.test_ingest import make_price, usage

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def api_key(organization, project):
    key, _ = api_key_create(organization=organization, project=project, name="service")
    return key


@pytest.fixture
def gpt4o(db):
    return make_price("gpt-4o", input="2.5", output="10", cache_read="1.25")


@pytest.fixture(params=["values", "copy", "portable"])
def write_path(request, monkeypatch):
    """Run a test through each way rows are written: a multi-row INSERT (small PostgreSQL
    batches), COPY through a temporary table (large ones) and the portable bulk_create path."""
    if request.param == "copy":
        monkeypatch.setattr(ingest, "_VALUES_MAX_ROWS", 0)
    elif request.param == "portable":
        monkeypatch.setattr(connection, "vendor", "portable")
    if request.param != "portable" and connection.vendor != "postgresql":
        pytest.skip("PostgreSQL write path")
    return request.param


def test_returns_rows_in_input_order_with_replay_flags(api_key, gpt4o, write_path):
    usage_ingest(api_key=api_key, records=[usage(request_id="b", agent="planner")], now=NOW)

    result = usage_ingest(
        api_key=api_key,
        records=[
            usage(request_id="c", agent="planner", prompt_tokens=1000, cached_tokens=400),
            usage(request_id="b", agent="planner", prompt_tokens=5),
            usage(request_id="a", agent="new-one", model="unknown-model", provider_cost_usd="1.5"),
        ],
        now=NOW,
    )

    assert all(isinstance(item, IngestedRecord) for item in result)
    assert [(item.row.request_id, item.replayed) for item in result] == [("c", False), ("b", True), ("a", False)]
    stored = {row.request_id: row for row in UsageRecord.objects.select_related("agent")}
    for item in result:
        # The returned instances equal what the database holds, field by field.
        db_row = stored[item.row.request_id]
        assert item.row.pk == db_row.pk
        for field in UsageRecord._meta.concrete_fields:
            assert getattr(item.row, field.attname) == getattr(db_row, field.attname), field.name
        assert item.row.agent.name == db_row.agent.name
        assert item.row._state.adding is False
    assert (result[0].row.cost_usd, result[0].row.cached_input_cost_usd) == (Decimal("0.0021"), Decimal("0.0005"))
    assert result[1].row.prompt_tokens == 100  # the original
    assert (result[2].row.cost_source, result[2].row.cost_usd) == ("provided", Decimal("1.5"))


def test_returned_rows_are_append_only_instances(api_key, gpt4o, write_path):
    [item] = usage_ingest(api_key=api_key, records=[usage(agent="planner")], now=NOW)

    with pytest.raises(TypeError, match="append-only"):
        item.row.save()


def test_occurred_at_defaults_to_now_and_future_skew_is_relative_to_now(api_key):
    [item] = usage_ingest(api_key=api_key, records=[usage(agent="planner", occurred_at=None)], now=NOW)
    assert item.row.occurred_at == NOW

    with pytest.raises(ValidationFailed) as excinfo:
        usage_ingest(
            api_key=api_key,
            records=[usage(request_id="x", agent="planner", occurred_at="2026-11-02T12:05:01Z")],
            now=NOW,
        )
    assert excinfo.value.fields == {
        "records": {"0": {"occurred_at": ["May not be more than 300 seconds in the future."]}}
    }


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({1: "a"}, "Tag keys must be strings."),
        ({"x": float("nan")}, "Tag 'x': numbers must be finite."),
        ({"x": float("inf")}, "Tag 'x': numbers must be finite."),
    ],
)
def test_values_json_cannot_carry_are_refused_too(api_key, tags, message):
    with pytest.raises(ValidationFailed) as excinfo:
        usage_ingest(api_key=api_key, records=[usage(agent="planner", tags=tags)], now=NOW)

    assert excinfo.value.fields == {"records": {"0": {"tags": [message]}}}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5])
def test_provider_cost_floats_must_be_finite_and_positive(api_key, value):
    with pytest.raises(ValidationFailed):
        usage_ingest(api_key=api_key, records=[usage(agent="planner", provider_cost_usd=value)], now=NOW)
    assert not UsageRecord.objects.exists()


@pytest.mark.parametrize("records", [None, {"request_id": "a"}, ()])
def test_records_must_be_a_list(api_key, records):
    with pytest.raises(ValidationFailed) as excinfo:
        usage_ingest(api_key=api_key, records=records, now=NOW)

    assert excinfo.value.fields == {"records": ["Expected a list of usage objects."]}


def test_a_cost_too_large_for_the_ledger_is_refused_not_a_server_error(api_key):
    make_price("absurd", input="100000000000", output="0")  # USD 1e11 per 1M tokens

    with pytest.raises(ValidationFailed) as excinfo:
        usage_ingest(
            api_key=api_key,
            records=[
                usage(request_id="ok", agent="planner"),
                usage(agent="planner", model="absurd", prompt_tokens=10**7),
            ],
            now=NOW,
        )

    assert excinfo.value.fields == {
        "records": {"1": {"prompt_tokens": ["The cost of this usage is too large to record."]}}
    }
    assert not UsageRecord.objects.exists()


def test_revoked_key_cannot_ingest(api_key):
    api_key_revoke(api_key=api_key)

    with pytest.raises(NotAuthenticated) as excinfo:
        usage_ingest(api_key=api_key, records=[usage(agent="planner")], now=NOW)

    assert excinfo.value.code == "api_key_revoked"
    assert not UsageRecord.objects.exists()


def test_out_of_scope_is_raised_before_validation_errors(api_key):
    with pytest.raises(OutOfScope) as excinfo:
        usage_ingest(
            api_key=api_key,
            records=[usage(agent="planner", prompt_tokens="bad"), usage(request_id="2", agent="x", project="other")],
            now=NOW,
        )

    assert excinfo.value.fields == {"records": {"1": {"project": ["This API key may only write to project 'search'."]}}}


def test_budgets_seam_gets_the_new_rows_inside_the_transaction(api_key, gpt4o, monkeypatch):
    usage_ingest(api_key=api_key, records=[usage(request_id="old", agent="planner")], now=NOW)
    calls = []

    def hook(rows):
        calls.append(([row.request_id for row in rows], connection.in_atomic_block, UsageRecord.objects.count()))

    monkeypatch.setattr(ingest, "_rows_written_hooks", [])
    ingest.register_rows_written_hook(hook)

    usage_ingest(
        api_key=api_key,
        records=[
            usage(request_id="n1", agent="planner"),
            usage(request_id="old", agent="planner"),
            usage(request_id="n2", agent="planner"),
        ],
        now=NOW,
    )
    usage_ingest(api_key=api_key, records=[usage(request_id="old", agent="planner")], now=NOW)

    # Once per batch, new rows only, in input order, rows already written, inside the transaction;
    # not at all for a batch of replays.
    assert calls == [(["n1", "n2"], True, 3)]


def test_a_failing_seam_rolls_the_whole_batch_back(api_key, gpt4o, monkeypatch):
    def hook(rows):
        raise RuntimeError("budget store unavailable")

    monkeypatch.setattr(ingest, "_rows_written_hooks", [])
    ingest.register_rows_written_hook(hook)

    with pytest.raises(RuntimeError):
        usage_ingest(api_key=api_key, records=[usage(agent="brand-new-agent")], now=NOW)

    assert not UsageRecord.objects.exists()
    assert not api_key.project.agents.filter(name="brand-new-agent").exists()


def _batch(size: int, prefix: str) -> list[dict]:
    return [
        usage(request_id=f"{prefix}-{i}", agent=f"agent-{i % 5}", model=["gpt-4o", "openai/gpt-4o", "other"][i % 3])
        for i in range(size)
    ]


@pytest.mark.postgres
def test_a_batch_costs_a_fixed_number_of_queries(api_key, gpt4o, django_assert_num_queries, monkeypatch):
    # Ingest's own queries; the budgets hook's are counted in tests/budgets/test_settlement.py.
    monkeypatch.setattr(ingest, "_rows_written_hooks", [])
    # Agents registered and every kind of lookup exercised once, so both batches take the same path.
    usage_ingest(api_key=api_key, records=_batch(5, "warm"), now=NOW)

    # savepoint; sprints + agents (one round trip); prices (aliases included); temp table, COPY,
    # INSERT ... ON CONFLICT, drop; release
    with django_assert_num_queries(8) as small:
        usage_ingest(api_key=api_key, records=_batch(100, "small"), now=NOW)
    with django_assert_num_queries(8):
        usage_ingest(api_key=api_key, records=_batch(1000, "large"), now=NOW)

    sql = [q["sql"] for q in small.captured_queries]
    assert any(s.startswith("CREATE TEMPORARY TABLE") for s in sql)
    assert any(s.startswith("INSERT INTO costs_usagerecord") and "ON CONFLICT" in s for s in sql)
    assert UsageRecord.objects.count() == 1105
