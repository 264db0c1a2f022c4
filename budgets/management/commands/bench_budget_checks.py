"""Benchmark budget checks over HTTP: gunicorn + PostgreSQL + Redis on loopback.

    python manage.py bench_budget_checks

16 concurrent clients (keep-alive connections driven by one load process) all check against one
organization's hard budget. Four phases, each run ``--repeat`` times (medians printed): *allow* (closed
loop: every client checks again as soon as it is answered — the most checks/s the server can do; the
budget is big enough never to deny, so every check reserves: the full write path), *allow at N/s*
(open loop at ``--rate`` checks/s offered: the latency callers arriving at that rate see, counted from
when each check was due), *deny* (another organization whose hard budget is exhausted: every check is
refused) and *floor* (the same endpoint answering 400 after authentication and validation: what the
framework costs before any budget work). Uses a throwaway database
(default ``spendguard_bench_checks``), recreated each run.

``--store {postgresql,redis}`` picks the live-spend store the server enforces with
(``SPENDGUARD_BUDGET_STORE``, default postgresql) and ``--wsgi-fast-path {on,off}`` whether API-key
checks are answered in front of Django's WSGI handler (``SPENDGUARD_CHECK_WSGI_FAST_PATH``,
budgets.api.wsgi_fast_path; default on); both are set in the server's environment (and the set-up
commands') and printed in the header line, so two runs back to back compare one choice, e.g.
``--wsgi-fast-path off`` then ``on``.

Each phase also prints the CPU milliseconds per check of the gunicorn workers, the benchmark
database's PostgreSQL backends and the load generator (from ``/proc``): on a shared 2-core
machine requests/s and tails move with whatever else runs, CPU per check much less — and the
fixed-rate target needs their sum near 1 ms (1,000 checks/s on two cores at about half load).
"""

import statistics
import uuid

from django.core.management.base import BaseCommand

from costs import benchmarking as bench

# Creates, in the benchmark database, the catalog price, the two organizations' hard budgets and agents.
SETUP = """
import datetime as dt
from decimal import Decimal
from budgets.models import Budget
from costs.models import Agent, Organization, Project
from pricing.models import ModelPrice
ModelPrice.objects.create(model="gpt-4o", source="manual", input_usd_per_mtok=Decimal("2.5"),
    output_usd_per_mtok=Decimal("10"), effective_from=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
Budget.objects.create(organization=Organization.objects.get(slug="bench"), name="org monthly",
    limit_usd=Decimal("1000000"), period="monthly", enforcement="hard")
Budget.objects.create(organization=Organization.objects.get(slug="bench-deny"), name="exhausted",
    limit_usd=Decimal("0.001"), period="monthly", enforcement="hard")
for project in Project.objects.filter(slug="load"):
    Agent.objects.bulk_create([Agent(project=project, name=f"agent-{i}") for i in range(8)])
"""


def _check(client: int, i: int, run: str) -> dict:
    return {
        "agent": f"agent-{client % 8}",
        "model": "gpt-4o",
        "prompt_tokens": 500 + (i * 37) % 4000,
        "max_output_tokens": 256 + (i * 13) % 1024,
        "request_id": f"{run}-{client}-{i}",
    }


class Command(BaseCommand):
    help = "Benchmark POST /api/v1/budget-checks/ under gunicorn on PostgreSQL + Redis and print the figures."

    def add_arguments(self, parser):
        parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/spendguard_bench_checks")
        parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
        parser.add_argument(
            "--workers", type=int, default=2,
            help="gunicorn worker processes (default: one per core; more only add context switches here)",
        )  # fmt: skip
        parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (gthread)")
        parser.add_argument(
            "--worker-class", default="sync", choices=["sync", "gthread"],
            help="sync: a connection per request, so requests spread over all workers (default); gthread: "
            "keep-alive, but a worker keeps the connections it accepted",
        )  # fmt: skip
        parser.add_argument(
            "--reuse-port", action="store_true",
            help="each worker listens on its own SO_REUSEPORT socket (with gthread: keep-alive connections "
            "spread over the workers by the kernel)",
        )  # fmt: skip
        parser.add_argument("--clients", type=int, default=16)
        parser.add_argument("--checks-per-client", type=int, default=300)
        parser.add_argument("--repeat", type=int, default=3, help="runs of each phase; medians are reported")
        parser.add_argument(
            "--rate", type=float, default=1000.0,
            help="offered checks/s of the fixed-rate phase (open loop: latency counts from when a check was due)",
        )  # fmt: skip
        parser.add_argument(
            "--store", default="postgresql", choices=["postgresql", "redis"],
            help="the live-spend store the server enforces with (SPENDGUARD_BUDGET_STORE)",
        )  # fmt: skip
        parser.add_argument(
            "--wsgi-fast-path", default="on", choices=["on", "off"],
            help="answer API-key checks in front of Django's WSGI handler (SPENDGUARD_CHECK_WSGI_FAST_PATH)",
        )  # fmt: skip

    def handle(self, *args, **opts):
        env = bench.app_env(database_url=opts["database_url"], redis_url=opts["redis_url"])
        env["SPENDGUARD_BUDGET_STORE"] = opts["store"]
        env["SPENDGUARD_CHECK_WSGI_FAST_PATH"] = "true" if opts["wsgi_fast_path"] == "on" else "false"
        # The floor phase answers 400 by the thousand: Django's warning per 400 would flood the output.
        env["LOG_LEVEL"] = "ERROR"
        self.stdout.write(f"Preparing {opts['database_url']} (migrate, price, budgets, API keys)…")
        bench.recreate_database(opts["database_url"])
        bench.manage("migrate", "-v0", env=env)
        keys = {}
        for org in ("bench", "bench-deny"):
            out = bench.manage("create_api_key", "--organization", org, "--project", "load", "--create", env=env)
            keys[org] = out.strip().splitlines()[-1]
        bench.manage("shell", "-c", SETUP, env=env)
        if opts["store"] == "redis":
            # The database was just recreated: period ids start again at 1, so what an earlier run
            # left in the Redis store would be taken for these periods' counters.
            bench.manage("shell", "-c", "from budgets.services import redis_store; redis_store.flush()", env=env)

        run = uuid.uuid4().hex[:8]
        path = "/api/v1/budget-checks/"
        per_client = opts["checks_per_client"]

        def bodies(prefix: str, count: int):
            return lambda client: [bench.dumps(_check(client, i, f"{run}-{prefix}")) for i in range(count)]

        allow, paced, deny, floor = [], [], [], []
        server = bench.gunicorn_server(
            env=env, workers=opts["workers"], threads=opts["threads"], worker_class=opts["worker_class"],
            reuse_port=opts["reuse_port"],
        )  # fmt: skip
        with server as port:
            meter = bench.CpuMeter(
                {
                    "gunicorn": lambda: bench.pids_with_cmdline(f"--bind 127.0.0.1:{port} "),
                    "postgres": lambda: bench.postgres_backend_pids(opts["database_url"]),
                }
            )
            # Warm-up: first requests pay imports, connections, the period row and caches in every worker.
            for org in keys:
                bench.run_load(
                    port=port, path=path, api_key=keys[org], clients=opts["workers"] * 2,
                    bodies_for=bodies(f"warm-{org}", 30),
                )  # fmt: skip
            for attempt in range(opts["repeat"]):
                allow.append(
                    meter.measure(lambda attempt=attempt: bench.run_load(
                        port=port, path=path, api_key=keys["bench"], clients=opts["clients"],
                        bodies_for=bodies(f"allow{attempt}", per_client),
                    ))
                )  # fmt: skip
                paced.append(
                    meter.measure(lambda attempt=attempt: bench.run_load(
                        port=port, path=path, api_key=keys["bench"], clients=opts["clients"],
                        bodies_for=bodies(f"paced{attempt}", per_client), rate=opts["rate"],
                    ))
                )  # fmt: skip
                # The floor: the same endpoint answering 400 after authentication and validation,
                # no budget work — what Django, the API-key lookup and gunicorn cost here.
                floor.append(
                    meter.measure(lambda attempt=attempt: bench.run_load(
                        port=port, path=path, api_key=keys["bench"], clients=opts["clients"],
                        bodies_for=lambda client: [b'{"model": 1}'] * per_client,
                    ))
                )  # fmt: skip
                deny.append(
                    meter.measure(lambda attempt=attempt: bench.run_load(
                        port=port, path=path, api_key=keys["bench-deny"], clients=opts["clients"],
                        bodies_for=bodies(f"deny{attempt}", per_client),
                    ))
                )  # fmt: skip

        w = self.stdout.write
        w(
            f"gunicorn {opts['worker_class']} workers={opts['workers']} threads={opts['threads']}"
            f"{' reuse-port' if opts['reuse_port'] else ''}; "
            f"SPENDGUARD_BUDGET_STORE={env['SPENDGUARD_BUDGET_STORE']} "
            f"SPENDGUARD_CHECK_WSGI_FAST_PATH={env['SPENDGUARD_CHECK_WSGI_FAST_PATH']}; "
            "PostgreSQL + Redis on loopback; "
            f"{opts['clients']} clients x {per_client} checks per run, one hard organization budget; "
            f"medians of {opts['repeat']} runs"
        )
        phases = (
            ("allow (reserve)", allow),
            (f"allow at {opts['rate']:,.0f}/s offered", paced),
            ("deny (429)", deny),
            ("floor (400, auth only)", floor),
        )
        for name, results in phases:
            cpu = {group: statistics.median(r.cpu_ms[group] for r in results) for group in results[0].cpu_ms}
            rates = [r.requests_per_second for r in results]
            p50s, p99s = [r.p50 for r in results], [r.p99 for r in results]
            w(
                f"{name:26}: {statistics.median(rates):,.0f} checks/s, p50 {statistics.median(p50s):.2f} ms, "
                f"p99 {statistics.median(p99s):.2f} ms (runs: "
                + ", ".join(f"{r:,.0f}/s p99 {p:.1f}" for r, p in zip(rates, p99s, strict=True))
                + f") statuses {bench.merge_statuses(results)}"
            )
            w(
                f"{'':26}  CPU ms per check: {sum(cpu.values()):.2f} = "
                + " + ".join(f"{group} {ms:.2f}" for group, ms in cpu.items())
            )
