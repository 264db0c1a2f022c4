"""Drive app.py under gunicorn (2 sync workers) with bench_budget_checks' load generator: 16 clients,
closed loop and 1,000 checks/s offered, 3 runs each. Run from the repository root:

    .venv/bin/python docs/experiments/redis-check/bench.py
"""

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

import django  # noqa: E402

django.setup()

from costs import benchmarking as bench  # noqa: E402


def bodies(prefix: str, count: int):
    return lambda client: [
        bench.dumps(
            {
                "agent": f"agent-{client % 8}",
                "model": "gpt-4o",
                "prompt_tokens": 500 + (i * 37) % 4000,
                "max_output_tokens": 256 + (i * 13) % 1024,
                "request_id": f"{prefix}-{client}-{i}",
            }
        )
        for i in range(count)
    ]


def main() -> None:
    port = bench.free_port()
    cmd = [sys.executable, "-m", "gunicorn", "app:app", "--chdir", str(HERE), "--bind", f"127.0.0.1:{port}",
           "--workers", "2", "--worker-class", "sync", "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(cmd)
    try:
        time.sleep(3)
        meter = bench.CpuMeter(
            {
                "gunicorn": lambda: bench.pids_with_cmdline(f"--bind 127.0.0.1:{port} "),
                "redis": lambda: bench.pids_with_cmdline("redis-server"),
            }
        )
        bench.run_load(port=port, path="/", api_key="sg_x", clients=4, bodies_for=bodies("warm", 50))
        for phase, rate in (("closed loop", None), ("1,000/s offered", 1000)):
            for attempt in range(3):
                res = meter.measure(
                    lambda phase=phase, rate=rate, attempt=attempt: bench.run_load(
                        port=port, path="/", api_key="sg_x", clients=16,
                        bodies_for=bodies(f"{phase}{attempt}", 300), rate=rate,
                    )
                )  # fmt: skip
                cpu = " + ".join(f"{name} {ms:.2f}" for name, ms in res.cpu_ms.items())
                print(
                    f"{phase}: {res.requests_per_second:,.0f}/s p50 {res.percentile(0.5):.2f} ms "
                    f"p99 {res.percentile(0.99):.2f} ms {res.statuses}; CPU ms/check "
                    f"{sum(res.cpu_ms.values()):.2f} = {cpu}"
                )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
