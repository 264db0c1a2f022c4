"""``manage.py import_usage``: JSONL / CSV usage objects and litellm payloads, through usage_ingest."""

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is first imported

import json
import threading
from decimal import Decimal
from io import StringIO

import litellm
import pytest
from django.core.management import CommandError, call_command
from litellm.integrations.custom_logger import CustomLogger

from costs.client.config import ClientConfig
from costs.client.records import usage_from_call
from costs.models import Agent, ApiKey, UsageRecord
from costs.services.usage_import import usage_from_litellm_payload
from pricing.services import prices_sync
from tests.costs.client.conftest import CALLBACK_LISTS, mock_response
from tests.costs.test_ingest import make_price
from tests.factories import ProjectFactory, SprintFactory

pytestmark = [
    pytest.mark.django_db,
    # litellm's own pydantic models warn when first used; not ours to fix.
    pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning"),
]


def run(*args: str) -> tuple[str, str, CommandError | None]:
    out, err = StringIO(), StringIO()
    try:
        call_command("import_usage", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return out.getvalue(), err.getvalue(), exc
    return out.getvalue(), err.getvalue(), None


@pytest.fixture
def acme(organization, project):
    make_price("gpt-4o", input="2.5", output="10", cache_read="1.25")
    ProjectFactory(organization=organization, slug="support")
    SprintFactory(project=project, slug="s1")  # 2026-11-01 .. 2026-11-14
    return organization


def usage(request_id: str, **fields) -> dict:
    return {
        "request_id": request_id,
        "project": "search",
        "agent": "planner",
        "model": "gpt-4o",
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "occurred_at": "2026-11-02T10:00:00Z",
        **fields,
    }


def test_jsonl_import_writes_valid_lines_lists_invalid_ones_and_is_idempotent(acme, tmp_path):
    path = tmp_path / "usage.jsonl"
    lines = [
        json.dumps(usage("r1")),
        "{not json",
        json.dumps(usage("r2", project="support", agent="triage", cached_tokens=400, tags={"run": 7})),
        "",
        json.dumps(usage("r3", prompt_tokens=-5)),
        json.dumps(usage("r4", project="nope")),
        json.dumps(usage("r1")),  # repeated in the file: a replay
    ]
    path.write_text("\n".join(lines) + "\n")

    out, err, error = run(str(path), "--organization", "acme")

    assert out == f"{path}: 6 lines: 2 written, 1 replayed, 3 invalid.\n"
    assert err.splitlines() == [
        "line 2: non_field_errors: Not valid JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1).",
        "line 5: prompt_tokens: Must be greater than or equal to 0.",
        "line 6: project: Unknown project 'nope' in organization 'acme'.",
    ]
    assert str(error) == "3 invalid line(s) were not imported; the other lines were."
    rows = {row.request_id: row for row in UsageRecord.objects.select_related("project", "sprint", "agent")}
    assert sorted(rows) == ["r1", "r2"]
    assert (rows["r1"].project.slug, rows["r1"].sprint.slug, rows["r1"].agent.name) == ("search", "s1", "planner")
    assert rows["r1"].cost_usd == Decimal("0.0035")  # 1,000 x 2.5 + 100 x 10 per 1M tokens
    assert (rows["r2"].project.slug, rows["r2"].agent.name, rows["r2"].tags) == ("support", "triage", {"run": 7})
    assert rows["r2"].cost_usd == Decimal("0.003")  # 600 x 2.5 + 400 x 1.25 + 100 x 10
    assert Agent.objects.filter(name="triage").exists()  # registered, as over the API
    assert ApiKey.objects.count() == 0  # no credential was created for the import

    path.write_text("\n".join(lines[:1] + lines[2:3]) + "\n")
    out, _, error = run(str(path), "--organization", "acme")

    assert (out, error) == (f"{path}: 2 lines: 0 written, 2 replayed, 0 invalid.\n", None)
    assert UsageRecord.objects.count() == 2


def test_csv_import_with_typed_cells_and_defaults(acme, tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text(
        "request_id,model,prompt_tokens,completion_tokens,agent,occurred_at,batch,tags,provider_cost_usd,status\n"
        'c1,gpt-4o,1000,100,,2026-11-03T09:00:00+00:00,true,"{""team"": ""red""}",0.01,\n'
        "c2,gpt-4o,2000,0,coder,2026-11-03T09:00:00+00:00,,,,error\n"
        "c3,gpt-4o,many,0,,2026-11-03T09:00:00+00:00,,,,\n"
    )

    out, err, error = run(str(path), "--organization", "acme", "--project", "search", "--agent", "planner")

    assert out == f"{path}: 3 lines: 2 written, 0 replayed, 1 invalid.\n"
    assert err == "line 4: prompt_tokens: Must be an integer.\n"
    assert error is not None
    c1, c2 = UsageRecord.objects.select_related("agent").order_by("request_id")
    assert (c1.agent.name, c1.is_batch, c1.tags, c1.provider_cost_usd) == (
        "planner",
        True,
        {"team": "red"},
        Decimal("0.01"),
    )
    assert (c2.agent.name, c2.status, c2.is_batch) == ("coder", "error", False)


def test_command_errors(acme, tmp_path):
    assert str(run("x.jsonl", "--organization", "globex")[2]) == "Organization 'globex' does not exist."
    assert str(run("x.jsonl", "--organization", "acme", "--project", "nope")[2]) == (
        "Project 'nope' does not exist in 'acme'."
    )
    assert str(run("x.jsonl", "--organization", "acme", "--batch-size", "0")[2]) == (
        "--batch-size must be between 1 and 1000."
    )
    missing = tmp_path / "missing.jsonl"
    assert str(run(str(missing), "--organization", "acme")[2]) == f"Cannot read {missing}: No such file or directory."


class PayloadSpy(CustomLogger):
    """litellm's standard logging payload and callback kwargs of each call, as its loggers get them."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.calls: list[tuple[dict, object]] = []
        self._expected = expected
        self.done = threading.Event()

    def _keep(self, kwargs, response_obj, failed):
        self.calls.append(({**kwargs, "failed": failed}, response_obj))
        if len(self.calls) == self._expected:
            self.done.set()

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._keep(kwargs, response_obj, False)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._keep(kwargs, response_obj, True)


@pytest.fixture
def spy():
    saved = {name: list(getattr(litellm, name)) for name in CALLBACK_LISTS}
    spy = PayloadSpy(expected=3)
    litellm.callbacks = [spy]
    yield spy
    for name, value in saved.items():
        setattr(litellm, name, value)


def test_litellm_payloads_import_as_the_client_reports_them(organization, project, tmp_path, spy):
    prices_sync(model_map={m: litellm.model_cost[m] for m in ("gpt-4o-mini", "text-embedding-3-small")})
    messages = [{"role": "user", "content": "hi"}]
    answer = mock_response("gpt-4o-mini", prompt=1200, completion=300, cached=200)
    litellm.completion(model="gpt-4o-mini", messages=messages, mock_response=answer, litellm_call_id="ok-1")
    litellm.embedding(model="text-embedding-3-small", input=["hello"], mock_response=[0.1], litellm_call_id="emb-1")
    with pytest.raises(litellm.InternalServerError):
        litellm.completion(
            model="gpt-4o-mini", messages=messages, mock_response=Exception("down"), litellm_call_id="x-1"
        )
    assert spy.done.wait(10)
    path = tmp_path / "litellm.jsonl"
    path.write_text("".join(json.dumps(k["standard_logging_object"], default=str) + "\n" for k, _ in spy.calls))

    out, _, error = run(str(path), "--organization", "acme", "--project", "search", "--agent", "planner")

    assert (out, error) == (f"{path}: 3 lines: 3 written, 0 replayed, 0 invalid.\n", None)
    rows = {r.request_id: r for r in UsageRecord.objects.all()}
    assert sorted(rows) == ["emb-1", "ok-1", "x-1:error"]
    ok = rows["ok-1"]
    assert (ok.model, ok.provider, ok.operation, ok.prompt_tokens, ok.cached_tokens, ok.completion_tokens) == (
        "gpt-4o-mini",
        "openai",
        "chat",
        1200,
        200,
        300,
    )
    assert (rows["emb-1"].operation, rows["x-1:error"].status) == ("embedding", "error")
    for kwargs, _ in spy.calls:
        row = rows[usage_from_litellm_payload(kwargs["standard_logging_object"])["request_id"]]
        assert row.cost_usd == Decimal(repr(kwargs["response_cost"])).quantize(Decimal("1e-12"))

    # The same calls reported live by the agent client carry the same request ids and usage.
    config = ClientConfig(url="u", api_key="k")
    shared = ("request_id", "model", "provider", "operation", "status", "prompt_tokens", "completion_tokens")
    shared += ("cached_tokens", "provider_cost_usd")
    for kwargs, response_obj in spy.calls:
        live = usage_from_call(kwargs, response_obj, None, None, failed=kwargs["failed"], config=config)
        imported = usage_from_litellm_payload(kwargs["standard_logging_object"])
        assert {k: live.get(k) for k in shared} == {k: imported.get(k) for k in shared}
