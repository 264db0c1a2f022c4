"""Hearing about check context changes as they commit, so that a cached check on the Redis store
need not confirm its context version with a query each time (ADR 0008, "Seeing changes").

The PostgreSQL triggers that bump an organization's :class:`~budgets.models.CheckContextVersion`
also ``NOTIFY spendguard_check_context, '<organization id>'`` (migration ``budgets/0006``); a
notification is delivered when the change commits. Each web process runs one daemon thread that
``LISTEN``\\s on its own connection and makes the process forget what it cached for that
organization (:func:`budgets.services.check_context.forget`), so its next check reads afresh.

While the listener is *healthy* — listening, and its connection answered within the last
``HEALTHY_SECONDS`` — the Redis store's cached checks skip the version query: what the process has
cached was read after the listener started (starting clears the cache) and before any change
announced since (a forget also keeps reads already under way from being cached). Otherwise (not
started yet, connection lost, disabled by ``SPENDGUARD_CHECK_CONTEXT_LISTEN=False``) every cached
check confirms the version with PostgreSQL as before.

What this trades: a change takes effect once its notification has been handled — normally well under a
millisecond after the commit, and never later than ``HEALTHY_SECONDS`` if the listener's connection
silently dies (the next liveness probe fails, and checks confirm by query again).
"""

import logging
import os
import threading
import time

import psycopg
from django.conf import settings
from django.db import connections

from budgets.services import check_context

logger = logging.getLogger(__name__)

CHANNEL = "spendguard_check_context"
APPLICATION_NAME = "spendguard check-context listener"
# The listener probes its connection every PROBE_SECONDS; it counts as healthy for HEALTHY_SECONDS
# after the last probe that answered.
PROBE_SECONDS = 0.5
HEALTHY_SECONDS = 1.5
RECONNECT_SECONDS = 1.0


class _Listener:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._listening = False
        self._last_probe = 0.0  # time.monotonic() of the last probe that answered
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected_times = 0  # how often it (re)connected: for operators' logs and tests

    def ensure_started(self) -> None:
        """Start this process's listener thread once (again in a forked child)."""
        if self._pid == os.getpid() or not settings.SPENDGUARD_CHECK_CONTEXT_LISTEN:
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._listening = False
            self._stop.clear()
            params = connections["default"].get_connection_params()
            self._thread = threading.Thread(
                target=self._run, args=(params,), name="check-context-listener", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the connection (tests; the thread dies with the process anyway)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pid = self._thread = None
        self._listening = False

    def healthy(self) -> bool:
        return self._listening and self._pid == os.getpid() and time.monotonic() - self._last_probe < HEALTHY_SECONDS

    def _run(self, params: dict) -> None:
        params = {**params, "autocommit": True, "application_name": APPLICATION_NAME}
        params.pop("cursor_factory", None)
        params.pop("prepare_threshold", None)
        while not self._stop.is_set():
            try:
                with psycopg.connect(**params) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Notifications sent while nobody listened are lost: forget everything cached.
                    check_context.check_context_clear()
                    self._last_probe = time.monotonic()
                    self._listening = True
                    self.connected_times += 1
                    logger.info("Listening for check context changes (connection %d).", self.connected_times)
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=PROBE_SECONDS):
                            self._forget(notify.payload)
                        conn.execute("SELECT 1")  # a connection that died quietly fails here
                        self._last_probe = time.monotonic()
                self._listening = False
            except Exception:  # any failure: stop trusting, reconnect
                self._listening = False
                logger.warning("Check context listener lost its connection; reconnecting.", exc_info=True)
                self._stop.wait(RECONNECT_SECONDS)

    @staticmethod
    def _forget(payload: str) -> None:
        try:
            organization_id = int(payload)
        except ValueError:
            check_context.check_context_clear()
            return
        check_context.forget(organization_id=organization_id)


listener = _Listener()
