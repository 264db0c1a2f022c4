"""POST /api/v1/pricing/quote/: price a usage breakdown without recording it."""

import datetime as dt
from decimal import Decimal as D

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from pricing.models import ModelPrice, PriceSource
from pricing.services import price_set_manual

pytestmark = pytest.mark.django_db

URL = "/api/v1/pricing/quote/"
EARLY = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def gpt4o() -> ModelPrice:
    return ModelPrice.objects.create(
        model="gpt-4o",
        provider="openai",
        source=PriceSource.LITELLM,
        input_usd_per_mtok=D("2.5"),
        output_usd_per_mtok=D("10"),
        cache_read_usd_per_mtok=D("1.25"),
        batch_input_usd_per_mtok=D("1.25"),
        batch_output_usd_per_mtok=D("5"),
        tiers=[{"above_tokens": 100000, "input": "5", "output": "20"}],
        effective_from=EARLY,
    )


@pytest.fixture
def client(authed_client, organization) -> APIClient:
    return authed_client(organization=organization)


def test_quote_with_an_api_key(client, gpt4o) -> None:
    response = client.post(
        URL,
        {"model": "openai/gpt-4o", "prompt_tokens": 1200, "completion_tokens": 300, "cached_tokens": 1000},
        format="json",
    )

    assert response.status_code == 200
    # 200 x 2.5 + 1,000 x 1.25 + 300 x 10, per 1M tokens
    assert response.json() == {
        "model": "openai/gpt-4o",
        "price_id": gpt4o.pk,
        "cost_usd": "0.00475",
        "input_cost_usd": "0.0005",
        "cached_input_cost_usd": "0.00125",
        "cache_creation_cost_usd": "0",
        "output_cost_usd": "0.003",
        "priced": True,
    }


def test_quote_long_context_batch_and_reasoning(client, gpt4o) -> None:
    long = client.post(
        URL, {"model": "gpt-4o", "prompt_tokens": 100001, "completion_tokens": 7, "reasoning_tokens": 5}, format="json"
    )
    batch = client.post(
        URL, {"model": "gpt-4o", "prompt_tokens": 3, "completion_tokens": 1, "batch": True}, format="json"
    )

    assert long.json()["cost_usd"] == "0.500145"  # 100,001 x 5 + 7 x 20
    assert long.json()["output_cost_usd"] == "0.00014"
    assert batch.json()["cost_usd"] == "0.00000875"  # 3 x 1.25 + 1 x 5


def test_money_is_rounded_half_even_to_12_places(client) -> None:
    price = ModelPrice.objects.create(
        model="tiny", input_usd_per_mtok=D("0.0000005"), output_usd_per_mtok=D("0.0000015"), effective_from=EARLY
    )

    body = client.post(URL, {"model": "tiny", "prompt_tokens": 1, "completion_tokens": 1}, format="json").json()

    # 0.5e-12 -> 0 (half to even), 1.5e-12 -> 2e-12; the total 2e-12 exactly
    assert body == {
        "model": "tiny",
        "price_id": price.pk,
        "cost_usd": "0.000000000002",
        "input_cost_usd": "0",
        "cached_input_cost_usd": "0",
        "cache_creation_cost_usd": "0",
        "output_cost_usd": "0.000000000002",
        "priced": True,
    }


def test_unknown_model_is_unpriced_not_zero(client, gpt4o) -> None:
    response = client.post(URL, {"model": "no-such-model", "prompt_tokens": 10, "completion_tokens": 1}, format="json")

    assert response.status_code == 200
    assert response.json() == {
        "model": "no-such-model",
        "price_id": None,
        "cost_usd": None,
        "input_cost_usd": None,
        "cached_input_cost_usd": None,
        "cache_creation_cost_usd": None,
        "output_cost_usd": None,
        "priced": False,
    }


def test_at_picks_the_price_in_effect_then_and_manual_wins_now(client, gpt4o) -> None:
    switch = timezone.now() - dt.timedelta(hours=1)
    manual = price_set_manual(model="gpt-4o", input_usd_per_mtok=D("1"), output_usd_per_mtok=D("1"), now=switch)
    body = {"model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 0}

    now = client.post(URL, body, format="json").json()
    before = client.post(URL, {**body, "at": (switch - dt.timedelta(days=1)).isoformat()}, format="json").json()

    assert (now["price_id"], now["cost_usd"]) == (manual.pk, "0.001")
    assert (before["price_id"], before["cost_usd"]) == (gpt4o.pk, "0.0025")


def test_session_login_may_quote(gpt4o) -> None:
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("operator", password="x" * 12))

    response = client.post(URL, {"model": "gpt-4o", "prompt_tokens": 1, "completion_tokens": 0}, format="json")

    assert (response.status_code, response.json()["cost_usd"]) == (200, "0.0000025")


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            {},
            {
                "model": ["This field is required."],
                "prompt_tokens": ["This field is required."],
                "completion_tokens": ["This field is required."],
            },
        ),
        (
            {"model": "gpt-4o", "prompt_tokens": -1, "completion_tokens": "x", "batch": "maybe"},
            {
                "prompt_tokens": ["Ensure this value is greater than or equal to 0."],
                "completion_tokens": ["A valid integer is required."],
                "batch": ["Must be a valid boolean."],
            },
        ),
        (
            {
                "model": "gpt-4o",
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cached_tokens": 8,
                "cache_creation_tokens": 3,
            },
            {
                "cached_tokens": ["cached_tokens + cache_creation_tokens may not exceed prompt_tokens."],
                "cache_creation_tokens": ["cached_tokens + cache_creation_tokens may not exceed prompt_tokens."],
            },
        ),
        (
            {"model": "gpt-4o", "prompt_tokens": 10, "completion_tokens": 5, "reasoning_tokens": 6, "at": "yesterday"},
            {
                "at": [
                    "Datetime has wrong format. Use one of these formats instead: "
                    "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
                ]
            },
        ),
        (
            {"model": "gpt-4o", "prompt_tokens": 10, "completion_tokens": 5, "reasoning_tokens": 6},
            {"reasoning_tokens": ["reasoning_tokens may not exceed completion_tokens."]},
        ),
    ],
)
def test_bad_input_is_a_400_with_field_errors(client, gpt4o, body, fields) -> None:
    response = client.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "validation_error", "message": "Some fields are invalid.", "fields": fields}
    }


def test_malformed_json_is_a_400(client) -> None:
    response = client.post(URL, "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_without_credentials_401(gpt4o) -> None:
    response = APIClient().post(URL, {"model": "gpt-4o", "prompt_tokens": 1, "completion_tokens": 1}, format="json")

    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "not_authenticated",
            "message": "Authentication credentials were not provided.",
            "fields": {},
        }
    }


def test_unknown_key_401() -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer sg_nope")

    response = client.post(URL, {"model": "gpt-4o", "prompt_tokens": 1, "completion_tokens": 1}, format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_api_key")


def test_quote_is_described_in_the_openapi_schema() -> None:
    client = APIClient()
    client.force_login(get_user_model().objects.create_superuser("admin", password="x" * 12))

    schema = client.get("/api/v1/schema/?format=json").json()

    operation = schema["paths"]["/api/v1/pricing/quote/"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/QuoteInput")
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Quote")
    assert set(schema["components"]["schemas"]["Quote"]["properties"]) == {
        "model",
        "price_id",
        "cost_usd",
        "input_cost_usd",
        "cached_input_cost_usd",
        "cache_creation_cost_usd",
        "output_cost_usd",
        "priced",
    }
