"""A small harness for benchmark commands: a throwaway PostgreSQL database, the app under gunicorn,
and a lean HTTP load generator over loopback (raw keep-alive sockets in one process, closed loop or
at a fixed offered rate) that reports medians and tails.

Used by ``manage.py bench_ingest`` (and later benchmark commands). Figures are printed, never asserted:
speed targets are shown by running a command, not by timed tests.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

REPO_ROOT = Path(settings.BASE_DIR)


def recreate_database(database_url: str) -> None:
    """Drop and create the database named in ``database_url`` (PostgreSQL only)."""
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name.replace("_", "").isalnum():
        raise ValueError(f"Refusing unusual database name {name!r}")
    maintenance = parts._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def app_env(*, database_url: str, redis_url: str) -> dict[str, str]:
    """Environment for a production-like app process against the benchmark services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY="benchmark-only-secret-key-not-for-production-0123456789",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(*args: str, env: dict[str, str]) -> str:
    """Run ``manage.py <args>`` in a subprocess; return its stdout."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gunicorn_server(
    *, env: dict[str, str], workers: int, threads: int, worker_class: str = "gthread", reuse_port: bool = False
) -> Iterator[int]:
    """Serve config.wsgi under gunicorn on a free port: gthread workers (keep-alive connections) by
    default; ``worker_class="sync"`` closes the connection after each response, so every request is
    accepted by whichever worker is free (gthread workers keep the connections they accepted, and
    with many keep-alive clients one worker may end up serving most of them — unless ``reuse_port``
    gives each worker its own listening socket, and the kernel spreads the connections over them)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "gunicorn", "config.wsgi:application",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--threads", str(threads), "--worker-class", worker_class,
        "--keep-alive", "30", "--log-level", "warning",
        # Each worker listens on its own SO_REUSEPORT socket: the kernel spreads connections over them.
        *(["--reuse-port"] if reuse_port else []),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("gunicorn exited during start-up")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/v1/schema/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not answer within 60 s") from None
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class LoadResult:
    requests: int
    wall_seconds: float
    latencies_ms: list[float]
    statuses: dict[int, int]
    # CPU milliseconds per request of each process group measured (see CpuMeter), when measured.
    cpu_ms: dict[str, float] | None = None

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.wall_seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


class _Connection:
    """One client's keep-alive HTTP/1.1 connection, driven by :func:`_drive` (non-blocking).

    Raw sockets and pre-encoded requests instead of ``http.client``: the load generator shares the
    machine's two cores with gunicorn and PostgreSQL, so every microsecond it spends per request is
    taken from the server it measures. A server that answers ``Connection: close`` (gunicorn's sync
    workers) gets a new connection for the next request, and that connect is part of the latency."""

    __slots__ = ("buffer", "close", "due", "latencies", "next", "port", "requests", "sent_at", "sock", "statuses")

    def __init__(self, port: int, requests: list[bytes]) -> None:
        self.port, self.requests, self.next = port, requests, 0
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.sent_at = self.due = 0.0
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.close = False

    def send(self, due: float) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sent_at, self.due = time.perf_counter(), due
        self.sock.sendall(self.requests[self.next])
        self.next += 1
        return self.sock

    def receive(self) -> bool:
        """Read what arrived; True when a whole response is in (then it is accounted)."""
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection before answering")
        self.buffer += chunk
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        head = self.buffer[:head_end].decode("latin-1").lower()
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name == "content-length":
                length = int(value)
            elif name == "connection":
                self.close = value.strip() == "close"
        if len(self.buffer) < head_end + 4 + length:
            return False
        status = int(head[9:12])
        # Latency from when the request was due (open loop) or sent (closed loop): a request held
        # back by a slow previous answer counts its wait (no coordinated omission).
        self.latencies.append((time.perf_counter() - min(self.sent_at, self.due)) * 1000)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.buffer = b""
        if self.close:
            self.sock.close()
            self.sock, self.close = None, False
        return True


def _drive(args: tuple) -> tuple[list[float], dict[int, int], float]:
    """Run connections to completion in one process: closed loop (each sends its next request as
    soon as the previous is answered) or, with ``interval``, open loop (connection i's request k
    is due at ``start + (k + i / n) * interval``)."""
    port, request_lists, start_at, interval = args
    conns = [_Connection(port, requests) for requests in request_lists]
    selector = selectors.DefaultSelector()
    while time.time() < start_at:
        time.sleep(0.0005)
    t0 = time.perf_counter()
    count = len(conns)

    def due(i: int, conn: _Connection) -> float:
        return t0 if interval is None else t0 + (conn.next + i / count) * interval

    waiting: dict[int, float] = {}  # connection index -> when its next request is due
    for i, conn in enumerate(conns):
        waiting[i] = due(i, conn)
    busy = 0
    while waiting or busy:
        now = time.perf_counter()
        for i in [i for i, at in waiting.items() if at <= now]:
            del waiting[i]
            conn = conns[i]
            sock = conn.send(now if interval is None else due(i, conn))
            selector.register(sock, selectors.EVENT_READ, i)
            busy += 1
        timeout = None
        if waiting:
            timeout = max(0.0, min(waiting.values()) - time.perf_counter())
            if busy == 0:
                time.sleep(timeout)
                continue
        for key, _ in selector.select(timeout):
            i = key.data
            conn = conns[i]
            sock = conn.sock
            if conn.receive():
                selector.unregister(sock)
                busy -= 1
                if conn.next < len(conn.requests):
                    waiting[i] = due(i, conn)
    finished_at = time.time()
    latencies = [ms for conn in conns for ms in conn.latencies]
    statuses: dict[int, int] = {}
    for conn in conns:
        for code, n in conn.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    for conn in conns:
        if conn.sock is not None:
            conn.sock.close()
    return latencies, statuses, finished_at


def run_load(
    *,
    port: int,
    path: str,
    api_key: str,
    clients: int,
    bodies_for: Callable[[int], list[bytes]],
    rate: float | None = None,
    processes: int = 1,
) -> LoadResult:
    """POST pre-built bodies over ``clients`` concurrent keep-alive connections; ``bodies_for(i)``
    gives client i its bodies. Closed loop by default (every client sends again as soon as it is
    answered: the most the server can do); with ``rate`` (requests/s in all), open loop: requests
    are due on a fixed schedule and their latency counts from when they were due, so the tail shows
    what callers arriving at that rate would see. Requests are encoded before the clock starts; the
    connections are spread over ``processes`` load processes (one is enough below ~10,000 requests/s
    and leaves the cores to the server)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {api_key}\r\n"
    ).encode()
    requests = [[head + b"Content-Length: %d\r\n\r\n" % len(b) + b for b in bodies_for(i)] for i in range(clients)]
    interval = None if rate is None else clients / rate  # per connection, seconds between requests
    start_at = time.time() + 1.0
    groups = [requests[p::processes] for p in range(processes)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        results = pool.map(_drive, [(port, group, start_at, interval) for group in groups if group])
    wall = max(finished for _, _, finished in results) - start_at
    latencies = [ms for lat, _, _ in results for ms in lat]
    statuses: dict[int, int] = {}
    for _, st, _ in results:
        for code, n in st.items():
            statuses[code] = statuses.get(code, 0) + n
    return LoadResult(requests=len(latencies), wall_seconds=wall, latencies_ms=latencies, statuses=statuses)


class CpuMeter:
    """CPU time (user + system, from ``/proc``; Linux only) spent by groups of processes while a
    load runs: the figure that stays comparable on a shared, noisy machine, where requests/s and
    tails move with whatever else runs. ``groups`` maps a name to a function returning the pids
    to count, asked before and after each measured run (a pid that exits in between counts 0)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups

    def measure(self, load: Callable[[], LoadResult]) -> LoadResult:
        pids = {name: find() for name, find in self.groups.items()}
        before = {name: _cpu_seconds(group) for name, group in pids.items()}
        children = os.times()
        result = load()
        after = {name: _cpu_seconds(group) for name, group in pids.items()}
        done = os.times()
        used = {name: after[name] - before[name] for name in pids}
        # The load generator runs in forked pool processes: children of this one.
        used["load generator"] = (
            done.children_user + done.children_system - children.children_user - children.children_system
        )
        result.cpu_ms = {name: seconds * 1000 / max(1, result.requests) for name, seconds in used.items()}
        return result


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def pids_with_cmdline(fragment: str) -> list[int]:
    """Processes whose command line contains ``fragment`` (e.g. gunicorn's ``--bind`` address)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if fragment.encode() in cmdline.read().replace(b"\0", b" "):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def postgres_backend_pids(database_url: str) -> list[int]:
    """The PostgreSQL server processes serving connections to the database of ``database_url``
    (only the benchmark's own: other sessions' backends on the same server are not counted)."""
    import psycopg

    name = urlsplit(database_url).path.lstrip("/")
    maintenance = urlsplit(database_url)._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [name]).fetchall()
    return [row[0] for row in rows]


def merge_statuses(results: list[LoadResult]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for result in results:
        for code, count in result.statuses.items():
            merged[code] = merged.get(code, 0) + count
    return merged


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
