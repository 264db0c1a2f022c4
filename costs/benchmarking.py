"""A small harness for benchmark commands: a throwaway PostgreSQL database, the app under gunicorn,
and a multi-process HTTP load generator over loopback that reports medians and tails.

Used by ``manage.py bench_ingest`` (and later benchmark commands). Figures are printed, never asserted:
speed targets are shown by running a command, not by timed tests.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
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
def gunicorn_server(*, env: dict[str, str], workers: int, threads: int, worker_class: str = "gthread") -> Iterator[int]:
    """Serve config.wsgi under gunicorn on a free port: gthread workers (keep-alive connections) by
    default; ``worker_class="sync"`` closes the connection after each response, so every request is
    accepted by whichever worker is free (gthread workers keep the connections they accepted, and
    with many keep-alive clients one worker may end up serving most of them)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "gunicorn", "config.wsgi:application",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--threads", str(threads), "--worker-class", worker_class,
        "--keep-alive", "30", "--log-level", "warning",
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


def _client(args: tuple) -> tuple[list[float], dict[int, int], float]:
    port, path, headers, bodies, start_at = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies, statuses = [], {}
    while time.time() < start_at:
        time.sleep(0.001)
    for body in bodies:
        t0 = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append((time.perf_counter() - t0) * 1000)
        statuses[response.status] = statuses.get(response.status, 0) + 1
    finished_at = time.time()
    conn.close()
    return latencies, statuses, finished_at


def run_load(
    *, port: int, path: str, api_key: str, clients: int, bodies_for: Callable[[int], list[bytes]]
) -> LoadResult:
    """POST pre-built bodies from ``clients`` processes at once (each with its own keep-alive
    connection); ``bodies_for(i)`` gives client i its bodies. Bodies are built before the clock starts."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    start_at = time.time() + 1.0
    work = [(port, path, headers, bodies_for(i), start_at) for i in range(clients)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(clients) as pool:
        async_result = pool.map_async(_client, work)
        results = async_result.get()
    wall = max(finished for _, _, finished in results) - start_at
    latencies = [ms for lat, _, _ in results for ms in lat]
    statuses: dict[int, int] = {}
    for _, st, _ in results:
        for code, n in st.items():
            statuses[code] = statuses.get(code, 0) + n
    return LoadResult(requests=len(latencies), wall_seconds=wall, latencies_ms=latencies, statuses=statuses)


def merge_statuses(results: list[LoadResult]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for result in results:
        for code, count in result.statuses.items():
            merged[code] = merged.get(code, 0) + count
    return merged


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
