"""The price catalog in the Django admin: manual prices are versioned, never edited in place."""

import datetime as dt
from decimal import Decimal as D

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pricing.models import ModelAlias, ModelPrice, PriceSource
from pricing.services import price_set_manual

pytestmark = pytest.mark.django_db

EARLY = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
CHANGELIST = reverse("admin:pricing_modelprice_changelist")


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", password="x" * 12))
    return client


@pytest.fixture
def synced() -> ModelPrice:
    return ModelPrice.objects.create(
        model="gpt-4o",
        provider="openai",
        mode="chat",
        source=PriceSource.LITELLM,
        input_usd_per_mtok=D("2.5"),
        output_usd_per_mtok=D("10"),
        cache_read_usd_per_mtok=D("1.25"),
        batch_input_usd_per_mtok=D("1.25"),
        batch_output_usd_per_mtok=D("5"),
        tiers=[{"above_tokens": 200000, "input": "5"}],
        capabilities={"supports_vision": True},
        effective_from=EARLY,
    )


def form_data(**overrides) -> dict:
    data = {
        "model": "my-model",
        "provider": "",
        "mode": "chat",
        "note": "",
        "input_usd_per_mtok": "3",
        "output_usd_per_mtok": "15",
        "cache_read_usd_per_mtok": "",
        "cache_write_usd_per_mtok": "",
        "reasoning_usd_per_mtok": "",
        "batch_input_usd_per_mtok": "",
        "batch_output_usd_per_mtok": "",
        "batch_cache_read_usd_per_mtok": "",
        "batch_cache_write_usd_per_mtok": "",
        "tiers": "[]",
        "initial-tiers": "[]",  # the admin renders a hidden initial for fields with a callable default
        "max_input_tokens": "",
        "max_output_tokens": "",
        "_save": "Save",
    }
    data.update(overrides)
    return data


def test_changelist_columns_search_and_filters(admin_client, synced) -> None:
    price_set_manual(model="claude-x", input_usd_per_mtok=D("3"), output_usd_per_mtok=D("15"))

    page = admin_client.get(CHANGELIST, {"q": "gpt", "source": "litellm", "current": "yes", "mode": "chat"})

    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [synced]
    html = page.content.decode()
    for text in ("Input / 1M", "Output / 1M", "Cache read / 1M", "Current?", "2.5", "1.25", "?model__exact=gpt-4o"):
        assert text in html
    closed = admin_client.get(CHANGELIST, {"current": "no"})
    assert list(closed.context["cl"].result_list) == []


def test_history_link_lists_every_version_of_the_model(admin_client, synced) -> None:
    first = price_set_manual(model="gpt-4o", input_usd_per_mtok=D("2"), output_usd_per_mtok=D("8"))
    second = price_set_manual(model="gpt-4o", input_usd_per_mtok=D("1"), output_usd_per_mtok=D("4"))
    ModelPrice.objects.create(model="other", input_usd_per_mtok=1, output_usd_per_mtok=1, effective_from=EARLY)

    page = admin_client.get(CHANGELIST, {"model__exact": "gpt-4o"})
    change = admin_client.get(reverse("admin:pricing_modelprice_change", args=[synced.pk]))

    assert set(page.context["cl"].result_list) == {synced, first, second}
    panel = change.content.decode()
    for price in (synced, first, second):
        assert reverse("admin:pricing_modelprice_change", args=[price.pk]) in panel


def test_adding_a_manual_price_goes_through_the_service(admin_client) -> None:
    before = timezone.now()
    response = admin_client.post(reverse("admin:pricing_modelprice_add"), form_data(cache_read_usd_per_mtok="0.3"))

    assert response.status_code == 302
    price = ModelPrice.objects.get()
    assert (price.model, price.source, price.effective_to) == ("my-model", PriceSource.MANUAL, None)
    assert (price.input_usd_per_mtok, price.output_usd_per_mtok, price.cache_read_usd_per_mtok) == (
        D(3),
        D(15),
        D("0.3"),
    )
    assert price.effective_from >= before


def test_saving_a_change_creates_a_new_version_and_closes_the_old_one(admin_client) -> None:
    old = price_set_manual(
        model="my-model", input_usd_per_mtok=D("3"), output_usd_per_mtok=D("15"), now=timezone.now() - dt.timedelta(1)
    )

    response = admin_client.post(
        reverse("admin:pricing_modelprice_change", args=[old.pk]), form_data(output_usd_per_mtok="12", note="price cut")
    )

    assert response.status_code == 302
    old.refresh_from_db()
    new = ModelPrice.objects.get(effective_to__isnull=True)
    assert new.pk != old.pk
    assert (old.output_usd_per_mtok, old.effective_to) == (D(15), new.effective_from)  # untouched, closed
    assert (new.model, new.source, new.output_usd_per_mtok, new.note) == ("my-model", "manual", D(12), "price cut")
    assert response["Location"] == CHANGELIST


def test_saving_without_changes_writes_nothing(admin_client) -> None:
    price = price_set_manual(model="my-model", input_usd_per_mtok=D("3"), output_usd_per_mtok=D("15"))

    admin_client.post(reverse("admin:pricing_modelprice_change", args=[price.pk]), form_data())

    assert list(ModelPrice.objects.values_list("pk", "effective_to")) == [(price.pk, None)]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"tiers": '[{"above_tokens": -5}]'}, "tiers", "Tier 0: above_tokens must be a non-negative integer."),
        ({"tiers": '[{"above_tokens": 10, "inptu": "1"}]'}, "tiers", "Tier 0: unknown keys inptu"),
        ({"tiers": '[{"above_tokens": 10, "input": "cheap"}]'}, "tiers", "input must be a non-negative decimal"),
        ({"tiers": '{"above_tokens": 10}'}, "tiers", "Must be a list of tiers."),
        ({"batch_input_usd_per_mtok": "1"}, "batch_output_usd_per_mtok", "Set batch input and batch output together"),
    ],
)
def test_invalid_prices_are_form_errors_and_write_nothing(admin_client, overrides, field, message) -> None:
    old = price_set_manual(model="my-model", input_usd_per_mtok=D("3"), output_usd_per_mtok=D("15"))

    response = admin_client.post(reverse("admin:pricing_modelprice_change", args=[old.pk]), form_data(**overrides))

    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors[field])
    assert list(ModelPrice.objects.values_list("pk", "effective_to")) == [(old.pk, None)]


@pytest.mark.parametrize("kind", ["synced", "closed manual"])
def test_synced_and_closed_rows_are_read_only(admin_client, synced, kind) -> None:
    if kind == "closed manual":
        price = price_set_manual(
            model="m", input_usd_per_mtok=D(1), output_usd_per_mtok=D(1), now=timezone.now() - dt.timedelta(1)
        )
        price_set_manual(model="m", input_usd_per_mtok=D(2), output_usd_per_mtok=D(2))
    else:
        price = synced
    rows_before = list(ModelPrice.objects.order_by("pk").values())
    url = reverse("admin:pricing_modelprice_change", args=[price.pk])

    view = admin_client.get(url)
    post = admin_client.post(url, form_data(model=price.model, input_usd_per_mtok="0"))

    assert view.status_code == 200
    assert 'name="input_usd_per_mtok"' not in view.content.decode()
    assert post.status_code == 403
    assert list(ModelPrice.objects.order_by("pk").values()) == rows_before
    delete = admin_client.post(reverse("admin:pricing_modelprice_delete", args=[synced.pk]), {"post": "yes"})
    assert delete.status_code == 403
    assert ModelPrice.objects.filter(pk=synced.pk).exists()


def test_override_button_copies_a_synced_price_into_a_manual_one(admin_client, synced) -> None:
    page = admin_client.get(reverse("admin:pricing_modelprice_change", args=[synced.pk]))
    override_url = reverse("admin:pricing_modelprice_override", args=[synced.pk])
    assert override_url in page.content.decode()

    assert admin_client.get(override_url).status_code == 405
    response = admin_client.post(override_url)

    manual = ModelPrice.objects.get(source=PriceSource.MANUAL)
    assert response["Location"] == reverse("admin:pricing_modelprice_change", args=[manual.pk])
    copied = ("model", "provider", "mode", "input_usd_per_mtok", "output_usd_per_mtok", "cache_read_usd_per_mtok")
    copied += ("batch_input_usd_per_mtok", "batch_output_usd_per_mtok", "tiers", "capabilities")
    assert [getattr(manual, name) for name in copied] == [getattr(synced, name) for name in copied]
    assert manual.effective_to is None and manual.note == f"Copied from litellm model map price #{synced.pk}"
    synced.refresh_from_db()
    assert synced.effective_to is None  # the synced row stays; the manual one wins while in effect


def test_override_and_retire_actions(admin_client, synced) -> None:
    other = ModelPrice.objects.create(
        model="gpt-4o-mini",
        source=PriceSource.LITELLM,
        input_usd_per_mtok=1,
        output_usd_per_mtok=1,
        effective_from=EARLY,
    )

    admin_client.post(CHANGELIST, {"action": "override_selected", "_selected_action": [synced.pk, other.pk]})
    manual = ModelPrice.objects.filter(source=PriceSource.MANUAL)
    assert sorted(manual.values_list("model", flat=True)) == ["gpt-4o", "gpt-4o-mini"]

    admin_client.post(
        CHANGELIST, {"action": "retire_selected", "_selected_action": [synced.pk, *manual.values_list("pk", flat=True)]}
    )

    assert not ModelPrice.objects.filter(source=PriceSource.MANUAL, effective_to__isnull=True).exists()
    synced.refresh_from_db()
    assert synced.effective_to is None


def test_alias_admin(admin_client) -> None:
    response = admin_client.post(reverse("admin:pricing_modelalias_add"), {"alias": "my-gpt", "model": "gpt-4o"})

    assert response.status_code == 302
    assert list(ModelAlias.objects.values_list("alias", "model")) == [("my-gpt", "gpt-4o")]
    assert "my-gpt" in admin_client.get(reverse("admin:pricing_modelalias_changelist")).content.decode()
