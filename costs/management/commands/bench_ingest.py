"""Benchmark ingestion over HTTP: gunicorn + PostgreSQL + Redis on loopback.

    python manage.py bench_ingest            # or: make bench

Prints batch ingest records/s (batches of 1,000) and single-record latency (p50/p99, one client) and
throughput (several clients). Uses a throwaway database (default ``spendguard_bench``), recreated each run.
"""

import statistics
import uuid
from datetime import UTC, datetime

from django.core.management.base import BaseCommand

from costs import benchmarking as bench

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku-20241022", "openai/gpt-4.1", "unpriced-model-x"]


def _record(i: int, run: str) -> dict:
    prompt = 500 + (i * 37) % 4000
    return {
        "request_id": f"{run}-{i}",
        "agent": f"agent-{i % 8}",
        "model": MODELS[i % len(MODELS)],
        "prompt_tokens": prompt,
        "completion_tokens": 50 + (i * 13) % 900,
        "cached_tokens": prompt // 4 if i % 3 == 0 else 0,
        "occurred_at": datetime.now(UTC).isoformat(),
        "tags": {"env": "bench"},
    }


class Command(BaseCommand):
    help = "Benchmark POST /api/v1/usage/ under gunicorn on PostgreSQL + Redis and print the figures."

    def add_arguments(self, parser):
        parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/spendguard_bench")
        parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
        parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
        parser.add_argument("--threads", type=int, default=2, help="threads per gunicorn worker")
        parser.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
        parser.add_argument("--batch-clients", type=int, default=4)
        parser.add_argument("--batches-per-client", type=int, default=15)
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--single-clients", type=int, default=4)
        parser.add_argument("--singles-per-client", type=int, default=500)
        parser.add_argument("--latency-requests", type=int, default=1000)
        parser.add_argument("--repeat", type=int, default=3, help="runs of each phase; medians are reported")

    def handle(self, *args, **opts):
        env = bench.app_env(database_url=opts["database_url"], redis_url=opts["redis_url"])
        self.stdout.write(f"Preparing {opts['database_url']} (migrate, sync_prices, API key)…")
        bench.recreate_database(opts["database_url"])
        bench.manage("migrate", "-v0", env=env)
        bench.manage("sync_prices", env=env)
        api_key = (
            bench.manage("create_api_key", "--organization", "bench", "--project", "load", "--create", env=env)
            .strip()
            .splitlines()[-1]
        )

        run = uuid.uuid4().hex[:8]
        size = opts["batch_size"]

        def batch_bodies(client: int, attempt: int) -> list[bytes]:
            base = client * opts["batches_per_client"] * size
            return [
                bench.dumps({"records": [_record(base + b * size + i, f"{run}-b{attempt}") for i in range(size)]})
                for b in range(opts["batches_per_client"])
            ]

        def single_bodies(prefix: str, count: int):
            return lambda client: [bench.dumps(_record(client * count + i, f"{run}-{prefix}")) for i in range(count)]

        with bench.gunicorn_server(
            env=env, workers=opts["workers"], threads=opts["threads"], worker_class=opts["worker_class"]
        ) as port:
            # Warm-up: first requests pay imports, connections and caches in every worker.
            bench.run_load(
                port=port, path="/api/v1/usage/", api_key=api_key, clients=opts["workers"] * 2,
                bodies_for=single_bodies("warm", 20),
            )  # fmt: skip
            batches, latencies, singles = [], [], []
            for attempt in range(opts["repeat"]):
                batches.append(
                    bench.run_load(
                        port=port, path="/api/v1/usage/", api_key=api_key, clients=opts["batch_clients"],
                        bodies_for=lambda c, a=attempt: batch_bodies(c, a),
                    )
                )  # fmt: skip
                latencies.append(
                    bench.run_load(
                        port=port, path="/api/v1/usage/", api_key=api_key, clients=1,
                        bodies_for=single_bodies(f"lat{attempt}", opts["latency_requests"]),
                    )
                )  # fmt: skip
                singles.append(
                    bench.run_load(
                        port=port, path="/api/v1/usage/", api_key=api_key, clients=opts["single_clients"],
                        bodies_for=single_bodies(f"tput{attempt}", opts["singles_per_client"]),
                    )
                )  # fmt: skip

        def median(values):
            return statistics.median(values)

        def spread(values, fmt):
            return "runs " + ", ".join(format(v, fmt) for v in values)

        w = self.stdout.write
        w(
            f"gunicorn {opts['worker_class']} workers={opts['workers']} threads={opts['threads']}; "
            f"PostgreSQL + Redis on loopback; medians of {opts['repeat']} runs"
        )
        rates = [b.requests * size / b.wall_seconds for b in batches]
        w(
            f"batch ingest   : {median(rates):,.0f} records/s ({spread(rates, ',.0f')}; each run "
            f"{opts['batch_clients']} clients x {opts['batches_per_client']} batches of {size}; per batch "
            f"p50 {median([b.p50 for b in batches]):.1f} ms, p99 {median([b.p99 for b in batches]):.1f} ms) "
            f"statuses {bench.merge_statuses(batches)}"
        )
        p50s, p99s = [r.p50 for r in latencies], [r.p99 for r in latencies]
        w(
            f"single latency : p50 {median(p50s):.2f} ms, p99 {median(p99s):.2f} ms ({spread(p50s, '.2f')}; "
            f"{opts['latency_requests']} sequential requests from 1 client) statuses {bench.merge_statuses(latencies)}"
        )
        rps = [r.requests_per_second for r in singles]
        w(
            f"single tput    : {median(rps):,.0f} requests/s with {opts['single_clients']} clients "
            f"({spread(rps, ',.0f')}; p50 {median([r.p50 for r in singles]):.2f} ms, "
            f"p99 {median([r.p99 for r in singles]):.2f} ms) statuses {bench.merge_statuses(singles)}"
        )
