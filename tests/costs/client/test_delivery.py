"""Reporting never slows or breaks the agent, and loses or duplicates nothing when the server goes
away: the network is played by a loopback proxy in front of the live server."""

import json
import logging

import litellm
import pytest

from costs.models import UsageRecord
from tests.costs.client.conftest import MESSAGES

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    # litellm's own pydantic models warn when first used; not ours to fix.
    pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning"),
]


def complete(n: int, *, start: int = 0) -> list[str]:
    """``n`` plain litellm calls (the callback reports them); returns their call ids."""
    ids = []
    for i in range(start, start + n):
        call_id = f"call-{i}"
        litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response=f"answer {i}",
            metadata={"agent": "planner"},
            litellm_call_id=call_id,
        )
        ids.append(call_id)
    return ids


def ledger_ids() -> list[str]:
    return sorted(UsageRecord.objects.values_list("request_id", flat=True))


def spooled_ids(client) -> list[str]:
    ids = []
    for path in client.spool.directory.iterdir():
        ids += [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    return sorted(ids)


def test_server_down_mid_run_loses_nothing_and_duplicates_nothing(make_client, proxy):
    client = make_client(url=proxy.url, enforce=False)

    before = complete(2)
    assert client.flush()
    proxy.stop()
    during = complete(3, start=2)
    assert not client.flush()  # the server cannot take it: spooled
    assert (ledger_ids(), spooled_ids(client)) == (before, during)
    proxy.start()
    after = complete(1, start=5)

    assert client.flush()
    assert ledger_ids() == sorted(before + during + after)
    assert spooled_ids(client) == []
    assert client.stats == {"reported": 6, "sent": 6, "spooled": 3, "rejected": 0, "dropped": 0}


def test_answers_lost_on_the_way_back_are_replays_not_second_charges(make_client, proxy):
    client = make_client(url=proxy.url, enforce=False)
    proxy.swallow_answers = True  # the server records each batch; the client never hears so

    ids = complete(3)
    assert not client.flush()
    assert ledger_ids() == ids  # already recorded, though the client could not know
    proxy.swallow_answers = False

    assert client.flush()  # the spool is sent again: every record is a replay
    assert ledger_ids() == ids
    assert UsageRecord.objects.filter(request_id__in=ids).count() == 3


def test_the_agents_calls_do_not_wait_for_reporting(make_client, proxy):
    client = make_client(url=proxy.url, enforce=False)
    proxy.hold()  # the server takes the report's connection and answers nothing until released

    first = complete(1)
    assert proxy.held.wait(10)  # the reporter is now stuck sending the first report...
    more = complete(3, start=1)  # ...and the agent's next calls still complete
    assert ledger_ids() == []
    proxy.release()

    assert client.flush()
    assert ledger_ids() == first + more


def test_full_queue_spills_to_the_spool_not_to_memory(make_client, proxy):
    client = make_client(url=proxy.url, enforce=False, max_queue=1, batch_size=1)
    proxy.hold()

    ids = complete(1)
    assert proxy.held.wait(10)
    ids += complete(4, start=1)  # one fits the queue; the others go to disk while the reporter is stuck
    assert client.reporter.wait_for_calls(10)
    assert client.stats["spooled"] == 3
    proxy.release()

    assert client.flush()
    assert ledger_ids() == ids
    assert spooled_ids(client) == []


def test_full_spool_warns_and_says_what_it_dropped(make_client, proxy, caplog):
    # One batch, sent only on flush, so the cap is hit by one write.
    client = make_client(url=proxy.url, enforce=False, spool_max_bytes=700, flush_interval=60)
    proxy.stop()

    ids = complete(5)
    with caplog.at_level(logging.WARNING, logger="spendguard.client"):
        assert not client.flush()

    kept = spooled_ids(client)
    dropped = client.stats["dropped"]
    assert 0 < len(kept) < 5 and len(kept) + dropped == 5
    assert client.spool.size() <= 700
    warnings = [r.getMessage() for r in caplog.records if "spool is full" in r.getMessage()]
    assert warnings == [
        f"Spendguard spool is full ({client.spool.size()} of 700 bytes used in {client.spool.directory}): "
        f"DROPPED {dropped} usage record(s) (first request_id {ids[len(kept)]!r}). They will not be recorded. "
        "Restore the connection to the Spendguard server or raise spool_max_bytes / SPENDGUARD_SPOOL_MAX_BYTES."
    ]
    proxy.start()
    assert client.flush()
    assert ledger_ids() == kept


def test_server_refusing_one_record_does_not_sink_its_batch(make_client, caplog):
    client = make_client(enforce=False)

    good = complete(2)
    litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="x",
        metadata={"agent": "planner", "project": "no-such-project"},
        litellm_call_id="bad-project",
    )
    with caplog.at_level(logging.ERROR, logger="spendguard.client"):
        assert client.flush()

    assert ledger_ids() == good
    assert client.stats["rejected"] == 1
    assert "Spendguard refused usage record 'bad-project' (HTTP 403, out_of_scope" in caplog.text
