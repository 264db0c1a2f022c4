"""Benchmark the rollup job: one organization-local day of ~300K ledger rows on PostgreSQL.

    python manage.py bench_rollups

Recreates a throwaway database (default ``spendguard_bench_rollups``), migrates it, loads one day of
ledger rows for one organization (Europe/Berlin, so the local day is not the UTC day) with COPY —
5 projects, 50 agents using 4 of 15 models each, 4 providers, sprints on 3 projects, ~10 %
embeddings, ~3 % errors, ~5 % unpriced — then times, ``--repeat`` times each (median, min, max):

- *incremental refresh*: ``rollups_refresh`` with the watermark set back before the day (what the
  5-minute job does when the whole day is new or a late row touched it);
- *rebuild*: ``rollups_rebuild`` of the day (the backfill path; the same per-day function);
- *portable path*: the rebuild through the ORM path used on SQLite (rows grouped in Python), on the
  same PostgreSQL data — the "before" of choosing INSERT ... SELECT.

Alongside wall seconds it prints the CPU seconds of the PostgreSQL backend and of this process (from
``/proc``) and the machine's CPU pressure: on a shared 2-core machine wall time moves with whatever
else runs, CPU time much less. Figures are printed, never asserted.
"""

import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management.base import BaseCommand

from costs import benchmarking as bench

MODELS = [
    ("gpt-4o", "openai"), ("gpt-4o-mini", "openai"), ("gpt-4.1", "openai"), ("o3-mini", "openai"),
    ("text-embedding-3-small", "openai"), ("claude-3-5-sonnet-20241022", "anthropic"),
    ("claude-3-5-haiku-20241022", "anthropic"), ("claude-sonnet-4", "anthropic"), ("gemini-2.0-flash", "google"),
    ("gemini-1.5-pro", "google"), ("gemini-2.5-pro", "google"), ("mistral-large", "mistral"),
    ("mistral-small", "mistral"), ("codestral", "mistral"), ("in-house-ft-1", ""),
]  # fmt: skip
TZ = "Europe/Berlin"
COLUMNS = (
    "organization_id", "project_id", "sprint_id", "agent_id", "request_id", "model", "provider", "operation",
    "status", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens", "reasoning_tokens",
    "is_batch", "latency_ms", "occurred_at", "received_at", "end_user", "tags", "prompt_hash", "cost_usd",
    "cost_source",
)  # fmt: skip


class Command(BaseCommand):
    help = "Benchmark rollups_refresh / rollups_rebuild of one day of ~300K ledger rows (prints figures)."

    def add_arguments(self, parser):
        parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/spendguard_bench_rollups")
        parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
        parser.add_argument("--rows", type=int, default=300_000)
        parser.add_argument("--repeat", type=int, default=5, help="runs of each phase (median, min, max)")
        parser.add_argument("--portable-repeat", type=int, default=3, help="runs of the portable path (0: skip)")
        parser.add_argument("--inside", action="store_true", help="internal: run against the benchmark database")

    def handle(self, *args, **opts):
        if opts["inside"]:
            return self._measure(opts)
        env = bench.app_env(database_url=opts["database_url"], redis_url=opts["redis_url"])
        self.stdout.write(f"Preparing {opts['database_url']} (migrate)…")
        bench.recreate_database(opts["database_url"])
        bench.manage("migrate", "-v0", env=env)
        # The measuring half runs in a process whose settings point at the benchmark database.
        args = [
            "bench_rollups", "--inside", "--rows", str(opts["rows"]), "--repeat", str(opts["repeat"]),
            "--portable-repeat", str(opts["portable_repeat"]),
        ]  # fmt: skip
        self.stdout.write(bench.manage(*args, env=env), ending="")

    # --- inside the benchmark database ----------------------------------------------------------

    def _measure(self, opts) -> None:
        from django.db import connection

        from costs.models import RollupState
        from costs.services import rollups

        w = self.stdout.write
        organization, day = self._load(opts["rows"])
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        until = datetime.now(UTC) - timedelta(seconds=settings.SPENDGUARD_ROLLUP_LAG_SECONDS + 1)

        def timed(run) -> tuple[float, float, float, int]:
            pg_before, py_before, started = bench._cpu_seconds([backend]), time.process_time(), time.perf_counter()
            buckets = run()
            wall = time.perf_counter() - started
            return wall, bench._cpu_seconds([backend]) - pg_before, time.process_time() - py_before, buckets

        def refresh() -> int:
            RollupState.objects.filter(organization=organization).update(rolled_until=datetime(2000, 1, 1, tzinfo=UTC))
            return timed(lambda: rollups.rollups_refresh(organization_id=organization.pk, until=until).buckets)

        def rebuild() -> tuple:
            return timed(lambda: rollups.rollups_rebuild(organization_id=organization.pk, start=day, end=day).buckets)

        def portable() -> tuple:
            connection.vendor = "portable"
            try:
                return rebuild()
            finally:
                connection.vendor = "postgresql"

        w(f"CPU pressure before: {_pressure()}")
        phases = [("incremental refresh", refresh, opts["repeat"]), ("rebuild (backfill)", rebuild, opts["repeat"])]
        if opts["portable_repeat"]:
            phases.append(("portable path (ORM + Python)", portable, opts["portable_repeat"]))
        for label, run, repeat in phases:
            runs = [run() for _ in range(repeat)]
            walls = [r[0] for r in runs]
            w(
                f"{label:29}: median {statistics.median(walls):.3f} s (min {min(walls):.3f}, max {max(walls):.3f}; "
                f"{repeat} runs) | CPU median: postgres {statistics.median(r[1] for r in runs):.2f} s, "
                f"python {statistics.median(r[2] for r in runs):.2f} s | buckets written {runs[-1][3]}"
            )
        w(f"CPU pressure after : {_pressure()}")

    def _load(self, rows: int):
        from django.db import connection

        from costs.models import Agent, Organization, Project, Sprint, UsageRecord

        tz = ZoneInfo(TZ)
        day = datetime.now(tz).date() - timedelta(days=1)  # yesterday, local: every row is past the lag
        organization = Organization.objects.create(name="Bench", slug="bench", timezone=TZ)
        projects = [Project.objects.create(organization=organization, name=f"P{i}", slug=f"p{i}") for i in range(5)]
        sprints = {
            p.pk: Sprint.objects.create(
                project=p, name="S", slug="s", start_date=day - timedelta(days=3), end_date=day + timedelta(days=3)
            )
            for p in projects[:3]
        }
        agents = [Agent.objects.create(project=projects[i % 5], name=f"agent-{i}") for i in range(50)]
        midnight = datetime.combine(day, datetime.min.time(), tzinfo=tz).astimezone(UTC)
        rng = random.Random(6)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY {UsageRecord._meta.db_table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for i in range(rows):
                    copy.write_row(_row(i, rng, organization.pk, agents, sprints, midnight))
            cursor.execute(f"ANALYZE {UsageRecord._meta.db_table}")
        self.stdout.write(
            f"Loaded {rows:,} ledger rows for {day} ({TZ}) with COPY in {time.perf_counter() - started:.1f} s "
            f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)"
        )
        return organization, day


def _row(i: int, rng: random.Random, organization_id: int, agents, sprints, midnight: datetime) -> tuple:
    agent = agents[i % len(agents)]
    model, provider = MODELS[(agent.pk * 3 + rng.randrange(4)) % len(MODELS)]
    embedding = rng.random() < 0.1
    occurred_at = midnight + timedelta(seconds=rng.uniform(0, 86_399))
    prompt = rng.randrange(50, 8000)
    cached = prompt // 2 if rng.random() < 0.3 else 0
    completion = 0 if embedding else rng.randrange(10, 2000)
    unpriced = rng.random() < 0.05
    cost = None if unpriced else Decimal(prompt * 25 + completion * 100).scaleb(-7)
    return (
        organization_id, agent.project_id, sprints.get(agent.project_id).pk if agent.project_id in sprints else None,
        agent.pk, f"bench-{i}", model, provider, "embedding" if embedding else "chat",
        "error" if rng.random() < 0.03 else "success", prompt, completion, cached, 0,
        completion // 10 if model == "o3-mini" else 0, False, rng.randrange(100, 20_000), occurred_at,
        occurred_at + timedelta(seconds=rng.expovariate(1 / 5)), "", "{}", "", cost,
        "unpriced" if unpriced else "provided",
    )  # fmt: skip


def _pressure() -> str:
    try:
        with open("/proc/pressure/cpu") as f:
            return f.readline().strip()
    except OSError:
        return "n/a"
