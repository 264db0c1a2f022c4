"""Manual prices: new versions, never edits; invalid input writes nothing."""

import datetime as dt
from decimal import Decimal as D

import pytest

from config.errors import ValidationFailed
from pricing.models import ModelPrice, PriceSource
from pricing.selectors import price_resolve
from pricing.services import price_override, price_retire_manual, price_set_manual

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def test_a_new_manual_version_closes_the_previous_one() -> None:
    first = price_set_manual(model="m", provider="p", input_usd_per_mtok=D(1), output_usd_per_mtok=D(2), now=T0)
    other_provider = price_set_manual(model="m", input_usd_per_mtok=D(5), output_usd_per_mtok=D(5), now=T0)

    second = price_set_manual(
        model="m", provider="p", input_usd_per_mtok=D(3), output_usd_per_mtok=D(4), note="new deal", now=T1
    )

    first.refresh_from_db()
    other_provider.refresh_from_db()
    assert (first.input_usd_per_mtok, first.effective_from, first.effective_to) == (D(1), T0, T1)
    assert (second.source, second.effective_from, second.effective_to, second.note) == ("manual", T1, None, "new deal")
    assert other_provider.effective_to is None
    assert price_resolve(model="m", provider="p", at=T0 + dt.timedelta(days=1)) == first
    assert price_resolve(model="m", provider="p", at=T1) == second


@pytest.mark.parametrize(
    ("values", "fields"),
    [
        ({"tiers": [{"above_tokens": "lots"}]}, {"tiers": ["Tier 0: above_tokens must be a non-negative integer."]}),
        (
            {"batch_input_usd_per_mtok": D(1)},
            {"batch_output_usd_per_mtok": ["Set batch input and batch output together, or neither."]},
        ),
        (
            {"cache_read_usd_per_mtok": D(-1)},
            {"cache_read_usd_per_mtok": ["Ensure this value is greater than or equal to 0."]},
        ),
    ],
)
def test_invalid_manual_prices_write_nothing(values, fields) -> None:
    first = price_set_manual(model="m", input_usd_per_mtok=D(1), output_usd_per_mtok=D(2), now=T0)

    with pytest.raises(ValidationFailed) as excinfo:
        price_set_manual(model="m", input_usd_per_mtok=D(1), output_usd_per_mtok=D(2), now=T1, **values)

    assert excinfo.value.fields == fields
    assert list(ModelPrice.objects.values_list("pk", "effective_to")) == [(first.pk, None)]


def test_a_version_must_start_after_the_current_one() -> None:
    first = price_set_manual(model="m", input_usd_per_mtok=D(1), output_usd_per_mtok=D(2), now=T1)

    with pytest.raises(ValidationFailed):
        price_set_manual(model="m", input_usd_per_mtok=D(3), output_usd_per_mtok=D(4), now=T0)

    assert list(ModelPrice.objects.values_list("pk", "effective_to")) == [(first.pk, None)]


def test_override_copies_and_retire_hands_back_to_the_synced_price() -> None:
    synced = ModelPrice.objects.create(
        model="m",
        provider="p",
        source=PriceSource.LITELLM,
        input_usd_per_mtok=D(1),
        output_usd_per_mtok=D(2),
        reasoning_usd_per_mtok=D(3),
        tiers=[{"above_tokens": 10, "input": "2"}],
        effective_from=T0,
    )

    manual = price_override(price=synced, now=T1)
    price_retire_manual(price=manual, now=T2)
    again = price_retire_manual(price=manual, now=T2 + dt.timedelta(days=1))

    assert (manual.source, manual.reasoning_usd_per_mtok, manual.tiers) == ("manual", D(3), synced.tiers)
    assert again.effective_to == T2  # idempotent
    assert price_resolve(model="m", at=T1) == manual
    assert price_resolve(model="m", at=T2) == synced
    with pytest.raises(ValidationFailed):
        price_retire_manual(price=synced, now=T2)
