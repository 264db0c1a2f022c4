"""Concurrent ingestion against real PostgreSQL, with real threads (one connection each)."""

import pytest

from costs.models import Agent, UsageRecord
from tests.concurrency import run_together
from tests.costs.test_ingest import URL, client_for, make_price, usage

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_concurrent_replays_of_one_request_write_one_row(organization, project, agent):
    make_price("gpt-4o", input="2.5", output="10")
    clients = [client_for(organization=organization, project=project, agent=agent) for _ in range(16)]
    record = usage(prompt_tokens=1000, completion_tokens=100)

    responses = run_together([lambda c=c: c.post(URL, record, format="json") for c in clients])

    assert sorted(r.status_code for r in responses) == [200] * 15 + [201]
    bodies = [r.json() for r in responses]
    assert len({b["id"] for b in bodies}) == 1
    assert sorted(b["replayed"] for b in bodies) == [False] + [True] * 15
    assert {b["cost_usd"] for b in bodies} == {"0.0035"}
    assert UsageRecord.objects.count() == 1


def test_concurrent_batches_register_a_new_agent_once(organization, project):
    clients = [client_for(organization=organization, project=project) for _ in range(2)]
    batches = [
        [usage(request_id=f"{side}-{i}", agent="newcomer") for i in range(60)]
        + [usage(request_id=f"{side}-x", agent=f"solo-{side}")]
        for side in ("a", "b")
    ]

    responses = run_together(
        [lambda c=c, b=b: c.post(URL, {"records": b}, format="json") for c, b in zip(clients, batches, strict=True)]
    )

    assert [r.status_code for r in responses] == [201, 201]
    newcomer = Agent.objects.get(project=project, name="newcomer")
    assert UsageRecord.objects.filter(agent=newcomer).count() == 120
    assert sorted(Agent.objects.filter(project=project).values_list("name", flat=True)) == [
        "newcomer",
        "solo-a",
        "solo-b",
    ]


def test_overlapping_batches_in_opposite_orders_do_not_deadlock(organization, project, agent):
    clients = [client_for(organization=organization, project=project, agent=agent) for _ in range(2)]
    ids = [f"r{i:03}" for i in range(300)]

    for round_ in range(3):
        forward = [usage(request_id=f"{round_}-{i}") for i in ids]
        responses = run_together(
            [
                lambda records=forward: clients[0].post(URL, {"records": records}, format="json"),
                lambda records=forward[::-1]: clients[1].post(URL, {"records": records}, format="json"),
            ]
        )

        assert sorted(r.status_code for r in responses) in ([200, 201], [201, 201])
        # Every request id was written exactly once: new in exactly one of the two answers.
        new = [r["request_id"] for resp in responses for r in resp.json()["records"] if not r["replayed"]]
        assert sorted(new) == sorted(f"{round_}-{i}" for i in ids)
    assert UsageRecord.objects.count() == 900
