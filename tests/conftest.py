"""Shared fixtures. Tests marked ``postgres`` / ``redis`` need the real service: they skip with a
reason when it is absent, except under CI (config.settings.test refuses to start there without it)."""

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("postgres") and connection.vendor != "postgresql":
        if settings.SPENDGUARD_REQUIRE_SERVICES:
            pytest.fail("PostgreSQL is required under CI but the test database is not PostgreSQL.")
        pytest.skip("needs PostgreSQL (none reachable at 127.0.0.1:5432 and DATABASE_URL unset)")
    if item.get_closest_marker("redis") and "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        if settings.SPENDGUARD_REQUIRE_SERVICES:
            pytest.fail("Redis is required under CI but the cache is not Redis.")
        pytest.skip("needs Redis (none reachable at 127.0.0.1:6379 and REDIS_URL unset)")


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def organization(db):
    return OrganizationFactory(slug="acme", name="Acme")


@pytest.fixture
def project(organization):
    return ProjectFactory(organization=organization, slug="search", name="Search")


@pytest.fixture
def agent(project):
    return AgentFactory(project=project, name="planner")


@pytest.fixture
def make_key(db):
    """``make_key(organization=..., project=..., agent=...)`` -> (ApiKey, secret)."""
    from costs.services.api_keys import api_key_create

    def _make(*, organization, project=None, agent=None, name="test key"):
        return api_key_create(organization=organization, project=project, agent=agent, name=name)

    return _make


@pytest.fixture
def authed_client(make_key):
    """``authed_client(scope_obj...)`` -> APIClient sending that key as a Bearer token."""

    def _client(**scope):
        _, secret = make_key(**scope)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    return _client
