"""Benchmark the report pages and the reports API on a 10-million-row ledger (issue 6, "Speed").

    python manage.py bench_reports                 # 10M rows over 90 days; --rows, --days, --repeat
    python manage.py bench_reports --keep          # keep the database for inspection

Recreates a throwaway database (default ``spendguard_bench_reports``; never the dev or test one),
migrates it and, in a process whose production settings point at it:

1. creates one organization (Europe/Berlin, so local days are not UTC days) with 5 projects, 50
   agents, two-week sprints on 3 projects, 15 models (14 priced, one in-house model unpriced) and a
   staff user and an organization API key;
2. loads ``--rows`` ledger rows over ``--days`` organization-local days with realistic skew —
   usage growing ~5x over the range, weekends at 30 %, 70 % of the traffic in business hours, agents
   Zipf-like (the busiest ~13x the median), each agent on 4 of the 15 models (~5 % embeddings, ~3 %
   errors, ~3 % unpriced; the command prints the mix) — one ``INSERT … SELECT … FROM
   generate_series`` per day, generated inside PostgreSQL with every index and constraint of the
   real table in place (they are part of the real cost). Measured on 300K rows it beat COPY from a
   Python generator (``bench_rollups``' loader) by ~1.5x; 10M rows take ~11 minutes here;
3. rolls everything up with the real ``rollups_refresh(until=…)``, leaving the last ``--tail`` rows
   received after the watermark, so every report merges rollups with a ledger tail as in production;
4. creates budgets (organization, project, sprint, agent, per-model; each starts its live period
   row, as ``budget_create`` does in production), then times
   each page (Django's test Client, staff session) and API endpoint (API key), in-process — server
   time, no network — ``--repeat`` times after a warm-up: median (judged against the target), p95, max;
5. times a raw ``GROUP BY`` of the whole ledger for contrast, a rebuild of the busiest day, and the
   refresh that rolls the tail up (what the 5-minute job does).

The database is dropped at the end unless ``--keep``. Figures are printed, never asserted. The
machine is shared: CPU pressure (``/proc/pressure/cpu``) is printed before and after.
"""

import math
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.core.management.base import BaseCommand

from costs import benchmarking as bench

TZ = "Europe/Berlin"
TARGET_MS = 150.0
REFRESH_TARGET_S = 2.0
PROJECTS = ("search", "support", "billing", "research", "ops")
SPRINT_PROJECTS = 3
AGENTS = 50
# (model, provider, input, cached input, output USD per 1M tokens; None: unpriced, embedding?, reasoning?)
MODELS = (
    ("gpt-4o", "openai", "2.5", "1.25", "10", False, False),
    ("gpt-4o-mini", "openai", "0.15", "0.075", "0.6", False, False),
    ("gpt-4.1", "openai", "2", "0.5", "8", False, False),
    ("o3-mini", "openai", "1.1", "0.55", "4.4", False, True),
    ("text-embedding-3-small", "openai", "0.02", "0.02", "0", True, False),
    ("claude-3-5-sonnet-20241022", "anthropic", "3", "0.3", "15", False, False),
    ("claude-3-5-haiku-20241022", "anthropic", "0.8", "0.08", "4", False, False),
    ("claude-sonnet-4", "anthropic", "3", "0.3", "15", False, True),
    ("gemini-2.0-flash", "google", "0.1", "0.025", "0.4", False, False),
    ("gemini-1.5-pro", "google", "1.25", "0.3125", "5", False, False),
    ("gemini-2.5-pro", "google", "1.25", "0.31", "10", False, True),
    ("mistral-large", "mistral", "2", "2", "6", False, False),
    ("mistral-small", "mistral", "0.2", "0.2", "0.6", False, False),
    ("codestral", "mistral", "0.3", "0.3", "0.9", False, False),
    ("in-house-ft-1", "", None, None, None, False, False),
)

# One organization-local day of ledger rows, generated in PostgreSQL. The innermost SELECT draws
# the random numbers (volatile, so computed once per row); the middle one picks agent, model, time
# and tokens; the outer one prices them. Consistent with the table's CHECK constraints: cached <=
# prompt, reasoning <= completion, cost null exactly when unpriced; request ids increase (the
# unique (organization, request_id) index is appended to, as with real ingest).
INSERT_DAY = """
INSERT INTO costs_usagerecord (
    organization_id, project_id, sprint_id, agent_id, request_id, model, provider, operation, status,
    prompt_tokens, completion_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, is_batch,
    latency_ms, occurred_at, received_at, end_user, tags, prompt_hash, cost_source, price_id,
    input_cost_usd, cached_input_cost_usd, output_cost_usd, computed_cost_usd, cost_usd
)
SELECT %(organization)s, p.project_id, p.sprint_id, p.agent_id, p.request_id, p.model, p.provider,
       p.operation, p.status, p.prompt, p.completion, p.cached, 0, p.reasoning, false, p.latency,
       p.occurred_at, p.received_at, '', p.tags, '',
       CASE WHEN p.priced THEN 'computed' ELSE 'unpriced' END,
       p.price_id, p.input_cost, p.cached_cost, p.output_cost,
       p.input_cost + p.cached_cost + p.output_cost, p.input_cost + p.cached_cost + p.output_cost
FROM (
    SELECT m.*,
           round((m.prompt - m.cached) * (%(input_rates)s::numeric[])[m.mi] / 1000000, 12) AS input_cost,
           round(m.cached * (%(cached_rates)s::numeric[])[m.mi] / 1000000, 12) AS cached_cost,
           round(m.completion * (%(output_rates)s::numeric[])[m.mi] / 1000000, 12) AS output_cost
    FROM (
        SELECT 'r' || to_char(%(offset)s + a.g, 'FM000000000') AS request_id,
               (%(agent_ids)s::bigint[])[a.ai] AS agent_id,
               (%(agent_projects)s::bigint[])[a.ai] AS project_id,
               (%(agent_sprints)s::bigint[])[a.ai] AS sprint_id,
               a.mi,
               (%(models)s::text[])[a.mi] AS model,
               (%(providers)s::text[])[a.mi] AS provider,
               (%(price_ids)s::bigint[])[a.mi] AS price_id,
               (%(price_ids)s::bigint[])[a.mi] IS NOT NULL AS priced,
               CASE WHEN (%(embedding)s::bool[])[a.mi] THEN 'embedding' ELSE 'chat' END AS operation,
               CASE WHEN a.r_status < 0.03 THEN 'error' ELSE 'success' END AS status,
               a.prompt,
               CASE WHEN a.r_cache < 0.3 THEN a.prompt / 2 ELSE 0 END AS cached,
               a.completion,
               CASE WHEN (%(reasoning)s::bool[])[a.mi] THEN a.completion / 5 ELSE 0 END AS reasoning,
               100 + floor(a.r_latency * a.r_latency * 20000)::int AS latency,
               a.occurred_at,
               a.occurred_at + make_interval(secs => 0.2 + a.r_delay * 5) AS received_at,
               jsonb_build_object('feature', 'f' || (1 + floor(a.r_tag * a.r_tag * 8)::int)) AS tags
        FROM (
            SELECT r.g, r.r_status, r.r_cache, r.r_latency, r.r_delay, r.r_tag,
                   r.ai,
                   1 + ((r.ai - 1) * 3 + floor(4 * power(r.r_model, 1.5))::int) %% %(model_count)s AS mi,
                   50 + floor(8000 * r.r_prompt * r.r_prompt)::bigint AS prompt,
                   CASE WHEN (%(embedding)s::bool[])[1 + ((r.ai - 1) * 3 + floor(4 * power(r.r_model, 1.5))::int)
                                                     %% %(model_count)s]
                        THEN 0 ELSE 10 + floor(2000 * r.r_completion)::bigint END AS completion,
                   %(day_start)s::timestamptz + make_interval(secs => %(span)s * CASE
                       WHEN %(business)s AND r.r_hour < 0.7 THEN (8 + 11 * r.r_time) / 24
                       ELSE r.r_time END) AS occurred_at
            FROM (
                SELECT g, 1 + floor(%(agent_count)s * power(random(), 2.2))::int AS ai,
                       random() AS r_model, random() AS r_hour, random() AS r_time, random() AS r_prompt,
                       random() AS r_completion, random() AS r_cache, random() AS r_status,
                       random() AS r_latency, random() AS r_delay, random() AS r_tag
                FROM generate_series(1, %(rows)s) AS g
            ) AS r
        ) AS a
    ) AS m
) AS p
"""


class Command(BaseCommand):
    help = "Benchmark the report pages and reports API on a 10M-row ledger (prints figures)."

    def add_arguments(self, parser):
        parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/spendguard_bench_reports")
        parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
        parser.add_argument("--rows", type=int, default=10_000_000, help="ledger rows to load")
        parser.add_argument("--days", type=int, default=90, help="organization-local days they span (to today)")
        # The most tail a report reads in production at the issue's ~300K rows a day: the rollup job
        # runs every 5 minutes and rolls up to 60 s ago, so up to ~6 minutes of rows (~1,250).
        parser.add_argument(
            "--tail", type=int, default=1_250, help="rows left received after the watermark (default: ~6 min)"
        )
        parser.add_argument("--repeat", type=int, default=20, help="timed requests per page / endpoint")
        parser.add_argument("--raw-repeat", type=int, default=3, help="runs of the raw ledger GROUP BY (0: skip)")
        parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
        parser.add_argument(
            "--reuse", action="store_true", help="time against a database kept by --keep (no migrate, no load)"
        )
        parser.add_argument("--inside", action="store_true", help="internal: run against the benchmark database")

    def handle(self, *args, **opts):
        if opts["inside"]:
            return self._measure(opts)
        url = opts["database_url"]
        env = bench.app_env(database_url=url, redis_url=opts["redis_url"])
        if not opts["reuse"]:
            self.stdout.write(f"Preparing {url} (migrate)…")
            bench.recreate_database(url)
        try:
            if not opts["reuse"]:
                bench.manage("migrate", "-v0", env=env)
            args = ["--rows", "--days", "--tail", "--repeat", "--raw-repeat"]
            argv = [str(v) for name in args for v in (name, opts[name[2:].replace("-", "_")])]
            argv += ["--reuse"] if opts["reuse"] else []
            # The measuring half runs in a process whose settings point at the benchmark database;
            # its output streams (the load takes minutes).
            self.stdout.flush()
            done = subprocess.run(
                [sys.executable, "manage.py", "bench_reports", "--inside", *argv],
                cwd=bench.REPO_ROOT,
                env=env,
                check=False,
            )
            if done.returncode:
                self.stderr.write(f"The benchmark failed (exit status {done.returncode}).")
        finally:
            if opts["keep"]:
                self.stdout.write(f"Kept {url}.")
            else:
                _drop_database(url)
                self.stdout.write(f"Dropped {url}.")

    # --- inside the benchmark database ----------------------------------------------------------

    def _measure(self, opts) -> None:
        from django.db import transaction

        from costs.models import UsageRecord

        w = self._say
        w(f"CPU pressure before: {_pressure()}  ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
        if opts["reuse"]:
            world = _World.existing()
            opts["rows"] = UsageRecord.objects.filter(organization=world.organization).count()
            busiest = world.busiest_day()
            opts["days"], load_seconds, refresh_seconds = world.days, None, None
        else:
            world = _World.create(days=opts["days"])
            load_seconds, busiest = world.load(opts["rows"], say=w)
            refresh_seconds, buckets = world.rollup(tail=opts["tail"])
        tail_rows = UsageRecord.objects.filter(
            organization=world.organization, received_at__gte=world.watermark()
        ).count()
        w(f"Ledger: {opts['rows']:,} rows; {_relation_sizes()}")
        if refresh_seconds is not None:
            w(
                f"Rolled up {opts['rows'] - tail_rows:,} rows with rollups_refresh in {refresh_seconds:.1f} s "
                f"({buckets:,} daily buckets); tail left after the watermark: {tail_rows:,} rows"
            )
        else:
            w(f"Reused: tail after the watermark {tail_rows:,} rows")
        if not world.organization.budgets.exists():  # a kept database from a run that stopped early
            world.create_budgets(say=w)
        w(_mix(world.organization, world.first_day, world.today))

        missing = world.budgets_without_period_row()
        w(
            f"Budgets without a live period row (just created, or no usage settled against them yet): "
            f"{', '.join(b.name for b in missing) or 'none'}"
        )
        requests = world.requests()
        results = []
        for label, client, path, params in requests:
            results.append((label, *_time_request(client, path, params, repeat=opts["repeat"])))
        if missing:
            # What the same pages cost once usage has settled against every budget (seconds after a
            # period starts on a busy organization): each then has its live row. Rolled back, so a
            # --reuse run finds the same state.
            with transaction.atomic():
                for budget in missing:
                    world.period_row_create(budget)
                for label, client, path, params in requests:
                    if "budgets" in label or "page" in label:
                        label = f"{label} [all period rows]"
                        results.append((label, *_time_request(client, path, params, repeat=opts["repeat"])))
                transaction.set_rollback(True)
        raw = world.time_raw_group_by(opts["raw_repeat"]) if opts["raw_repeat"] else None
        rebuild = world.time_rebuild(busiest[0])
        tail_refresh = world.time_tail_refresh()

        w("")
        w(
            f"{opts['rows']:,} ledger rows, {opts['days']} days; in-process server time (test Client, "
            f"production settings), {opts['repeat']} runs after a warm-up"
        )
        w(f"{'what':48} {'status':>6} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'target':>9}  result")
        for label, status, samples in results:
            med, p95 = statistics.median(samples), _p95(samples)
            # Judged on the median (the figure we quote; this VM's CPU is shared and its tail moves
            # with the neighbours), and a p95 over the target is said next to it.
            verdict = "PASS" if status == 200 and med <= TARGET_MS else "FAIL"
            verdict += " (p95 over)" if p95 > TARGET_MS else ""
            w(
                f"{label:48} {status:>6} {med:>10.1f} {p95:>8.1f} {max(samples):>8.1f} "
                f"{f'<= {TARGET_MS:.0f}':>9}  {verdict}"
            )
        if raw:
            w(
                f"{'raw GROUP BY project over the whole ledger':48} {'':>6} {statistics.median(raw):>10.1f} "
                f"{max(raw):>8.1f} {max(raw):>8.1f} {'contrast':>9}  ({len(raw)} runs)"
            )
        day, day_rows = busiest
        for label, seconds in (
            (f"rollup rebuild of {day} ({day_rows:,} rows)", rebuild),
            (f"rollup refresh of the tail ({tail_rows:,} rows)", [tail_refresh]),
        ):
            med = statistics.median(seconds) * 1000
            verdict = "PASS" if max(seconds) <= REFRESH_TARGET_S else "FAIL"
            w(
                f"{label:48} {'':>6} {med:>10.1f} {max(seconds) * 1000:>8.1f} {max(seconds) * 1000:>8.1f} "
                f"{f'<= {REFRESH_TARGET_S * 1000:.0f}':>9}  {verdict}"
            )
        if load_seconds is not None:
            w(f"(load: {opts['rows'] / load_seconds:,.0f} rows/s; initial roll-up {refresh_seconds:.1f} s)")
        w(f"CPU pressure after : {_pressure()}")

    def _say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()


class _World:
    """The benchmark organization, its hierarchy, prices, callers and budgets."""

    def __init__(self, **attrs) -> None:
        self.__dict__.update(attrs)

    @classmethod
    def create(cls, *, days: int) -> "_World":
        from django.contrib.auth import get_user_model

        from costs.models import Agent, Organization, Project, Sprint
        from costs.services.api_keys import api_key_create
        from pricing.models import ModelPrice

        tz = ZoneInfo(TZ)
        now = datetime.now(UTC)
        today = now.astimezone(tz).date()
        first_day = today - timedelta(days=days - 1)
        organization = Organization.objects.create(name="Bench", slug="bench", timezone=TZ)
        projects = [Project.objects.create(organization=organization, name=s.title(), slug=s) for s in PROJECTS]
        sprints: dict[int, list] = {}
        for project in projects[:SPRINT_PROJECTS]:
            start, number = first_day - timedelta(days=5), 1
            while start <= today + timedelta(days=14):
                sprint = Sprint.objects.create(
                    project=project, name=f"Sprint {number}", slug=f"s{number}", start_date=start,
                    end_date=start + timedelta(days=13),
                )  # fmt: skip
                sprints.setdefault(project.pk, []).append(sprint)
                start, number = start + timedelta(days=14), number + 1
        agents = [
            Agent.objects.create(project=projects[i % len(projects)], name=f"agent-{i:02d}") for i in range(AGENTS)
        ]
        effective_from = datetime.combine(first_day - timedelta(days=30), datetime.min.time(), tzinfo=UTC)
        prices = {}
        for model, provider, input_rate, cached_rate, output_rate, embedding, _ in MODELS:
            if input_rate is not None:
                prices[model] = ModelPrice.objects.create(
                    model=model, provider=provider, mode="embedding" if embedding else "chat",
                    input_usd_per_mtok=Decimal(input_rate), output_usd_per_mtok=Decimal(output_rate),
                    cache_read_usd_per_mtok=Decimal(cached_rate), effective_from=effective_from,
                )  # fmt: skip
        staff = get_user_model().objects.create_user("bench-staff", is_staff=True, is_superuser=True)
        _, secret = api_key_create(organization=organization, name="bench reports")
        return cls(
            tz=tz, now=now, today=today, first_day=first_day, days=days, organization=organization,
            projects=projects, sprints=sprints, agents=agents, prices=prices, staff=staff, secret=secret,
        )  # fmt: skip

    @classmethod
    def existing(cls) -> "_World":
        """The world a ``--keep`` run left (a new API key: only its hash was stored)."""
        from django.contrib.auth import get_user_model

        from costs.models import Agent, DailyRollup, Organization, Sprint
        from costs.services.api_keys import api_key_create

        organization = Organization.objects.get(slug="bench")
        tz = organization.tzinfo
        now = datetime.now(UTC)
        first_day = DailyRollup.objects.filter(organization=organization).order_by("day").values_list("day", flat=True)
        first_day = first_day.first()
        agents = list(Agent.objects.filter(project__organization=organization).order_by("name"))
        projects = list(organization.projects.order_by("pk"))
        sprints: dict[int, list] = {}
        for sprint in Sprint.objects.filter(project__organization=organization).order_by("start_date"):
            sprints.setdefault(sprint.project_id, []).append(sprint)
        _, secret = api_key_create(organization=organization, name="bench reports (reuse)")
        today = now.astimezone(tz).date()
        return cls(
            tz=tz, now=now, today=today, first_day=first_day, days=(today - first_day).days + 1,
            organization=organization, projects=projects, sprints=sprints, agents=agents,
            staff=get_user_model().objects.get(username="bench-staff"), secret=secret,
        )  # fmt: skip

    def busiest_day(self) -> tuple[date, int]:
        from django.db.models import Sum

        from costs.models import DailyRollup

        row = (
            DailyRollup.objects.filter(organization=self.organization, day__lt=self.today)
            .values("day")
            .annotate(rows=Sum("requests"))
            .order_by("-rows")
            .first()
        )
        return row["day"], row["rows"]

    def local_midnight(self, day: date) -> datetime:
        return datetime.combine(day, datetime.min.time(), tzinfo=self.tz).astimezone(UTC)

    def sprint_of(self, project_id: int, day: date):
        for sprint in self.sprints.get(project_id, []):
            if sprint.start_date <= day <= sprint.end_date:
                return sprint.pk
        return None

    # --- the ledger ---------------------------------------------------------------------------

    def day_counts(self, rows: int) -> list[tuple[date, int]]:
        """Rows per local day: exponential growth (~5x over the range), weekends at 30 %, today's
        share cut to the part of the day gone by."""
        days = [self.first_day + timedelta(days=n) for n in range(self.days)]
        elapsed = (self.now - self.local_midnight(self.today)).total_seconds() / 86_400
        weights = []
        for n, day in enumerate(days):
            weight = math.exp(1.6 * n / max(1, self.days - 1)) * (0.3 if day.weekday() >= 5 else 1.0)
            weights.append(weight * (elapsed if day == self.today else 1.0))
        total = sum(weights)
        counts = [int(rows * weight / total) for weight in weights]
        counts[-2 if self.days > 1 else -1] += rows - sum(counts)  # rounding: yesterday takes the rest
        return list(zip(days, counts, strict=True))

    def load(self, rows: int, *, say) -> tuple[float, tuple[date, int]]:
        from django.db import connection

        agent_ids = [a.pk for a in self.agents]
        common = {
            "organization": self.organization.pk,
            "agent_ids": agent_ids,
            "agent_projects": [a.project_id for a in self.agents],
            "agent_count": len(self.agents),
            "model_count": len(MODELS),
            "models": [m[0] for m in MODELS],
            "providers": [m[1] for m in MODELS],
            "price_ids": [self.prices[m[0]].pk if m[0] in self.prices else None for m in MODELS],
            "input_rates": [None if m[2] is None else Decimal(m[2]) for m in MODELS],
            "cached_rates": [None if m[3] is None else Decimal(m[3]) for m in MODELS],
            "output_rates": [None if m[4] is None else Decimal(m[4]) for m in MODELS],
            "embedding": [m[5] for m in MODELS],
            "reasoning": [m[6] for m in MODELS],
        }
        counts = self.day_counts(rows)
        say(
            f"Loading {rows:,} ledger rows over {self.days} local days ({self.first_day} .. {self.today}, {TZ}) "
            f"with INSERT … SELECT generate_series, one statement per day, all indexes in place…"
        )
        started, offset = time.perf_counter(), 0
        with connection.cursor() as cursor:
            # The generator's own session: no wait for each day's WAL flush, and no JIT compiling of
            # a statement the planner thinks is huge (it is run once per day with other numbers).
            cursor.execute("SET synchronous_commit = off")
            cursor.execute("SET jit = off")
            for index, (day, count) in enumerate(counts):
                if count <= 0:
                    continue
                midnight = self.local_midnight(day)
                if day == self.today:
                    # Up to two minutes ago (all of it received before now), evenly.
                    span, business = (self.now - timedelta(minutes=2) - midnight).total_seconds(), False
                else:
                    span, business = (self.local_midnight(day + timedelta(days=1)) - midnight).total_seconds(), True
                params = {
                    **common,
                    "agent_sprints": [self.sprint_of(a.project_id, day) for a in self.agents],
                    "offset": offset,
                    "rows": count,
                    "day_start": midnight,
                    "span": span,
                    "business": business,
                }
                cursor.execute(INSERT_DAY, params)
                offset += count
                if (index + 1) % 10 == 0 or index == len(counts) - 1:
                    elapsed = time.perf_counter() - started
                    say(f"  {index + 1:3} days, {offset:>11,} rows, {elapsed:6.1f} s, {offset / elapsed:,.0f} rows/s")
            load_seconds = time.perf_counter() - started
            cursor.execute("RESET synchronous_commit")
            cursor.execute("RESET jit")
            analyze_started = time.perf_counter()
            cursor.execute("VACUUM (ANALYZE) costs_usagerecord")
            analyze_seconds = time.perf_counter() - analyze_started
        say(
            f"Loaded {rows:,} rows in {load_seconds:.1f} s ({rows / load_seconds:,.0f} rows/s); "
            f"VACUUM ANALYZE {analyze_seconds:.1f} s"
        )
        busiest = max(counts[:-1] or counts, key=lambda item: item[1])
        return load_seconds, busiest

    def rollup(self, *, tail: int) -> tuple[float, int]:
        """Roll up everything but the last ``tail`` rows received, with the production refresh."""
        from costs.models import UsageRecord
        from costs.services.rollups import rollups_refresh

        recent = (
            UsageRecord.objects.filter(organization=self.organization)
            .order_by("-received_at")
            .values_list("received_at", flat=True)
        )
        until = recent[tail] if tail else datetime.now(UTC) - timedelta(minutes=2)
        started = time.perf_counter()
        report = rollups_refresh(until=until, organization_id=self.organization.pk)
        return time.perf_counter() - started, report.buckets

    def watermark(self) -> datetime:
        from costs.services.rollups import rollup_watermark

        return rollup_watermark(organization=self.organization)

    # --- budgets ------------------------------------------------------------------------------

    def create_budgets(self, *, say) -> None:
        """Budgets sized from the spend so far, so gauges and projections show every status; the
        organization's, one project's and the agent's get a live period row (as after checks), the
        others have none yet (just created, or nobody checked against them this period), so the
        reports read their spend some other way."""
        from budgets.models import PeriodKind
        from budgets.services.budgets import budget_create
        from costs import analytics

        org = self.organization
        month = analytics.spend_totals(organization=org, start=self.today.replace(day=1), end=self.today).cost_usd
        by_project = {
            row.key["project"]: row.cost_usd
            for row in analytics.spend_breakdown(
                organization=org, start=self.today.replace(day=1), end=self.today, group_by=["project"]
            )
        }
        p0, p1, p2 = self.projects[:3]
        agent = self.agents[0]
        sprint = next(s for s in self.sprints[p0.pk] if s.start_date <= self.today <= s.end_date)

        def spent(project) -> Decimal:
            return by_project.get(project.slug, Decimal(0))

        def usd(amount) -> Decimal:
            return max(Decimal("1.00"), Decimal(amount).quantize(Decimal("0.01")))

        specs = [
            ("org monthly", {"limit_usd": usd(month * 2), "timezone": TZ}),
            (f"{p0.slug} monthly", {"project": p0, "limit_usd": usd(spent(p0) * Decimal("1.5"))}),
            (f"{p1.slug} monthly (UTC)", {"project": p1, "limit_usd": usd(spent(p1) * Decimal("0.9"))}),
            (
                f"{p2.slug} weekly",
                {"project": p2, "period": PeriodKind.WEEKLY, "limit_usd": usd(month / 10), "timezone": TZ},
            ),
            (
                f"{sprint.slug} sprint",
                {"sprint": sprint, "period": PeriodKind.SPRINT, "limit_usd": usd(month / 4)},
            ),
            (
                f"{agent.name} daily",
                {"agent": agent, "period": PeriodKind.DAILY, "limit_usd": usd(month / 60), "timezone": TZ},
            ),
            ("gpt-4o monthly", {"model_filter": "gpt-4o", "limit_usd": usd(month / 5), "timezone": TZ}),
        ]
        # budget_create starts each budget's current period (its live row), as in production.
        for name, fields in specs:
            budget_create(organization=org, name=name, actor_label="bench", **fields)
        say(f"Budgets: {len(specs)} ({', '.join(s[0] for s in specs)})")

    def budgets_without_period_row(self) -> list:
        from budgets.models import BudgetPeriod
        from budgets.selectors import budget_queryset
        from budgets.services.periods import period_bounds

        missing = []
        for budget in budget_queryset().filter(organization=self.organization, is_active=True).order_by("name"):
            sprints = list(budget.sprint.project.sprints.all()) if budget.sprint_id else None
            bounds = period_bounds(budget, datetime.now(UTC), sprints=sprints)
            if bounds and not BudgetPeriod.objects.filter(budget=budget, starts_at=bounds.starts_at).exists():
                missing.append(budget)
        return missing

    def period_row_create(self, budget) -> None:
        """The live period row the first settled usage would create (without its alerts)."""
        from budgets.models import BudgetPeriod
        from budgets.services.periods import ledger_spend_nanos, period_bounds

        sprints = list(budget.sprint.project.sprints.all()) if budget.sprint_id else None
        bounds = period_bounds(budget, datetime.now(UTC), sprints=sprints)
        BudgetPeriod.objects.create(
            budget=budget, starts_at=bounds.starts_at, ends_at=bounds.ends_at, limit_nanos=budget.limit_nanos,
            ceiling_nanos=budget.ceiling_nanos, spent_nanos=ledger_spend_nanos(budget, bounds),
        )  # fmt: skip

    # --- what is timed ------------------------------------------------------------------------

    def requests(self):
        from django.test import Client

        page = Client(SERVER_NAME="localhost")
        page.force_login(self.staff)
        api = Client(HTTP_AUTHORIZATION=f"Bearer {self.secret}", SERVER_NAME="localhost")
        org = self.organization.slug
        busiest = self.agents[0]
        project = next(p for p in self.projects if p.pk == busiest.project_id)
        last_30 = {"start": (self.today - timedelta(days=29)).isoformat(), "end": self.today.isoformat()}
        last_90 = {"start": (self.today - timedelta(days=89)).isoformat(), "end": self.today.isoformat()}
        report = "/api/v1/reports/"
        agent_day = {"group_by": "agent,day", **last_30}
        return [
            ("page /reports/ (overview)", page, "/reports/", {"organization": org}),
            (f"page project {project.slug}", page, f"/reports/{org}/projects/{project.slug}/", {}),
            (f"page agent {busiest.name}", page, f"/reports/{org}/projects/{project.slug}/agents/{busiest.name}/", {}),
            ("api breakdown group_by=project (30 d)", api, f"{report}breakdown/", {"group_by": "project", **last_30}),
            ("api breakdown group_by=model (30 d)", api, f"{report}breakdown/", {"group_by": "model", **last_30}),
            ("api breakdown group_by=agent,day (30 d)", api, f"{report}breakdown/", agent_day),
            ("api totals (30 d)", api, f"{report}totals/", last_30),
            ("api trend interval=day (30 d)", api, f"{report}trend/", {"interval": "day", **last_30}),
            ("api trend interval=month (90 d)", api, f"{report}trend/", {"interval": "month", **last_90}),
            ("api current (today, month to date)", api, f"{report}current/", {}),
            ("api top by=agent (30 d)", api, f"{report}top/", {"by": "agent", **last_30}),
            ("api unpriced (30 d)", api, f"{report}unpriced/", last_30),
            ("api budgets (projections)", api, f"{report}budgets/", {}),
        ]  # fmt: skip

    def time_raw_group_by(self, repeat: int) -> list[float]:
        from django.db import connection

        samples = []
        with connection.cursor() as cursor:
            for _ in range(repeat):
                started = time.perf_counter()
                cursor.execute(
                    "SELECT project_id, sum(cost_usd) FROM costs_usagerecord WHERE organization_id = %s GROUP BY 1",
                    [self.organization.pk],
                )
                cursor.fetchall()
                samples.append((time.perf_counter() - started) * 1000)
        return samples

    def time_rebuild(self, day: date, repeat: int = 3) -> list[float]:
        from costs.services.rollups import rollups_rebuild

        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            rollups_rebuild(organization_id=self.organization.pk, start=day, end=day)
            samples.append(time.perf_counter() - started)
        return samples

    def time_tail_refresh(self) -> float:
        """The 5-minute job's refresh of the tail, rolled back afterwards (the tail stays for a
        ``--reuse`` run; the commit it skips is one small WAL flush)."""
        from django.conf import settings
        from django.db import transaction

        from costs.services.rollups import rollups_refresh

        until = datetime.now(UTC) - timedelta(seconds=settings.SPENDGUARD_ROLLUP_LAG_SECONDS)
        with transaction.atomic():
            started = time.perf_counter()
            rollups_refresh(until=until, organization_id=self.organization.pk)
            seconds = time.perf_counter() - started
            transaction.set_rollback(True)
        return seconds


def _time_request(client, path: str, params: dict, *, repeat: int) -> tuple[int, list[float]]:
    status = client.get(path, params).status_code  # warm-up: imports, caches, plans
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, params)
        samples.append((time.perf_counter() - started) * 1000)
        status = status if status != 200 else response.status_code
    return status, samples


def _mix(organization, start: date, end: date) -> str:
    """The loaded data's shape, from the rollups (cheap)."""
    from costs import analytics

    rows = analytics.spend_breakdown(organization=organization, start=start, end=end, group_by=["agent"])
    total = analytics.spend_totals(organization=organization, start=start, end=end)
    operations = analytics.spend_breakdown(organization=organization, start=start, end=end, group_by=["operation"])
    embeddings = sum(r.requests for r in operations if r.key["operation"] == "embedding")
    requests = sorted(r.requests for r in rows)
    return (
        f"Mix: {total.requests:,} requests, ${total.cost_usd:,.2f}; embeddings {embeddings / total.requests:.1%}, "
        f"errors {total.error_requests / total.requests:.1%}, unpriced {total.unpriced_requests / total.requests:.1%}; "
        f"busiest agent {requests[-1]:,} requests, median agent {statistics.median(requests):,.0f}"
    )


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _relation_sizes() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_relation_size('costs_usagerecord')), "
            "pg_size_pretty(pg_indexes_size('costs_usagerecord')), "
            "pg_size_pretty(pg_database_size(current_database()))"
        )
        heap, indexes, database = cursor.fetchone()
    return f"table {heap}, its indexes {indexes}; database {database}"


def _drop_database(database_url: str) -> None:
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name.replace("_", "").isalnum() or "bench" not in name:
        raise ValueError(f"Refusing to drop {name!r}: not a benchmark database")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pressure() -> str:
    try:
        with open("/proc/pressure/cpu") as f:
            return f.readline().strip()
    except OSError:
        return "n/a"
