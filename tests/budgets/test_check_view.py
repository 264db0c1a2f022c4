"""The budget-check endpoints' plain Django fast path (budgets.api.checks, ADR 0003 "Speed"):
it answers API-key calls exactly as the DRF views do — same status, headers and body — and the
middleware it skips still runs for every other caller and path.

The DRF views stay mounted at the same paths in this module's URLconf (``DRF_ONLY``), so each
scenario is run twice, once per URLconf, and the whole responses compared.
"""

import io
import os
import re
import subprocess
import sys
import time
import uuid

import orjson
import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test import RequestFactory
from django.urls import include, path
from freezegun import freeze_time
from rest_framework.test import APIClient

from budgets.api.checks import BudgetCheckApi, ReservationReleaseApi
from budgets.models import Reservation
from config.api import api_key_call_to_plain_view
from costs.services.api_keys import api_key_create, api_key_revoke
from tests.budgets.conftest import CHECK_URL, check_body, make_budget, release_url
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory

pytestmark = pytest.mark.django_db

NOW = "2026-11-10T12:00:00Z"
DRF_ONLY = "tests.budgets.test_check_view"

# The two endpoints answered by their DRF views only (the URLconf before the fast path).
urlpatterns = [
    path(
        "api/v1/",
        include(
            [
                path("budget-checks/", BudgetCheckApi.as_view()),
                path("budget-checks/<uuid:reservation_id>/release/", ReservationReleaseApi.as_view()),
            ]
        ),
    ),
]


def whole(response) -> tuple[int, dict, bytes]:
    return response.status_code, dict(response.items()), response.content


def scenario(slug: str) -> list[tuple[int, dict, bytes]]:
    """Every kind of answer of both endpoints to API-key callers, in a new organization (the
    same names in both runs). Ids differ between runs: reservation and budget ids are replaced
    by labels."""
    organization = OrganizationFactory(slug=slug, name="Acme")
    project = ProjectFactory(organization=organization, slug="search", name="Search")
    agent = AgentFactory(project=project, name="planner")
    roomy = make_budget(organization=organization, name="roomy", limit_usd="10")
    tight = make_budget(agent=agent, name="tight", limit_usd="0.016", period="daily")
    _, secret = api_key_create(organization=organization, project=project, agent=agent, name="k")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    revoked_key, revoked_secret = api_key_create(organization=organization, name="revoked")
    api_key_revoke(api_key=revoked_key)

    def post(body, *, auth=None, **extra):
        if auth is None:
            return client.post(CHECK_URL, body, content_type="application/json", **extra)
        return APIClient().post(CHECK_URL, body, content_type="application/json", HTTP_AUTHORIZATION=auth, **extra)

    answers = [
        post(check_body(request_id="a")),  # 201 allow
        post(check_body(request_id="a")),  # 200 replay
        post(check_body(request_id="b")),  # 201 warn (past the 90 % threshold)
        post(check_body(request_id="c")),  # 429 deny, Retry-After
        post({"model": "", "prompt_tokens": -1, "colour": "red"}),  # 400 validation
        post(b'{"model": "gpt-4o",'),  # 400 malformed JSON
        post(b"[1, 2]"),  # 400 not an object
        post(check_body(agent="someone-else")),  # 403 out of scope
        post(check_body(sprint="nope")),  # 400 unknown sprint
        post(check_body(), auth="Bearer sg_unknown"),  # 401 invalid_api_key
        post(check_body(), auth=f"Bearer {revoked_secret}"),  # 401 api_key_revoked
        post(check_body(), auth="Bearer a b"),  # 401 malformed header
        post(check_body(request_id="a"), auth="bearer " + secret, HTTP_ACCEPT="application/json"),  # 200 replay
    ]
    first_id = answers[0].json()["reservation_id"]
    answers += [
        client.post(release_url(first_id)),  # 200 released
        client.post(release_url(first_id)),  # 200 again, unchanged
        client.post(release_url(uuid.uuid4())),  # 404
        APIClient().post(release_url(first_id), HTTP_AUTHORIZATION="Bearer sg_unknown"),  # 401
    ]
    labels = {}
    for response in answers:  # reservation ids in order of appearance
        for found in re.findall(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", response.content):
            labels.setdefault(found, f"<reservation {len(labels)}>".encode())
    for budget, label in ((roomy, "roomy"), (tight, "tight")):
        for pattern in (b'"id":%d,', b"(id %d)", b"budget_over_limit:%d", b"budget_threshold:%d:"):
            labels[pattern % budget.pk] = pattern.replace(b"%d", f"<{label}>".encode())
    results = []
    for response in answers:
        status, headers, content = whole(response)
        for real, label in labels.items():
            content = content.replace(real, label)
        headers.pop("Content-Length")  # labels change the length
        results.append((status, headers, content))
    return results


@freeze_time(NOW)
def test_the_fast_path_answers_exactly_as_the_drf_views(prices, settings, monkeypatch):
    # Prove the fast path answered: the DRF views may not be reached in this run.
    def unreachable(*args, **kwargs):
        raise AssertionError("the DRF view answered an API-key call")

    with monkeypatch.context() as patched:
        patched.setattr(BudgetCheckApi, "post", unreachable)
        patched.setattr(ReservationReleaseApi, "post", unreachable)
        fast = scenario("acme")
    settings.ROOT_URLCONF = DRF_ONLY  # the same requests through the DRF views only
    slow = scenario("acme-drf")

    assert [status for status, _, _ in fast[:13]] == [201, 200, 201, 429, 400, 400, 400, 403, 400, 401, 401, 401, 200]
    assert [status for status, _, _ in fast[13:]] == [200, 200, 404, 401]
    assert fast[3][1]["Retry-After"] == str(12 * 3600)
    assert fast[0][1]["Allow"] == "POST, OPTIONS"
    for index, (mine, theirs) in enumerate(zip(fast, slow, strict=True)):
        assert mine == theirs, f"answer {index} differs"


@freeze_time(NOW)
def test_other_requests_are_left_to_drf(prices, organization, agent_client):
    """Methods, content types, Accept headers and query strings the fast path does not take get
    DRF's own answers (405, 415, 406, ...), in the error envelope."""
    method = agent_client.get(CHECK_URL)
    media = agent_client.post(CHECK_URL, "model=gpt-4o", content_type="text/plain")
    accept = agent_client.post(CHECK_URL, check_body(), format="json", HTTP_ACCEPT="text/html")
    fmt = agent_client.post(f"{CHECK_URL}?format=xml", check_body(), format="json")
    empty = agent_client.post(CHECK_URL, content_type="application/json")
    options = agent_client.options(CHECK_URL)

    assert (method.status_code, method["Allow"], method.json()) == (
        405,
        "POST, OPTIONS",
        {"error": {"code": "method_not_allowed", "message": 'Method "GET" not allowed.', "fields": {}}},
    )
    assert (media.status_code, media.json()["error"]["code"]) == (415, "unsupported_media_type")
    assert (accept.status_code, accept.json()["error"]["code"]) == (406, "not_acceptable")
    assert (fmt.status_code, fmt.json()["error"]["code"]) == (404, "not_found")
    assert empty.status_code == 400
    assert empty.json()["error"]["fields"]["model"] == ["This field is required."]
    assert (options.status_code, options.json()["name"]) == (200, "Budget Check Api")
    assert not Reservation.objects.exists()


def test_no_credentials_and_session_logins_get_the_drf_answers(db):
    anonymous = APIClient().post(CHECK_URL, check_body(), format="json")
    staff = APIClient()
    staff.force_login(get_user_model().objects.create_user("olivia", is_staff=True))
    session = staff.post(CHECK_URL, check_body(), format="json")

    assert (anonymous.status_code, anonymous["WWW-Authenticate"]) == (401, 'Bearer realm="api"')
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    # The session is still read on this path when the caller has no API key.
    assert (session.status_code, session.json()["error"]["code"]) == (403, "api_key_required")


@pytest.mark.parametrize(
    ("path", "authorization", "skipped"),
    [
        ("/api/v1/budget-checks/", "Bearer sg_x", True),
        ("/api/v1/budget-checks/6f1c8a7e-6f55-4b43-9d57-3b1c4cfb0a0f/release/", "bearer sg_x", True),
        ("/api/v1/budget-checks/", "Bearer a b", True),  # a 401 from the API-key authenticator
        ("/api/v1/budget-checks/", None, False),
        ("/api/v1/budget-checks/", "Basic b2xpdmlh", False),
        ("/api/v1/budget-checks/", "Bearer\xa0sg_x", False),  # not Bearer to DRF either
        ("/api/v1/budgets/", "Bearer sg_x", False),
        ("/api/v1/usage/", "Bearer sg_x", False),
        ("/admin/", "Bearer sg_x", False),
    ],
)
def test_middleware_steps_aside_only_for_api_key_calls_to_the_check_paths(path, authorization, skipped):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    assert api_key_call_to_plain_view(RequestFactory().post(path, **headers)) is skipped


def test_sessions_and_messages_still_work_elsewhere(db, client):
    user = get_user_model().objects.create_superuser("root", password="pw-long-enough")
    login = client.post("/admin/login/?next=/admin/", {"username": user.username, "password": "pw-long-enough"})
    index = client.get("/admin/", HTTP_AUTHORIZATION="Bearer sg_x")  # a Bearer header elsewhere changes nothing

    assert (login.status_code, login["Location"]) == (302, "/admin/")
    assert index.status_code == 200
    assert index.wsgi_request.user == user
    assert hasattr(index.wsgi_request, "_messages")


def test_the_schema_still_describes_both_endpoints(prices, organization, agent_client):
    schema = agent_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    check = schema["paths"]["/api/v1/budget-checks/"]["post"]
    assert check["summary"] == "Check budgets and reserve the worst case before an LLM call"
    assert check["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/BudgetCheckInput")
    assert set(check["responses"]) == {"200", "201", "400", "401", "403", "409", "429", "503"}
    release = schema["paths"]["/api/v1/budget-checks/{reservation_id}/release/"]["post"]
    assert release["summary"] == "Release an unused reservation"
    assert release["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Released")


def wsgi_post(path: str, body: bytes, secret: str) -> tuple[str, bytes]:
    """A request through Django's real WSGI handler: unlike the test client, it runs the
    per-request connection upkeep (``close_old_connections``, which arms the health check)."""
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "testserver", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "testserver",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "HTTP_AUTHORIZATION": f"Bearer {secret}",
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0),
    }  # fmt: skip
    status = []
    content = b"".join(WSGIHandler()(environ, lambda line, headers, exc_info=None: status.append(line)))
    return status[0], content


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_connection_that_died_while_idle_is_replaced_before_the_check(prices, organization, agent, monkeypatch):
    """The fast path skips Django's per-request SELECT 1 on a healthy idle connection, never on a
    dead one: a backend terminated between two checks is noticed and replaced."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 600)
    monkeypatch.setitem(connection.settings_dict, "CONN_HEALTH_CHECKS", True)
    connection.close()
    _, secret = api_key_create(organization=organization, project=agent.project, agent=agent, name="k")
    try:
        status, _ = wsgi_post(CHECK_URL, orjson.dumps(check_body(request_id="one")), secret)
        assert status == "201 Created"
        healthy = connection.connection.info.backend_pid
        status, _ = wsgi_post(CHECK_URL, orjson.dumps(check_body(request_id="two")), secret)
        assert status == "201 Created"
        assert connection.connection.info.backend_pid == healthy  # kept: persistent connection
        backend = healthy
        with psycopg.connect(connection.connection.info.dsn, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [backend])
            deadline = time.monotonic() + 10
            while other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend]).fetchone():
                assert time.monotonic() < deadline
                time.sleep(0.01)

        status, content = wsgi_post(CHECK_URL, orjson.dumps(check_body(request_id="three")), secret)

        assert status == "201 Created", content
        assert connection.connection.info.backend_pid != backend
        assert Reservation.objects.filter(request_id__in=["one", "two", "three"]).count() == 3
    finally:
        connection.close()


def test_the_middleware_module_can_be_the_first_api_module_imported():
    """A web process loads MIDDLEWARE (config.api) before any DRF view: no import cycle then."""
    code = "import django; django.setup(); import config.api; import django.core.handlers.wsgi as w; w.WSGIHandler()"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
