"""The reporter: a bounded in-memory queue drained by one background thread in batches.

The agent's threads only ever append to the queue (``report``); when the queue is full the
records go straight to the spool file instead, so memory stays bounded and nothing waits on the
network. The thread sends a batch when ``batch_size`` records are waiting, ``flush_interval``
seconds after it last looked, or on ``flush()``; see :mod:`costs.client.transport` for what happens
per answer and :mod:`costs.client.spool` for how unsent usage survives.

While the server is unreachable the thread stops trying for a backoff period (doubling up to
``max_backoff``) and spools new batches directly; the first send after that period — or an
explicit ``flush()`` — tries again, and once one succeeds the spool is sent.
"""

import logging
import threading
import time
from collections import OrderedDict, deque

from costs.client.config import ClientConfig
from costs.client.spool import Spool
from costs.client.transport import REJECTED, SENT, UNREACHABLE, SendResult, Transport

logger = logging.getLogger("spendguard.client")

# Request ids remembered to drop a second report of one call (litellm reports text_completion twice).
_SEEN_MAX = 10_000
# Calls known to be in flight, so flush() can wait for their callbacks; older ones are given up
# (a stream nobody finishes reading never reports).
_IN_FLIGHT_MAX = 10_000
_IN_FLIGHT_MAX_AGE = 600.0


class Reporter:
    def __init__(self, config: ClientConfig, *, transport: Transport, spool: Spool) -> None:
        self._config = config
        self._transport = transport
        self.spool = spool
        self._lock = threading.Condition()
        self._queue: deque[dict] = deque()
        self._in_hand: list[dict] = []  # the batch the thread is sending
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._in_flight: OrderedDict[str, float] = OrderedDict()
        self._flush_requested = False
        self._stopping = False
        self._down_until = 0.0  # monotonic time before which the server is not tried again
        self._down_for = 0.0
        self._stats = {"reported": 0, "sent": 0, "spooled": 0, "rejected": 0}
        self._thread = threading.Thread(target=self._run, name="spendguard-reporter", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> dict:
        """Counts of records: reported by calls, sent to the server, written to the spool, refused
        by the server as invalid; ``dropped`` for the spool being full."""
        with self._lock:
            return {**self._stats, "dropped": self.spool.dropped}

    # --- the agent's side (never waits for I/O, except the spool when the queue is full) ------

    def call_started(self, call_id: str) -> None:
        with self._lock:
            self._in_flight[call_id] = time.monotonic()
            while len(self._in_flight) > _IN_FLIGHT_MAX:
                self._in_flight.popitem(last=False)

    def call_ended(self, call_id: str) -> None:
        with self._lock:
            self._in_flight.pop(call_id, None)
            self._lock.notify_all()

    def report(self, record: dict, *, call_id: str | None = None) -> None:
        """Queue one usage record (a second report of the same request id is ignored). The call
        stops counting as in flight once its record is queued or on disk."""
        with self._lock:
            request_id = record["request_id"]
            duplicate = request_id in self._seen
            if not duplicate:
                self._seen[request_id] = None
                if len(self._seen) > _SEEN_MAX:
                    self._seen.popitem(last=False)
                self._stats["reported"] += 1
            # Full queue, or closed (a late callback): disk, not memory.
            overflow = not duplicate and (self._stopping or len(self._queue) >= self._config.max_queue)
            if not duplicate and not overflow:
                self._queue.append(record)
            if not overflow:
                if call_id is not None:
                    self._in_flight.pop(call_id, None)
                self._lock.notify_all()
                return
        self._spool([record])
        if call_id is not None:
            self.call_ended(call_id)

    def wait_for_calls(self, timeout: float) -> bool:
        """Wait until every call known to be in flight has reported (litellm reports sync calls
        from its own threads, a little after they return). False if some have not by ``timeout``."""
        with self._lock:
            return self._wait(lambda: not self._live_in_flight(), time.monotonic() + timeout)

    def flush(self, timeout: float) -> bool:
        """Wait for calls still in flight to report, then send everything queued and the spool.
        True when all of it reached the server; False when some is in the spool or time ran out."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._wait(lambda: not self._live_in_flight(), deadline)
            self._flush_requested = True
            self._down_until = 0.0  # an explicit flush tries the server now
            self._lock.notify_all()
            done = self._wait(lambda: not self._flush_requested, deadline)
        return done and not self.spool.pending()

    def close(self, timeout: float) -> bool:
        """Send what is queued (one attempt per batch; what fails goes to the spool) and stop the
        thread. Returns False when it had to be abandoned after ``timeout`` (its records spooled)."""
        with self._lock:
            self._stopping = True
            self._flush_requested = True
            self._lock.notify_all()
        self._transport.interrupt()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        # Out of time (a send hangs): spool the rest. The batch in hand may also reach the server;
        # sending it again later is a replay, not a second charge.
        with self._lock:
            leftover = self._in_hand + list(self._queue)
            self._queue.clear()
        if leftover:
            self._spool(leftover)
        return False

    def _live_in_flight(self) -> bool:
        horizon = time.monotonic() - _IN_FLIGHT_MAX_AGE
        return any(started > horizon for started in self._in_flight.values())

    def _wait(self, predicate, deadline: float) -> bool:
        """Wait on the lock (held) until ``predicate()`` or ``deadline``."""
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._thread.is_alive():
                return predicate()
            self._lock.wait(remaining)
        return True

    # --- the reporting thread -----------------------------------------------------------------

    def _run(self) -> None:
        size = self._config.batch_size
        while True:
            with self._lock:
                self._lock.wait_for(
                    lambda: len(self._queue) >= size or self._flush_requested or self._stopping,
                    timeout=self._config.flush_interval,
                )
                self._in_hand = [self._queue.popleft() for _ in range(min(len(self._queue), size))]
                batch, flushing, stopping = self._in_hand, self._flush_requested, self._stopping
            try:
                if batch:
                    self._deliver(batch)
                if not stopping and (flushing or self._server_up()):
                    self._replay_spool()
            except Exception:  # never let the thread die: it is the only one sending
                logger.exception("Spendguard reporter: unexpected error; the batch is kept in the spool.")
                self._spool(batch)
            with self._lock:
                self._in_hand = []
                if flushing and not self._queue:
                    self._flush_requested = False
                self._lock.notify_all()
                if stopping and not self._queue:
                    return

    def _server_up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _spool(self, records: list[dict]) -> None:
        try:
            written = self.spool.append(records)
        except OSError:
            logger.exception("Spendguard: cannot write the spool; %d usage record(s) are lost.", len(records))
            return
        with self._lock:
            self._stats["spooled"] += written

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self._stats[key] += n

    def _deliver(self, batch: list[dict]) -> None:
        if not self._server_up() or self._send(batch) == UNREACHABLE:
            self._spool(batch)

    def _send(self, batch: list[dict]) -> str:
        """Send one batch; a refused batch is split so one bad record cannot sink the others.
        Returns SENT, REJECTED (a single record, then dropped) or UNREACHABLE."""
        config = self._config
        result = self._transport.send_usage(
            batch,
            attempts=1 if self._stopping else config.retries,
            backoff=config.backoff,
            max_backoff=config.max_backoff,
        )
        if result.outcome == UNREACHABLE:
            self._mark_down(result)
            return UNREACHABLE
        self._mark_up()
        if result.outcome == SENT:
            self._count("sent", len(batch))
            return SENT
        if len(batch) == 1:
            self._count("rejected", 1)
            logger.error(
                "Spendguard refused usage record %r (HTTP %s, %s); it is dropped.",
                batch[0].get("request_id"),
                result.status,
                result.detail,
            )
            return REJECTED
        for record in batch:
            if self._send([record]) == UNREACHABLE:
                return UNREACHABLE  # the caller spools the whole batch; those sent come back as replays
        return SENT

    def _replay_spool(self) -> None:
        while self._server_up():
            claimed = self.spool.claim()
            if claimed is None:
                return
            records = self.spool.read(claimed)
            size = self._config.batch_size
            for start in range(0, len(records), size):
                if self._send(records[start : start + size]) == UNREACHABLE:
                    self.spool.give_back(claimed, records[start:])
                    return
            self.spool.discard(claimed)
            logger.info("Spendguard: sent %d spooled usage record(s) from %s.", len(records), claimed.name)

    def _mark_up(self) -> None:
        if self._down_for:
            logger.warning("Spendguard server reachable again at %s; sending the spool.", self._config.url)
        self._down_until, self._down_for = 0.0, 0.0

    def _mark_down(self, result: SendResult) -> None:
        config = self._config
        if not self._down_for:
            logger.warning(
                "Spendguard server unreachable at %s (%s): usage is spooled to %s and sent when it is back.",
                config.url,
                result.detail or f"HTTP {result.status}",
                self.spool.directory,
            )
        self._down_for = min(config.max_backoff, max(config.backoff, self._down_for * 2))
        self._down_until = time.monotonic() + self._down_for
