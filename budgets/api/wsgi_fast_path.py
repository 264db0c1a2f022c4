"""The budget check answered in front of Django's WSGI handler (ADR 0003 "Speed").

Every LLM call of every agent asks ``POST /api/v1/budget-checks/`` first. An API-key call there is
answered by the plain view :func:`budgets.api.checks._check_fast`, but through Django's handler it
still goes through the whole middleware chain (each layer's wrappers, the three that step aside
included), URL resolving and the handler's plumbing. :class:`BudgetCheckWsgiFastPath` wraps the
WSGI application and calls that view directly for the requests it serves, doing around it what the
handler and the middleware would have done to them, so the answer is the same — status line, every
header in the same order, body — and so are the side effects (``request_started`` /
``request_finished`` and the database connection upkeep on them, the URLconf and script prefix,
Django's error responses and ``django.request`` logging). Every other request goes to the wrapped
application untouched. In-process that saves about 60 µs of the ~270 µs a check refused after
authentication costs (what is left is the view and the work Django does that changes answers or
connections: signals, ``ALLOWED_HOSTS``, the security headers).

What the middleware does is reproduced by calling the configured middleware objects' own hooks in
Django's order; the middleware that steps aside for these calls (``config.api``) is left out. A
``MIDDLEWARE`` entry not known here turns the fast path off (logged once): a new middleware is never
skipped silently.
"""

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.core import signals
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest, get_script_name
from django.db import connections
from django.http import HttpRequest
from django.urls import (
    NoReverseMatch,
    Resolver404,
    ResolverMatch,
    get_script_prefix,
    resolve,
    reverse,
    set_script_prefix,
    set_urlconf,
)
from django.utils.log import log_response
from django.utils.module_loading import import_string

from budgets.api import checks

logger = logging.getLogger(__name__)

CHECK_URL_NAME = "v1:budget-check"
CHECK_PATH = "/api/v1/budget-checks/"  # when the URL name does not reverse

# Middleware whose effect on the answers served here is reproduced by calling its own hooks (the
# same instance methods Django's handler calls, on instances made with the same settings):
# SecurityMiddleware (HTTPS redirect -> left to Django; HSTS, nosniff, Referrer-Policy, COOP),
# CommonMiddleware (disallowed user agents, ALLOWED_HOSTS through get_host(), PREPEND_WWW -> left
# to Django; Content-Length), CsrfViewMiddleware (the view is csrf_exempt, but a malformed CSRF
# cookie still gets a new one) and XFrameOptionsMiddleware (X-Frame-Options).
REPRODUCED_MIDDLEWARE = frozenset(
    {
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    }
)
# Middleware that steps aside for every request served here (config.api._SkippedForApiKeyCalls:
# API-key calls under SPENDGUARD_PLAIN_API_PATH_PREFIXES), so leaving it out changes nothing.
STEPPING_ASIDE_MIDDLEWARE = frozenset(
    {"config.api.SessionMiddleware", "config.api.AuthenticationMiddleware", "config.api.MessageMiddleware"}
)


@dataclass(slots=True)
class _Plan:
    """What the first request worked out from the settings and the URLconf; ``path`` None: off."""

    path: str | None
    handler_class: type = WSGIHandler
    match: ResolverMatch | None = None
    request_hooks: list[Callable] = field(default_factory=list)  # MIDDLEWARE order
    view_hooks: list[Callable] = field(default_factory=list)  # MIDDLEWARE order
    response_hooks: list[Callable] = field(default_factory=list)  # reverse MIDDLEWARE order


def wrap(application: Callable) -> Callable:
    """``application`` behind the fast path, or as it is when ``SPENDGUARD_CHECK_WSGI_FAST_PATH``
    is off. Wrap Django's own WSGI application: WSGI middleware between the two would be skipped for
    the requests served here."""
    if not settings.SPENDGUARD_CHECK_WSGI_FAST_PATH:
        return application
    return BudgetCheckWsgiFastPath(application)


class BudgetCheckWsgiFastPath:
    """A WSGI application answering API-key budget checks itself and passing everything else to
    ``app`` (Django's WSGIHandler): see the module docstring."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self._plan: _Plan | None = None
        self._plan_lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        plan = self._plan or self._setup()
        if (
            plan.path is None
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("PATH_INFO") != plan.path
            or get_script_name(environ)
        ):
            return self.app(environ, start_response)
        set_script_prefix("")
        # On a copy: Django's request and middleware write into META, and a request handed on must
        # reach the application exactly as it came (its body unread: see check_fast_answers).
        request = WSGIRequest(environ.copy())
        # Only requests _check_fast serves are signalled here; it reads the body only after this
        # test passes, so any other request is handed on unread. (The path is under the prefixes
        # where the session, authentication and messages middleware step aside: checked at setup.)
        if not checks.check_fast_answers(request):
            return self.app(environ, start_response)
        set_urlconf(settings.ROOT_URLCONF)
        # The request phase of the middleware comes before request_started here (Django sends it
        # first), so that a request some middleware answers itself — an HTTPS redirect, a bad Host
        # header — can still go to Django, which then signals once. These hooks touch neither the
        # database nor the cache, so the connection upkeep on request_started is not missed.
        request.resolver_match = plan.match
        try:
            for hook in plan.request_hooks:
                if hook(request) is not None:
                    return self.app(environ, start_response)
            for hook in plan.view_hooks:
                if hook(request, plan.match.func, (), {}) is not None:
                    return self.app(environ, start_response)
        except Exception:
            return self.app(environ, start_response)

        signals.request_started.send(sender=plan.handler_class, environ=environ)
        try:
            response = checks.check_fast_serve(request)
        except Exception as exc:
            response = response_for_exception(request, exc)
        if response is None:  # _check_fast declined after all (not an API key): let Django answer
            signals.request_finished.send(sender=plan.handler_class)
            return self.app(environ, start_response)
        for hook in plan.response_hooks:
            try:
                response = hook(request, response)
            except Exception as exc:
                response = response_for_exception(request, exc)

        # BaseHandler.get_response's and WSGIHandler.__call__'s ends: the response's close(), called
        # by the server once it is sent, closes the request and sends request_finished.
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        response._handler_class = plan.handler_class
        start_response(
            f"{response.status_code} {response.reason_phrase}",
            [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())],
        )
        return response

    def _setup(self) -> _Plan:
        with self._plan_lock:
            if self._plan is None:
                self._plan = self._plan_for_settings()
            return self._plan

    def _plan_for_settings(self) -> _Plan:
        handler_class = type(self.app) if isinstance(self.app, WSGIHandler) else WSGIHandler
        try:
            path = "/" + reverse(CHECK_URL_NAME, urlconf=settings.ROOT_URLCONF).removeprefix(get_script_prefix())
        except NoReverseMatch:
            path = CHECK_PATH
        try:
            match = resolve(path, urlconf=settings.ROOT_URLCONF)
        except Resolver404:
            match = None
        plan = _Plan(path=path, handler_class=handler_class, match=match)
        problem = None
        if match is None or match.func is not checks.budget_check_view:
            problem = f"{path} is not served by budgets.api.checks.budget_check_view"
        elif any(db.get("ATOMIC_REQUESTS") for db in connections.settings.values()):
            problem = "ATOMIC_REQUESTS is on (Django runs views in a transaction)"
        elif settings.CSRF_USE_SESSIONS:
            problem = "CSRF_USE_SESSIONS is on (CsrfViewMiddleware reads the session, not set for API-key calls)"
        for middleware_path in settings.MIDDLEWARE:
            if problem is not None:
                break
            if middleware_path in STEPPING_ASIDE_MIDDLEWARE:
                if not any(path.startswith(prefix) for prefix in settings.SPENDGUARD_PLAIN_API_PATH_PREFIXES):
                    problem = f"{middleware_path} does not step aside for {path} (SPENDGUARD_PLAIN_API_PATH_PREFIXES)"
            elif middleware_path in REPRODUCED_MIDDLEWARE:
                middleware = import_string(middleware_path)(_no_inner_response)
                if hasattr(middleware, "process_exception") or hasattr(middleware, "process_template_response"):
                    problem = f"{middleware_path} has exception or template response hooks, not reproduced here"
                if hasattr(middleware, "process_request"):
                    plan.request_hooks.append(middleware.process_request)
                if hasattr(middleware, "process_view"):
                    plan.view_hooks.append(middleware.process_view)
                if hasattr(middleware, "process_response"):
                    plan.response_hooks.insert(0, middleware.process_response)
            else:
                problem = f"MIDDLEWARE has {middleware_path}, which it does not know how to reproduce"
        if problem is not None:
            logger.warning("The budget check's WSGI fast path is off: %s; Django answers every check.", problem)
            return _Plan(path=None)
        return plan


def _no_inner_response(request: HttpRequest):
    raise AssertionError("the fast path calls the middleware's hooks, never the middleware itself")
