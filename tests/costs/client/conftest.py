"""Fixtures for the agent client against a live test server (real PostgreSQL), fully offline.

litellm never reaches a provider here: calls use ``mock_response=`` or the ``sgtest`` custom
provider (:class:`RecordingProvider`), which records the model each call reached it with.
"""

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is first imported

import datetime as dt
from decimal import Decimal

import litellm
import pytest
from litellm import CustomLLM, ModelResponse
from litellm.types.utils import Usage

from budgets.models import Budget
from budgets.services.enforcement import check_caches_clear
from costs.client import Spendguard
from costs.services.api_keys import api_key_create
from pricing.services import prices_sync
from tests.costs.client.loopback import LoopbackProxy
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

# Models the tests call, priced in the catalog from litellm's own map so costs can be compared.
CATALOG_MODELS = ("gpt-4o", "gpt-4o-mini", "o3-mini", "text-embedding-3-small", "claude-sonnet-4-5")
CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
)
MESSAGES = [{"role": "user", "content": "Summarise the incident report in one line."}]


def usd(value: float | str) -> Decimal:
    """A litellm cost as the ledger stores it (12 decimal places)."""
    return Decimal(repr(value) if isinstance(value, float) else value).quantize(Decimal("1e-12"))


def mock_response(model: str, *, prompt: int, completion: int, cached: int = 0, reasoning: int = 0, **extra):
    """A provider answer with exactly this usage (litellm prices it as it would a real one)."""
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details={"cached_tokens": cached} if cached else None,
        completion_tokens_details={"reasoning_tokens": reasoning} if reasoning else None,
        **extra,
    )
    return ModelResponse(
        model=model,
        choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Done."}}],
        usage=usage,
    )


class RecordingProvider(CustomLLM):
    """litellm provider ``sgtest``: records each model it is called with and answers with
    ``prompt_tokens`` / ``completion_tokens`` of usage."""

    def __init__(self) -> None:
        super().__init__()
        self.models: list[str] = []
        self.prompt_tokens, self.completion_tokens = 100, 20
        self.fail = False

    def completion(self, *args, **kwargs):
        model = kwargs.get("model") or args[0]
        self.models.append(model)
        if self.fail:
            raise litellm.ServiceUnavailableError(message="overloaded", llm_provider="sgtest", model=model)
        return mock_response(model, prompt=self.prompt_tokens, completion=self.completion_tokens)

    async def acompletion(self, *args, **kwargs):
        return self.completion(*args, **kwargs)


@pytest.fixture(autouse=True)
def _isolated_litellm():
    """Each test sees only its own callbacks and providers (litellm keeps them in module globals)."""
    saved = {name: list(getattr(litellm, name)) for name in CALLBACK_LISTS}
    saved_providers = list(litellm.custom_provider_map)
    litellm.suppress_debug_info = True
    for name in CALLBACK_LISTS:
        setattr(litellm, name, [])
    yield
    for name, value in saved.items():
        setattr(litellm, name, value)
    litellm.custom_provider_map = saved_providers


@pytest.fixture(autouse=True)
def _fresh_check_caches():
    """The check caches prices per process and the live server shares this one."""
    check_caches_clear()
    yield
    check_caches_clear()


@pytest.fixture
def catalog(transactional_db):
    prices_sync(model_map={model: litellm.model_cost[model] for model in CATALOG_MODELS})


@pytest.fixture
def acme(transactional_db, catalog):
    """Organization acme, project search (with a sprint running today), agent planner, and a
    project-scoped API key."""
    organization = OrganizationFactory(slug="acme", name="Acme")
    project = ProjectFactory(organization=organization, slug="search", name="Search")
    today = dt.datetime.now(dt.UTC).date()
    sprint = SprintFactory(
        project=project, slug="s-now", start_date=today - dt.timedelta(days=3), end_date=today + dt.timedelta(days=3)
    )
    agent = AgentFactory(project=project, name="planner")
    _, secret = api_key_create(organization=organization, project=project, name="agent key")
    return {"organization": organization, "project": project, "sprint": sprint, "agent": agent, "secret": secret}


@pytest.fixture
def provider():
    handler = RecordingProvider()
    litellm.custom_provider_map = [{"provider": "sgtest", "custom_handler": handler}]
    return handler


@pytest.fixture
def proxy(live_server):
    port = int(live_server.url.rsplit(":", 1)[1])
    loopback = LoopbackProxy(port)
    loopback.start()
    yield loopback
    loopback.release()
    loopback.stop()


@pytest.fixture
def make_client(acme, live_server, tmp_path):
    """``make_client(**settings)`` -> a Spendguard client for acme's key against the live server,
    registered with litellm, with short backoffs; closed after the test."""
    clients = []

    def _make(**settings) -> Spendguard:
        options = {
            "url": live_server.url,
            "api_key": acme["secret"],
            "spool_dir": tmp_path / "spool",
            "batch_size": 50,
            "flush_interval": 0.05,
            "retries": 2,
            "backoff": 0.01,
            "max_backoff": 0.05,
            "send_timeout": 10.0,
            "check_timeout": 10.0,
            "register_atexit": False,
            **settings,
        }
        client = Spendguard(**options)
        clients.append(client)
        client.install()
        return client

    yield _make
    for client in clients:
        client.close(timeout=5)


def hard_budget(agent, limit_usd: str, **fields) -> Budget:
    return Budget.objects.create(
        organization=agent.project.organization,
        agent=agent,
        name=fields.pop("name", "agent cap"),
        limit_usd=Decimal(limit_usd),
        period=fields.pop("period", "monthly"),
        enforcement="hard",
        **fields,
    )
