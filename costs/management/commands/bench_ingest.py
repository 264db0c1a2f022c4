"""Benchmark ingestion over HTTP: gunicorn + PostgreSQL + Redis on loopback.

    python manage.py bench_ingest            # or: make bench

Prints batch ingest records/s (batches of 1,000) and single-record latency (p50/p99, one client) and
throughput (several clients). Uses a throwaway database (default ``spendguard_bench``), recreated each run.
"""

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
        parser.add_argument("--batch-clients", type=int, default=4)
        parser.add_argument("--batches-per-client", type=int, default=15)
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--single-clients", type=int, default=4)
        parser.add_argument("--singles-per-client", type=int, default=500)
        parser.add_argument("--latency-requests", type=int, default=1000)

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

        def batch_bodies(client: int) -> list[bytes]:
            base = client * opts["batches_per_client"] * size
            return [
                bench.dumps({"records": [_record(base + b * size + i, f"{run}-b") for i in range(size)]})
                for b in range(opts["batches_per_client"])
            ]

        def single_bodies(prefix: str, count: int):
            return lambda client: [bench.dumps(_record(client * count + i, f"{run}-{prefix}")) for i in range(count)]

        with bench.gunicorn_server(env=env, workers=opts["workers"], threads=opts["threads"]) as port:
            # Warm-up: first requests pay imports, connections and caches in every worker.
            bench.run_load(
                port=port, path="/api/v1/usage/", api_key=api_key, clients=opts["workers"] * 2,
                bodies_for=single_bodies("warm", 20),
            )  # fmt: skip
            batch = bench.run_load(
                port=port, path="/api/v1/usage/", api_key=api_key, clients=opts["batch_clients"],
                bodies_for=batch_bodies,
            )  # fmt: skip
            latency = bench.run_load(
                port=port, path="/api/v1/usage/", api_key=api_key, clients=1,
                bodies_for=single_bodies("lat", opts["latency_requests"]),
            )  # fmt: skip
            single = bench.run_load(
                port=port, path="/api/v1/usage/", api_key=api_key, clients=opts["single_clients"],
                bodies_for=single_bodies("tput", opts["singles_per_client"]),
            )  # fmt: skip

        records = batch.requests * size
        w = self.stdout.write
        w(f"gunicorn gthread workers={opts['workers']} threads={opts['threads']}; PostgreSQL + Redis on loopback")
        w(
            f"batch ingest   : {records / batch.wall_seconds:,.0f} records/s "
            f"({batch.requests} batches x {size} from {opts['batch_clients']} clients in {batch.wall_seconds:.2f} s; "
            f"per batch p50 {batch.p50:.1f} ms, p99 {batch.p99:.1f} ms) statuses {batch.statuses}"
        )
        w(
            f"single latency : p50 {latency.p50:.2f} ms, p99 {latency.p99:.2f} ms "
            f"({latency.requests} sequential requests, 1 client) statuses {latency.statuses}"
        )
        w(
            f"single tput    : {single.requests_per_second:,.0f} requests/s with {opts['single_clients']} clients "
            f"(p50 {single.p50:.2f} ms, p99 {single.p99:.2f} ms) statuses {single.statuses}"
        )
