"""The budget check's WSGI fast path (budgets.api.wsgi_fast_path): for API-key calls it answers
exactly what Django's full stack answers — status line, every header, body, logging, signals — and
it hands every other request to the application untouched.

Each scenario runs through ``WSGIHandler()`` (the full stack) and ``BudgetCheckWsgiFastPath(...)``
in front of another one, with real WSGI environs, and the whole answers are compared. The
seventeen API-key calls of tests/budgets/test_check_view.py are reused as they are, sent as WSGI
requests instead of through the test client.
"""

import io
import json
import logging
import os
import re
import subprocess
import sys
import time

import orjson
import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, connection, connections
from django.test import Client, RequestFactory
from django.utils.deprecation import MiddlewareMixin
from freezegun import freeze_time

import budgets.api.checks
from budgets.api.wsgi_fast_path import BudgetCheckWsgiFastPath, wrap
from budgets.models import Reservation
from costs.services.api_keys import api_key_create
from tests.budgets import test_check_view as check_view
from tests.budgets.conftest import CHECK_URL, check_body, release_url

pytestmark = pytest.mark.django_db

# Authenticated, then refused by validation: the whole served path, nothing written.
INVALID = b'{"model": 1}'


@pytest.fixture(autouse=True)
def _no_connection_upkeep_in_test_transactions(request):
    """Django's handler closes the database connection around each request (close_old_connections
    on request_started / request_finished): inside a test's transaction that would end it. The
    test client turns it off the same way; tests on a real transaction keep it."""
    marker = request.node.get_closest_marker("django_db")
    if marker is not None and marker.kwargs.get("transaction"):
        yield
        return
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def wsgi_environ(method="POST", path=CHECK_URL, body=b"", content_type="application/json", **meta) -> dict:
    """A WSGI environ as a server passes it (Django's RequestFactory's, with a real body stream);
    a ``meta`` value None removes that key."""
    given = {key: value for key, value in meta.items() if value is not None}
    if content_type is not None:
        given["CONTENT_TYPE"] = content_type
    environ = RequestFactory().generic(method, path, body, content_type or "", **given).environ
    environ["wsgi.input"] = io.BytesIO(body)
    for key in [key for key, value in meta.items() if value is None]:
        environ.pop(key, None)
    return environ


def call(app, environ) -> tuple[str, list[tuple[str, str]], bytes]:
    """``app`` called as a WSGI server does (the answer read, then closed): its status line,
    header list (in the order given) and body."""
    started = []
    iterable = app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    try:
        body = b"".join(iterable)
    finally:
        if hasattr(iterable, "close"):
            iterable.close()
    status, headers = started[0]
    return status, headers, body


class Recorder:
    """A WSGI application in front of ``app`` keeping what reached it: the environ, a copy of it
    and how far its body stream had been read."""

    def __init__(self, app) -> None:
        self.app = app
        self.calls: list[tuple[dict, dict, int]] = []

    def __call__(self, environ, start_response):
        self.calls.append((environ, dict(environ), environ["wsgi.input"].tell()))
        return self.app(environ, start_response)


class WsgiResponse:
    def __init__(self, status: str, headers: list, content: bytes) -> None:
        self.status_code = int(status.split()[0])
        self._headers = headers
        self.content = content

    def items(self):
        return self._headers

    def json(self):
        return orjson.loads(self.content)


class WsgiClient:
    """What ``check_view.scenario`` uses of APIClient, sending real WSGI environs to ``app``."""

    app = None
    log: list

    def __init__(self) -> None:
        self._credentials: dict = {}

    def credentials(self, **meta) -> None:
        self._credentials = meta

    def post(self, path, data=None, content_type="application/octet-stream", **extra) -> WsgiResponse:
        body = data if isinstance(data, bytes) else b"" if data is None else json.dumps(data).encode()
        answer = call(self.app, wsgi_environ("POST", path, body, content_type, **{**self._credentials, **extra}))
        self.log.append(answer)
        return WsgiResponse(*answer)


def client_class(app, log: list) -> type[WsgiClient]:
    return type("WsgiClient", (WsgiClient,), {"app": app, "log": log})


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def django_logs(caplog) -> list[tuple[str, str, str]]:
    """What Django logged since the last call (reservation ids replaced)."""
    found = [
        (r.name, r.levelname, UUID.sub("<id>", r.getMessage())) for r in caplog.records if r.name.startswith("django")
    ]
    caplog.clear()
    return found


@freeze_time(check_view.NOW)
def test_api_key_checks_are_answered_exactly_as_by_the_full_stack(prices, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    inner = Recorder(WSGIHandler())
    fast_log: list = []
    full_log: list = []
    with monkeypatch.context() as patched:
        patched.setattr(check_view, "APIClient", client_class(BudgetCheckWsgiFastPath(inner), fast_log))
        fast = check_view.scenario("acme")
        fast_logs = django_logs(caplog)
        patched.setattr(check_view, "APIClient", client_class(WSGIHandler(), full_log))
        full = check_view.scenario("acme-full")
        full_logs = django_logs(caplog)

    assert [status for status, _, _ in fast[:13]] == [201, 200, 201, 429, 400, 400, 400, 403, 400, 401, 401, 401, 200]
    assert [status for status, _, _ in fast[13:]] == [200, 200, 404, 401]
    for index, (mine, theirs) in enumerate(zip(fast, full, strict=True)):
        assert mine == theirs, f"answer {index} differs"
    # The raw answers too: status lines and every header the server was given (Content-Length
    # aside, which the ids change; the bodies are compared above, ids replaced by labels).
    assert [(status, [h for h in headers if h[0] != "Content-Length"]) for status, headers, _ in fast_log] == [
        (status, [h for h in headers if h[0] != "Content-Length"]) for status, headers, _ in full_log
    ]
    assert {name for name, _ in fast_log[0][1]} == {
        "Allow", "Content-Length", "Content-Type", "Cross-Origin-Opener-Policy", "Referrer-Policy",
        "X-Content-Type-Options", "X-Frame-Options",
    }  # fmt: skip
    # Django logged the same 4xx lines (the 429 is filtered out by budgets.log_filters).
    assert fast_logs == full_logs
    assert ("django.request", "WARNING", f"Bad Request: {CHECK_URL}") in fast_logs
    assert not [line for line in fast_logs if "Too Many Requests" in line[2]]
    # Only the release calls (another path) reached Django.
    assert [environ["PATH_INFO"].endswith("/release/") for environ, _, _ in inner.calls] == [True] * 4


@pytest.fixture
def secret(organization, project, agent) -> str:
    return api_key_create(organization=organization, project=project, agent=agent, name="k")[1]


# name: (settings, the request's environ, whether the fast path answers it, the status, a header
# the answer has). The body is INVALID unless given; "method", "path", "body" and "content_type"
# change the request line and body, other keys its environ (None: removed).
HSTS = {"SECURE_HSTS_SECONDS": 3600, "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https")}
EDGE_CASES = {
    "served": ({}, {}, True, 400, ("X-Frame-Options", "DENY")),
    "served, JSON with a charset": ({}, {"content_type": "application/json; charset=utf-8"}, True, 400, None),
    "served, Accept JSON": ({}, {"HTTP_ACCEPT": "application/json"}, True, 400, None),
    "served, malformed header": ({}, {"HTTP_AUTHORIZATION": "Bearer a b"}, True, 401, None),
    "served, HSTS over HTTPS": (
        HSTS, {"HTTP_X_FORWARDED_PROTO": "https"}, True, 400, ("Strict-Transport-Security", "max-age=3600")
    ),
    "served, other frame and referrer policies": (
        {"X_FRAME_OPTIONS": "SAMEORIGIN", "SECURE_REFERRER_POLICY": "no-referrer, origin"},
        {}, True, 400, ("Referrer-Policy", "no-referrer,origin"),
    ),
    "served, a malformed CSRF cookie is replaced": (
        {}, {"HTTP_COOKIE": "csrftoken=bad"}, True, 400, ("Vary", "Cookie")
    ),
    "HTTPS redirect": ({"SECURE_SSL_REDIRECT": True}, {}, False, 301, None),
    "disallowed host": ({}, {"HTTP_HOST": "evil.example"}, False, 400, None),
    "disallowed user agent": (
        {"DISALLOWED_USER_AGENTS": [re.compile("badbot")]}, {"HTTP_USER_AGENT": "badbot"}, False, 403, None
    ),
    "no credentials": ({}, {"HTTP_AUTHORIZATION": None}, False, 401, None),
    "basic credentials": ({}, {"HTTP_AUTHORIZATION": "Basic b2xpdmlh"}, False, 401, None),
    "wrong content type": ({}, {"content_type": "text/plain"}, False, 415, None),
    "empty body": ({}, {"body": b""}, False, 400, None),
    "unreadable length": ({}, {"CONTENT_LENGTH": "twelve"}, False, 400, None),
    "Accept HTML": ({}, {"HTTP_ACCEPT": "text/html"}, False, 406, None),
    "query string": ({}, {"path": f"{CHECK_URL}?format=xml"}, False, 404, None),
    "GET": ({}, {"method": "GET", "body": b""}, False, 405, None),
    "OPTIONS": ({}, {"method": "OPTIONS", "body": b""}, False, 200, None),
    "another path": ({}, {"path": "/api/v1/budgets/"}, False, 403, None),
    "no trailing slash": ({}, {"path": CHECK_URL.rstrip("/")}, False, 301, None),
    "the release path": ({}, {"path": release_url("6f1c8a7e-6f55-4b43-9d57-3b1c4cfb0a0f")}, False, 404, None),
    "under a script name": ({}, {"SCRIPT_NAME": "/spendguard"}, False, 400, None),
}  # fmt: skip


def edge_environ(secret: str, changes: dict) -> dict:
    changes = dict(changes)
    meta = {"HTTP_AUTHORIZATION": f"Bearer {secret}", **changes}
    return wsgi_environ(
        meta.pop("method", "POST"),
        meta.pop("path", CHECK_URL),
        meta.pop("body", INVALID),
        meta.pop("content_type", "application/json"),
        **meta,
    )


def normalised(answer):
    """A new CSRF cookie's value is random."""
    status, headers, body = answer
    return status, [(k, re.sub(r"csrftoken=\w+", "csrftoken=<new>", v)) for k, v in headers], body


@pytest.mark.parametrize("case", list(EDGE_CASES))
@freeze_time(check_view.NOW)
def test_every_request_gets_the_full_stacks_answer(case, secret, prices, settings, caplog):
    overrides, changes, served, status, header = EDGE_CASES[case]
    for name, value in overrides.items():
        setattr(settings, name, value)
    caplog.set_level(logging.INFO)
    inner = Recorder(WSGIHandler())
    fast_app, full_app = BudgetCheckWsgiFastPath(inner), WSGIHandler()
    environ = edge_environ(secret, changes)
    sent = dict(environ)

    fast = normalised(call(fast_app, environ))
    fast_logs = django_logs(caplog)
    full = normalised(call(full_app, edge_environ(secret, changes)))

    assert fast == full
    assert int(fast[0].split()[0]) == status
    assert header is None or header in fast[1]
    assert fast_logs == django_logs(caplog)
    if served:
        assert inner.calls == []
    else:  # handed on as it came: the same environ, unchanged, its body unread
        [(got, got_copy, position)] = inner.calls
        assert (got is environ, got_copy, position) == (True, sent, 0)
    assert not Reservation.objects.exists()


def test_session_callers_are_left_to_django(db, prices):
    browser = Client()
    browser.force_login(get_user_model().objects.create_user("olivia", is_staff=True))
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    inner = Recorder(WSGIHandler())

    fast = call(BudgetCheckWsgiFastPath(inner), wsgi_environ(body=orjson.dumps(check_body()), HTTP_COOKIE=cookie))
    full = call(WSGIHandler(), wsgi_environ(body=orjson.dumps(check_body()), HTTP_COOKIE=cookie))

    assert fast == full
    # A browser session without its CSRF token: DRF's session authentication refuses it.
    error = orjson.loads(fast[2])["error"]
    assert (fast[0], error["code"], error["message"]) == (
        "403 Forbidden",
        "permission_denied",
        "CSRF Failed: CSRF cookie not set.",
    )
    assert len(inner.calls) == 1


def test_other_requests_reach_the_application_untouched(secret):
    """Before anything else is looked at, method, path and script name decide; and a request to
    the check that the fast path does not answer is handed on with its body unread too."""
    got = []

    def inner(environ, start_response):
        got.append((environ, dict(environ), environ["wsgi.input"].tell()))
        start_response("204 No Content", [])
        return []

    app = BudgetCheckWsgiFastPath(inner)
    for changes in (
        {"method": "GET", "body": b""},
        {"method": "PUT"},
        {"path": "/api/v1/usage/"},
        {"SCRIPT_NAME": "/spendguard"},
        {"HTTP_AUTHORIZATION": None},
        {"content_type": "application/x-www-form-urlencoded"},
        {"HTTP_ACCEPT": "text/html"},
    ):
        environ = edge_environ(secret, changes)
        sent = dict(environ)
        assert call(app, environ) == ("204 No Content", [], b""), changes
        assert (got[-1][0] is environ, got[-1][1], got[-1][2]) == (True, sent, 0), changes
    assert len(got) == 7


@pytest.mark.parametrize("served", [True, False])
def test_request_started_and_finished_are_sent_once_per_request(served, secret, prices):
    sent = []

    def started(sender, environ, **kwargs):
        sent.append(("started", sender, environ))

    def finished(sender, **kwargs):
        sent.append(("finished", sender))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    inner = Recorder(WSGIHandler())
    try:
        environ = edge_environ(secret, {} if served else {"HTTP_AUTHORIZATION": None})
        iterable = BudgetCheckWsgiFastPath(inner)(environ, lambda status, headers, exc_info=None: None)
        before_close = list(sent)
        iterable.close()
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)

    assert before_close == [("started", WSGIHandler, environ)]
    assert sent == [("started", WSGIHandler, environ), ("finished", WSGIHandler)]
    assert len(inner.calls) == (0 if served else 1)


def test_an_unexpected_error_gets_djangos_500(secret, prices, monkeypatch, caplog):
    def failing(**kwargs):
        raise RuntimeError("the store is on fire")

    monkeypatch.setattr(budgets.api.checks, "budget_check", failing)
    body = orjson.dumps(check_body())

    fast = call(BudgetCheckWsgiFastPath(WSGIHandler()), wsgi_environ(body=body, HTTP_AUTHORIZATION=f"Bearer {secret}"))
    fast_logs = django_logs(caplog)
    full = call(WSGIHandler(), wsgi_environ(body=body, HTTP_AUTHORIZATION=f"Bearer {secret}"))

    assert fast == full
    assert fast[0] == "500 Internal Server Error"
    assert fast_logs == django_logs(caplog) == [("django.request", "ERROR", f"Internal Server Error: {CHECK_URL}")]


class StampMiddleware(MiddlewareMixin):
    def process_response(self, request, response):
        response["X-Stamp"] = "seen"
        return response


def _add_stamp_middleware(settings, monkeypatch):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.StampMiddleware"]


def _rename_session_middleware(settings, monkeypatch):
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware" if m == "config.api.SessionMiddleware" else m
        for m in settings.MIDDLEWARE
    ]


def _other_plain_paths(settings, monkeypatch):
    settings.SPENDGUARD_PLAIN_API_PATH_PREFIXES = ["/api/v1/usage/"]


def _drf_view_at_the_path(settings, monkeypatch):
    settings.ROOT_URLCONF = check_view.DRF_ONLY


def _atomic_requests(settings, monkeypatch):
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)


@pytest.mark.parametrize(
    ("configure", "reason"),
    [
        (_add_stamp_middleware, f"MIDDLEWARE has {__name__}.StampMiddleware"),
        (_rename_session_middleware, "MIDDLEWARE has django.contrib.sessions.middleware.SessionMiddleware"),
        (_other_plain_paths, "does not step aside for /api/v1/budget-checks/"),
        (_drf_view_at_the_path, "is not served by budgets.api.checks.budget_check_view"),
        (_atomic_requests, "ATOMIC_REQUESTS is on"),
    ],
)
def test_a_configuration_it_cannot_reproduce_turns_it_off(
    configure, reason, secret, prices, settings, monkeypatch, caplog
):
    configure(settings, monkeypatch)
    inner = Recorder(WSGIHandler())
    app = BudgetCheckWsgiFastPath(inner)

    first = call(app, edge_environ(secret, {}))
    second = call(app, edge_environ(secret, {}))

    assert first == second == call(WSGIHandler(), edge_environ(secret, {}))
    assert len(inner.calls) == 2  # Django answered both
    [record] = [r for r in caplog.records if r.name == "budgets.api.wsgi_fast_path"]  # said once
    assert record.levelname == "WARNING"
    assert reason in record.getMessage()
    if configure is _add_stamp_middleware:
        assert ("X-Stamp", "seen") in first[1]


def test_the_setting_decides_whether_the_application_is_wrapped(settings):
    application = WSGIHandler()

    settings.SPENDGUARD_CHECK_WSGI_FAST_PATH = False
    assert wrap(application) is application
    settings.SPENDGUARD_CHECK_WSGI_FAST_PATH = True
    wrapped = wrap(application)
    assert isinstance(wrapped, BudgetCheckWsgiFastPath)
    assert wrapped.app is application


@pytest.mark.parametrize(
    ("value", "expected"),
    [("false", "WSGIHandler"), ("true", "BudgetCheckWsgiFastPath"), (None, "BudgetCheckWsgiFastPath")],
)
def test_the_web_process_application_follows_the_environment(value, expected):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    env.pop("SPENDGUARD_CHECK_WSGI_FAST_PATH", None)
    if value is not None:
        env["SPENDGUARD_CHECK_WSGI_FAST_PATH"] = value
    code = "import config.wsgi; print(type(config.wsgi.application).__name__)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == expected


# --- database connections: Django's upkeep, on real transactions -------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_non_persistent_connection_is_closed_when_the_answer_is(prices, secret):
    app = BudgetCheckWsgiFastPath(WSGIHandler())
    iterable = app(edge_environ(secret, {"body": orjson.dumps(check_body())}), lambda *args: None)
    try:
        assert iterable.status_code == 201
        assert connection.connection is not None  # the check used it
    finally:
        iterable.close()
    assert connection.connection is None  # CONN_MAX_AGE 0: closed on request_finished


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_persistent_connection_is_kept_and_a_dead_one_replaced(prices, secret, monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 600)
    monkeypatch.setitem(connection.settings_dict, "CONN_HEALTH_CHECKS", True)
    connection.close()
    app = BudgetCheckWsgiFastPath(WSGIHandler())

    def check(request_id: str) -> str:
        return call(app, edge_environ(secret, {"body": orjson.dumps(check_body(request_id=request_id))}))[0]

    try:
        assert check("one") == "201 Created"
        backend = connection.connection.info.backend_pid
        assert check("two") == "201 Created"
        assert connection.connection.info.backend_pid == backend
        with psycopg.connect(connection.connection.info.dsn, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [backend])
            deadline = time.monotonic() + 10
            while other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend]).fetchone():
                assert time.monotonic() < deadline
                time.sleep(0.01)

        assert check("three") == "201 Created"  # request_started armed Django's health check
        assert connection.connection.info.backend_pid != backend
        assert Reservation.objects.filter(request_id__in=["one", "two", "three"]).count() == 3
    finally:
        connection.close()
