"""Who may call the usage API: API keys only, unknown / revoked keys are 401, sessions are 403."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from costs.models import ApiKey, UsageRecord
from costs.services.api_keys import api_key_create, api_key_revoke
from tests.costs.test_ingest import URL, usage

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(organization, project, agent):
    return api_key_create(organization=organization, project=project, agent=agent, name="k")


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.mark.parametrize("method", ["get", "post"])
def test_no_credentials_is_401(method):
    response = getattr(APIClient(), method)(URL, usage(), format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert not UsageRecord.objects.exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_unknown_key_is_401(method, key):
    response = getattr(bearer("sg_not-a-real-key"), method)(URL, usage(), format="json")

    assert response.status_code == 401
    assert response.json() == {"error": {"code": "invalid_api_key", "message": "Unknown API key.", "fields": {}}}
    assert not UsageRecord.objects.exists()


def test_malformed_authorization_header_is_401(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer two parts")

    response = client.post(URL, usage(), format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("method", ["get", "post"])
def test_revoked_key_is_401(method, key):
    api_key, secret = key
    api_key_revoke(api_key=api_key)

    response = getattr(bearer(secret), method)(URL, usage(), format="json")

    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "api_key_revoked", "message": "This API key has been revoked.", "fields": {}}
    }
    assert not UsageRecord.objects.exists()


def test_a_key_works_until_it_is_revoked(key):
    api_key, secret = key
    client = bearer(secret)

    assert client.post(URL, usage(request_id="before"), format="json").status_code == 201
    api_key_revoke(api_key=api_key)
    assert client.post(URL, usage(request_id="after"), format="json").status_code == 401
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["before"]


@pytest.mark.parametrize("method", ["get", "post"])
def test_session_login_may_not_use_the_usage_api(method, key):
    staff = get_user_model().objects.create_superuser("operator", "op@example.com", "pw")
    client = APIClient()
    client.force_login(staff)

    response = getattr(client, method)(URL, usage(), format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "api_key_required"
    assert not UsageRecord.objects.exists()


def test_using_a_key_records_when_it_was_last_used(key):
    api_key, secret = key
    assert api_key.last_used_at is None

    bearer(secret).get(URL)

    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is not None
