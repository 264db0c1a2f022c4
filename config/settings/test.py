"""Test settings: use the real PostgreSQL and Redis of this machine when they answer.

``DATABASE_URL`` / ``REDIS_URL`` win when set. Otherwise the services are probed on their default
loopback ports; a missing service means SQLite / local memory, and tests marked ``postgres`` or
``redis`` skip with a reason. Under CI (``CI`` set) a missing service is an error, never a skip.
"""

import os
import socket

from django.core.exceptions import ImproperlyConfigured

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


_ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
if not os.environ.get("DATABASE_URL"):
    if _reachable("127.0.0.1", 5432):
        os.environ["DATABASE_URL"] = DEFAULT_DATABASE_URL
    elif _ci:
        raise ImproperlyConfigured("CI requires PostgreSQL at 127.0.0.1:5432 (see .ci/run).")
if not os.environ.get("REDIS_URL"):
    if _reachable("127.0.0.1", 6379):
        os.environ["REDIS_URL"] = DEFAULT_REDIS_URL
    elif _ci:
        raise ImproperlyConfigured("CI requires Redis at 127.0.0.1:6379 (see .ci/run).")

from .base import *  # noqa: E402, F403
from .base import DATABASES, env  # noqa: E402

# Tests run tasks in-process (eager) even with Redis present: Redis then serves the cache only.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_URL = "memory://"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DATABASES["default"]["CONN_MAX_AGE"] = 0
# Parallel runs on one server (several checkouts, xdist workers) need their own test database.
if env("TEST_DATABASE_NAME", default=""):
    DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME")}
SPENDGUARD_REQUIRE_SERVICES = _ci
# Tests change rows inside transactions that never commit, so no notification would ever arrive:
# cached checks confirm by query (tests of the listener turn it on, on committed transactions).
SPENDGUARD_CHECK_CONTEXT_LISTEN = False
