"""prices_sync / manage.py sync_prices: effective-dated rows from litellm's model map."""

import datetime as dt
import types
from decimal import Decimal as D
from io import StringIO

import pytest
from django.core.management import call_command

from pricing.calculator import Rates
from pricing.model_map import price_fields
from pricing.models import ModelPrice, PriceSource
from pricing.selectors import price_resolve
from pricing.services import INITIAL_EFFECTIVE_FROM, load_litellm_model_map, price_set_manual, prices_sync
from tests.concurrency import run_together

pytestmark = pytest.mark.django_db

T1 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.UTC)


def small_map(**changes) -> dict:
    model_map = {
        "gpt-4o": {
            "litellm_provider": "openai",
            "mode": "chat",
            "input_cost_per_token": 2.5e-06,
            "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1.25e-06,
            "input_cost_per_token_batches": 1.25e-06,
            "output_cost_per_token_batches": 5e-06,
            "max_input_tokens": 128000,
            "max_output_tokens": 16384,
            "supports_vision": True,
        },
        "gemini/gemini-2.5-pro": {
            "litellm_provider": "gemini",
            "mode": "chat",
            "input_cost_per_token": 1.25e-06,
            "input_cost_per_token_above_200k_tokens": 2.5e-06,
            "output_cost_per_token": 1e-05,
            "output_cost_per_token_above_200k_tokens": 1.5e-05,
        },
        "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04},
        "sample_spec": {"litellm_provider": "one of ...", "input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
    }
    for model, entry in changes.items():
        if entry is None:
            model_map.pop(model)
        else:
            model_map[model] = {**model_map.get(model, {}), **entry}
    return model_map


def current(model: str) -> ModelPrice:
    return ModelPrice.objects.get(model=model, source=PriceSource.LITELLM, effective_to__isnull=True)


def test_first_sync_creates_rows_effective_from_the_early_date() -> None:
    report = prices_sync(now=T1, model_map=small_map())

    assert (report.created, report.changed, report.unchanged, report.skipped) == (2, 0, 0, 2)
    gpt = current("gpt-4o")
    assert (gpt.provider, gpt.mode, gpt.source, gpt.effective_from) == (
        "openai",
        "chat",
        "litellm",
        INITIAL_EFFECTIVE_FROM,
    )
    assert (gpt.input_usd_per_mtok, gpt.output_usd_per_mtok, gpt.cache_read_usd_per_mtok) == (
        D("2.5"),
        D(10),
        D("1.25"),
    )
    assert (gpt.batch_input_usd_per_mtok, gpt.batch_output_usd_per_mtok) == (D("1.25"), D(5))
    assert (gpt.max_input_tokens, gpt.max_output_tokens, gpt.capabilities) == (128000, 16384, {"supports_vision": True})
    assert current("gemini/gemini-2.5-pro").tiers == [
        {"above_tokens": 200000, "input": "2.5", "output": "15", "cache_read": None, "cache_write": None}
    ]
    assert not ModelPrice.objects.filter(model__in=["dall-e-3", "sample_spec"]).exists()


def test_second_run_changes_nothing() -> None:
    prices_sync(now=T1, model_map=small_map())
    before = list(ModelPrice.objects.order_by("pk").values())

    report = prices_sync(now=T2, model_map=small_map())

    assert (report.created, report.changed, report.unchanged, report.changed_models) == (0, 0, 2, [])
    assert list(ModelPrice.objects.order_by("pk").values()) == before


def test_a_changed_price_closes_the_old_version_and_opens_one_from_now() -> None:
    prices_sync(now=T1, model_map=small_map())
    old = current("gpt-4o")

    report = prices_sync(now=T2, model_map=small_map(**{"gpt-4o": {"output_cost_per_token": 1.2e-05}}))

    assert (report.created, report.changed, report.unchanged, report.changed_models) == (0, 1, 1, ["gpt-4o"])
    old.refresh_from_db()
    new = current("gpt-4o")
    assert (old.output_usd_per_mtok, old.effective_from, old.effective_to) == (D(10), INITIAL_EFFECTIVE_FROM, T2)
    assert (new.output_usd_per_mtok, new.effective_from, new.effective_to) == (D(12), T2, None)
    # Effective dating: the old price still prices old usage, the new one new usage.
    assert price_resolve(model="gpt-4o", at=T1) == old
    assert price_resolve(model="gpt-4o", at=T2) == new
    assert ModelPrice.objects.filter(model="gemini/gemini-2.5-pro").count() == 1


def test_a_changed_tier_is_a_price_change() -> None:
    prices_sync(now=T1, model_map=small_map())

    report = prices_sync(
        now=T2, model_map=small_map(**{"gemini/gemini-2.5-pro": {"input_cost_per_token_above_200k_tokens": 3e-06}})
    )

    assert report.changed_models == ["gemini/gemini-2.5-pro"]
    assert current("gemini/gemini-2.5-pro").tiers[0]["input"] == "3"


def test_models_new_to_the_map_are_effective_from_the_early_date_and_removed_ones_stay() -> None:
    prices_sync(now=T1, model_map=small_map())

    report = prices_sync(
        now=T2,
        model_map=small_map(
            **{"gemini/gemini-2.5-pro": None, "new-model": {"litellm_provider": "x", "input_cost_per_token": 1e-06}}
        ),
    )

    assert (report.created, report.changed, report.unchanged) == (1, 0, 1)
    assert current("new-model").effective_from == INITIAL_EFFECTIVE_FROM
    assert current("gemini/gemini-2.5-pro").effective_to is None


def test_descriptive_changes_refresh_the_current_row_in_place() -> None:
    prices_sync(now=T1, model_map=small_map())
    row = current("gpt-4o")

    report = prices_sync(now=T2, model_map=small_map(**{"gpt-4o": {"max_input_tokens": 200000}}))

    assert (report.changed, report.unchanged, report.metadata_updated) == (0, 2, 1)
    assert ModelPrice.objects.filter(model="gpt-4o").count() == 1
    row.refresh_from_db()
    assert row.max_input_tokens == 200000


def test_manual_prices_are_never_touched_and_win_over_synced_ones() -> None:
    manual = price_set_manual(model="gpt-4o", input_usd_per_mtok=D("2"), output_usd_per_mtok=D("8"), now=T1)

    prices_sync(now=T1, model_map=small_map())
    prices_sync(now=T2, model_map=small_map(**{"gpt-4o": {"input_cost_per_token": 3e-06}}))

    manual.refresh_from_db()
    assert (manual.input_usd_per_mtok, manual.effective_to) == (D(2), None)
    assert price_resolve(model="gpt-4o", at=T2) == manual
    assert price_resolve(model="openai/gpt-4o", at=T2) == manual  # provider prefix stripped
    assert price_resolve(model="gpt-4o", at=T1 - dt.timedelta(days=1)) == ModelPrice.objects.get(
        model="gpt-4o", source=PriceSource.LITELLM, effective_to=T2
    )


def test_sync_prices_command_loads_the_whole_bundled_map_exactly_and_twice_is_a_no_op() -> None:
    out = StringIO()
    call_command("sync_prices", stdout=out)

    model_map = load_litellm_model_map()
    expected = {key: f for key, entry in model_map.items() if (f := price_fields(key, entry)) is not None}
    assert len(expected) > 3000
    assert (
        f"{len(expected):,} new, 0 changed, 0 unchanged, {len(model_map) - len(expected):,} skipped" in out.getvalue()
    )
    rows = {row.model: row for row in ModelPrice.objects.filter(source=PriceSource.LITELLM)}
    assert rows.keys() == expected.keys()
    for model, fields in expected.items():  # the stored rates are exactly the converted ones
        assert Rates.from_price(rows[model]) == Rates.from_price(types.SimpleNamespace(**fields)), model
        assert (rows[model].provider, rows[model].mode) == (fields["provider"], fields["mode"])

    again = StringIO()
    call_command("sync_prices", stdout=again)
    assert f"0 new, 0 changed, {len(expected):,} unchanged" in again.getvalue()
    assert ModelPrice.objects.count() == len(expected)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_syncs_open_one_version_per_model() -> None:
    model_map = load_litellm_model_map()
    reports = run_together([lambda: prices_sync(now=T1, model_map=model_map)] * 2)
    created = sorted(report.created for report in reports)
    assert created[0] == 0 and created[1] == ModelPrice.objects.count() > 3000
    assert ModelPrice.objects.filter(effective_to__isnull=True).count() == ModelPrice.objects.count()
