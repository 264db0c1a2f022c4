"""Timing hook for the report endpoints (issue 6, "Speed"): call every ``/api/v1/reports/`` endpoint
in-process, through the whole Django stack (middleware, authentication, view, rendering), and
report server-side milliseconds per endpoint. A benchmark command (e.g. against a 10M-row ledger)
wires the data and prints the figures; nothing here asserts a speed.
"""

import statistics
import time
from dataclasses import dataclass
from datetime import date

from django.test import Client

# One request per endpoint, typical parameters; a tag breakdown is the ledger's slow path (31 days max).
REPORT_REQUESTS = (
    ("breakdown", "/api/v1/reports/breakdown/", {"group_by": "project,model"}),
    ("breakdown-agent-day", "/api/v1/reports/breakdown/", {"group_by": "agent,day"}),
    ("breakdown-csv", "/api/v1/reports/breakdown/", {"group_by": "project,model", "format": "csv"}),
    ("totals", "/api/v1/reports/totals/", {}),
    ("trend-day", "/api/v1/reports/trend/", {"interval": "day"}),
    ("trend-week", "/api/v1/reports/trend/", {"interval": "week"}),
    ("current", "/api/v1/reports/current/", {}),
    ("top-agents", "/api/v1/reports/top/", {"by": "agent"}),
    ("unpriced", "/api/v1/reports/unpriced/", {}),
    ("budgets", "/api/v1/reports/budgets/", {}),
    ("anomalies", "/api/v1/reports/anomalies/", {}),
)


@dataclass(frozen=True, slots=True)
class EndpointTiming:
    name: str
    status: int
    p50_ms: float
    max_ms: float


def reports_time(*, api_key: str, start: date, end: date, repeat: int = 5) -> list[EndpointTiming]:
    """Time each of :data:`REPORT_REQUESTS` ``repeat`` times (after one warm-up call) for the
    organization of ``api_key`` (an ``sg_...`` secret) over ``start`` .. ``end``."""
    client = Client(HTTP_AUTHORIZATION=f"Bearer {api_key}", SERVER_NAME="localhost")
    timings = []
    for name, path, params in REPORT_REQUESTS:
        query = {"start": start.isoformat(), "end": end.isoformat(), **params}
        status = client.get(path, query).status_code
        samples = []
        for _ in range(repeat):
            began = time.perf_counter()
            client.get(path, query)
            samples.append((time.perf_counter() - began) * 1000)
        timings.append(EndpointTiming(name, status, statistics.median(samples), max(samples)))
    return timings
