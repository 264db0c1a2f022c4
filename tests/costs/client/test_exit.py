"""At process exit the client sends what it holds — or spools it, and the next run sends that.

The agent runs in a fresh interpreter with the two-line integration (``SpendguardCallback()``
configured from the environment) and exits without flushing; it must never import Django.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from costs.models import UsageRecord

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[3]
AGENT = """
import asyncio, json, sys

import litellm
from costs.client import SpendguardCallback

litellm.callbacks = [SpendguardCallback()]
messages = [{"role": "user", "content": "hi"}]
prefix = sys.argv[1]
litellm.completion(model="gpt-4o-mini", messages=messages, mock_response="hi", litellm_call_id=prefix + "-sync")


async def main():
    await litellm.acompletion(
        model="gpt-4o-mini", messages=messages, mock_response="hi", litellm_call_id=prefix + "-async"
    )


asyncio.run(main())  # the async report is still queued in litellm when the loop ends
server = ("django", "config", "rest_framework")
print(json.dumps({"django": sorted(m for m in sys.modules if m.split(".")[0] in server)}))
"""


def run_agent(prefix: str, *, url: str, secret: str, spool_dir: Path) -> dict:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("SPENDGUARD_", "DJANGO_", "DATABASE_"))
    }
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        SPENDGUARD_URL=url,
        SPENDGUARD_API_KEY=secret,
        SPENDGUARD_AGENT="planner",
        SPENDGUARD_SPOOL_DIR=str(spool_dir),
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-c", AGENT, prefix], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_exit_sends_or_spools_and_the_next_run_sends_the_spool(acme, proxy, make_client, tmp_path):
    spool_dir = tmp_path / "spool"

    first = run_agent("up", url=proxy.url, secret=acme["secret"], spool_dir=spool_dir)

    assert first == {"django": []}
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["up-async", "up-sync"]

    proxy.stop()
    run_agent("down", url=proxy.url, secret=acme["secret"], spool_dir=spool_dir)
    assert UsageRecord.objects.count() == 2
    leftovers = [p for p in spool_dir.rglob("*.jsonl")]
    assert [json.loads(line)["request_id"] for p in leftovers for line in p.read_text().splitlines()] in (
        ["down-sync", "down-async"],
        ["down-async", "down-sync"],
    )
    proxy.start()

    client = make_client(url=proxy.url)  # the next run of the agent: same server, key and spool
    assert client.flush()
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == [
        "down-async",
        "down-sync",
        "up-async",
        "up-sync",
    ]
    assert list(spool_dir.rglob("*.jsonl")) == []
