"""Seed the demo organization: Acme AI with projects, sprints, agents and 30 days of realistic usage.

Idempotent: the hierarchy is get-or-create, and the usage is a fixed number of records (a function of
``--days`` only) with request ids ``demo-000001`` …, so a rerun is a pure replay that adds no row and
changes no total. The usage goes through ``costs.services.ingest.usage_ingest`` with an
organization-scoped key, so demo costs are computed exactly as real traffic is.

Deterministic: every choice comes from one seeded ``random.Random``; only the absolute timestamps
follow the clock (the window always ends now).
"""

import hashlib
import math
import random
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from config.errors import ValidationFailed
from costs.models import CostSource, Organization, UsageRecord
from costs.services.api_keys import api_key_create
from costs.services.hierarchy import (
    agent_get_or_create,
    organization_get_or_create,
    project_get_or_create,
    sprint_get_or_create,
)
from costs.services.ingest import usage_ingest
from pricing.models import ModelPrice
from pricing.selectors import PriceBook

ORGANIZATION = {"slug": "acme", "name": "Acme AI", "timezone": "Europe/Berlin"}
ADMIN_USERNAME = "admin"
DEFAULT_ADMIN_PASSWORD = "spendguard-demo"
RECORDS_PER_DAY = 330  # 30 days -> 9,900 records
BATCH_SIZE = 1000
SEED = 20241022
# Sprints sit on a fixed two-week grid, so a rerun on a later day adds the new sprint and never
# makes one that overlaps an earlier run's.
SPRINT_GRID_START = date(2024, 1, 1)  # a Monday
SPRINT_DAYS = 14
SPRINT_HISTORY_DAYS = 42

# No price anywhere, on purpose: unpriced usage must be visible (DESIGN.md invariants).
UNPRICED_MODELS = ("acme-finetune-v2", "local/llama-3-70b-selfhosted")
# Provider per model name (what a gateway would report); unpriced ones are self-hosted.
PROVIDERS = {
    "gpt-4o": "openai",
    "gpt-4o-mini": "openai",
    "openai/gpt-4o-mini": "openai",
    "gpt-4.1": "openai",
    "gpt-4.1-mini": "openai",
    "o3-mini": "openai",
    "text-embedding-3-small": "openai",
    "claude-sonnet-4-5": "anthropic",
    "claude-haiku-4-5": "anthropic",
    "gemini/gemini-2.5-pro": "gemini",
    "gemini/gemini-2.5-flash": "gemini",
    "mistral/mistral-large-latest": "mistral",
    "deepseek/deepseek-chat": "deepseek",
    "groq/openai/gpt-oss-20b": "groq",
    "acme-finetune-v2": "",
    "local/llama-3-70b-selfhosted": "",
}
PRICED_MODELS = tuple(m for m in PROVIDERS if m not in UNPRICED_MODELS)
REASONING_MODELS = {"o3-mini", "gemini/gemini-2.5-flash", "gemini/gemini-2.5-pro"}
ANTHROPIC_MODELS = {"claude-sonnet-4-5", "claude-haiku-4-5"}
# Long-context requests (above the 200k-token tier) for these models now and then.
LONG_CONTEXT_MODELS = {"gemini/gemini-2.5-pro"}


@dataclass(frozen=True)
class AgentSpec:
    name: str
    description: str
    volume: float  # share of the organization's requests
    rhythm: str  # see RHYTHMS
    models: tuple[tuple[str, float], ...]  # model name, share
    prompt: int  # median prompt tokens
    completion: int  # median completion tokens
    operation: str = "chat"
    model_override: str = ""
    batch: bool = False
    # Tagged {"latency": "insensitive"}: work that could wait for the batch API (see recommendations).
    latency_insensitive: bool = False
    # False: the agent sends no cache_control / stable prefix, so the provider caches nothing.
    prompt_caching: bool = True
    # Now and then (1 request in ~30, picked from the prompt size, not the random stream) an answer
    # runs away to 6x its usual length: the long tail a max_tokens cap would cut.
    runaway_answers: bool = False


@dataclass(frozen=True)
class ProjectSpec:
    slug: str
    name: str
    agents: tuple[AgentSpec, ...]


PROJECTS = (
    ProjectSpec(
        "support-bot",
        "Support bot",
        (
            AgentSpec(
                "triage",
                "Classifies incoming tickets and routes them.",
                0.22,
                "customer",
                (("gpt-4o-mini", 0.6), ("openai/gpt-4o-mini", 0.2), ("claude-haiku-4-5", 0.2)),
                900,
                60,
            ),
            AgentSpec(
                "responder",
                "Drafts answers with the knowledge base in context.",
                0.14,
                "customer",
                (("gpt-4.1", 0.5), ("claude-sonnet-4-5", 0.3), ("gpt-4o", 0.2)),
                3500,
                450,
            ),
            AgentSpec(
                "kb-embedder",
                "Embeds help-center articles and ticket threads.",
                0.08,
                "customer",
                (("text-embedding-3-small", 1.0),),
                1200,
                0,
                operation="embedding",
            ),
            AgentSpec(
                "escalation-summarizer",
                "Summarizes long threads for human agents.",
                0.04,
                "office",
                (("gpt-4o", 0.6), ("acme-finetune-v2", 0.4)),
                6000,
                350,
            ),
        ),
    ),
    ProjectSpec(
        "code-review",
        "Code review",
        (
            AgentSpec(
                "pr-reviewer",
                "Reviews pull requests with the diff and related files.",
                0.09,
                "ci",
                (("claude-sonnet-4-5", 0.7), ("gpt-4.1", 0.3)),
                14000,
                900,
                prompt_caching=False,
            ),
            AgentSpec(
                "test-writer",
                "Proposes unit tests for changed code.",
                0.05,
                "ci",
                (("o3-mini", 0.6), ("deepseek/deepseek-chat", 0.4)),
                5000,
                1800,
            ),
            AgentSpec(
                "lint-explainer",
                "Explains linter findings in plain words.",
                0.06,
                "ci",
                (("groq/openai/gpt-oss-20b", 0.7), ("gpt-4.1-mini", 0.3)),
                1500,
                200,
            ),
        ),
    ),
    ProjectSpec(
        "research",
        "Research",
        (
            AgentSpec(
                "literature-scout",
                "Reads papers and reports whole; long context.",
                0.04,
                "office",
                (("gemini/gemini-2.5-pro", 0.5), ("gemini/gemini-2.5-flash", 0.5)),
                40000,
                1200,
                latency_insensitive=True,
            ),
            AgentSpec(
                "analyst",
                "Multi-step reasoning over collected findings.",
                0.04,
                "office",
                (("o3-mini", 0.5), ("claude-sonnet-4-5", 0.5)),
                8000,
                2500,
                runaway_answers=True,
            ),
            AgentSpec(
                "citation-checker",
                "Checks claims against sources.",
                0.05,
                "office",
                (("mistral/mistral-large-latest", 0.6), ("gpt-4o-mini", 0.4)),
                2500,
                150,
                model_override="gpt-4o-mini",
            ),
            AgentSpec(
                "paper-embedder",
                "Embeds paper chunks for retrieval.",
                0.05,
                "office",
                (("text-embedding-3-small", 1.0),),
                6000,
                0,
                operation="embedding",
            ),
        ),
    ),
    ProjectSpec(
        "data-pipeline",
        "Data pipeline",
        (
            AgentSpec(
                "extractor",
                "Pulls structured fields out of documents.",
                0.08,
                "always",
                (("gpt-4.1-mini", 0.5), ("gemini/gemini-2.5-flash", 0.3), ("local/llama-3-70b-selfhosted", 0.2)),
                2200,
                400,
                latency_insensitive=True,
            ),
            AgentSpec(
                "classifier",
                "Labels records for downstream jobs.",
                0.07,
                "always",
                (("deepseek/deepseek-chat", 0.5), ("acme-finetune-v2", 0.3), ("gpt-4o-mini", 0.2)),
                700,
                20,
            ),
            AgentSpec(
                "nightly-batch",
                "Nightly enrichment through the batch API.",
                0.05,
                "nightly",
                (("gpt-4o-mini", 0.7), ("gpt-4.1", 0.3)),
                1800,
                300,
                batch=True,
            ),
        ),
    ),
)

# Relative request rate by local hour and weekday (0 = Monday).
RHYTHMS = {
    # People at work: office hours on weekdays.
    "office": lambda hour, weekday: (
        (1.0 if 9 <= hour < 18 else 0.3 if 7 <= hour < 21 else 0.04) * (1.0 if weekday < 5 else 0.15)
    ),
    # Customers: all day with an evening peak, quieter at night and weekends.
    "customer": lambda hour, weekday: (
        (1.0 if 8 <= hour < 23 else 0.2) * (1.3 if 18 <= hour < 22 else 1.0) * (1.0 if weekday < 5 else 0.6)
    ),
    # CI: pull requests during the working week only.
    "ci": lambda hour, weekday: (1.0 if 9 <= hour < 19 else 0.15) * (1.0 if weekday < 5 else 0.05),
    # Pipelines: around the clock, busier on weekdays.
    "always": lambda hour, weekday: (1.0 if 6 <= hour < 22 else 0.6) * (1.0 if weekday < 5 else 0.7),
    # Nightly jobs: 01:00-04:59 every day.
    "nightly": lambda hour, weekday: 1.0 if 1 <= hour < 5 else 0.0,
}


def _lognormal(rng: random.Random, median: int, sigma: float = 0.6) -> int:
    return max(1, int(median * math.exp(rng.gauss(0, sigma))))


def demo_usage(*, days: int, now: datetime, tz: zoneinfo.ZoneInfo) -> list[dict]:
    """``days`` × RECORDS_PER_DAY usage objects (public API shape) ending at ``now``, oldest first,
    with request ids ``demo-000001`` … in time order. The count and ids depend on ``days`` only."""
    rng = random.Random(SEED)
    total = days * RECORDS_PER_DAY
    hours = days * 24
    slot_starts = [now - timedelta(hours=h + 1) for h in range(hours)]  # slot h covers (now-h-1h, now-h]
    local = [(s + timedelta(minutes=30)).astimezone(tz) for s in slot_starts]
    # Traffic grows ~30% over the window; one runaway-loop incident at 30% of the way back.
    growth = [1.3 - 0.3 * h / hours for h in range(hours)]
    incident = set(range(int(hours * 0.3), int(hours * 0.3) + 3))

    agents = [(project, agent) for project in PROJECTS for agent in project.agents]
    volume = sum(agent.volume for _, agent in agents)
    counts = [int(total * agent.volume / volume) for _, agent in agents]
    counts[0] += total - sum(counts)  # exact total, whatever the rounding

    records = []
    for (project, agent), count in zip(agents, counts, strict=True):
        rhythm = RHYTHMS[agent.rhythm]
        weights = [rhythm(t.hour, t.weekday()) * growth[h] for h, t in enumerate(local)]
        if agent.name == "analyst":
            weights = [w * 40 if h in incident else w for h, w in enumerate(weights)]
        models, shares = zip(*agent.models, strict=True)
        for slot in rng.choices(range(hours), weights=weights, k=count):
            offset = timedelta(milliseconds=rng.randrange(3_600_000))
            records.append(
                (slot, -offset.total_seconds(), _record(rng, project, agent, rng.choices(models, shares)[0]), offset)
            )
    # Oldest first (largest slot, earliest offset); ids follow that order.
    records.sort(key=lambda item: (-item[0], -item[1]))
    usage = []
    for number, (slot, _, record, offset) in enumerate(records, start=1):
        record["request_id"] = f"demo-{number:06d}"
        record["occurred_at"] = (slot_starts[slot] + offset).isoformat()
        usage.append(record)
    return usage


def _record(rng: random.Random, project: ProjectSpec, agent: AgentSpec, model: str) -> dict:
    prompt = _lognormal(rng, agent.prompt)
    if model in LONG_CONTEXT_MODELS and rng.random() < 0.06:
        prompt = rng.randint(210_000, 600_000)
    completion = 0 if agent.operation == "embedding" else _lognormal(rng, agent.completion, 0.5)
    if agent.runaway_answers and prompt % 29 == 0:
        completion *= 6
    cached = cache_write = reasoning = 0
    if agent.operation != "embedding":
        if model in ANTHROPIC_MODELS:
            roll = rng.random()
            if roll < 0.12:  # first request of a conversation writes the cache
                cache_write = int(prompt * rng.uniform(0.5, 0.9))
            elif roll < 0.55:
                cached = int(prompt * rng.uniform(0.5, 0.9))
        elif model not in UNPRICED_MODELS and prompt >= 1024 and rng.random() < 0.4:
            cached = int(prompt * rng.uniform(0.3, 0.8)) // 128 * 128  # automatic prefix caching, 128-token steps
        if not agent.prompt_caching:  # the random draws above still happen: the stream stays the same
            cached = cache_write = 0
        if model in REASONING_MODELS:
            reasoning = int(completion * rng.uniform(0.3, 0.8))
            completion += reasoning  # reasoning tokens are part of completion_tokens
    status = "success"
    if rng.random() < 0.02:
        status, completion, reasoning, cached, cache_write = "error", 0, 0, 0, 0
    record = {
        "project": project.slug,
        "agent": agent.name,
        "model": model,
        "provider": PROVIDERS[model],
        "operation": agent.operation,
        "status": status,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "cache_creation_tokens": cache_write,
        "reasoning_tokens": reasoning,
        "batch": agent.batch,
        "latency_ms": int(150 + completion * rng.uniform(8, 25) + prompt * 0.01),
        "tags": {"env": "staging" if rng.random() < 0.08 else "prod"},
    }
    if agent.latency_insensitive:
        record["tags"]["latency"] = "insensitive"
    if project.slug == "support-bot":
        record["end_user"] = f"customer-{rng.randint(1, 400):04d}"
        record["tags"]["channel"] = rng.choice(("chat", "email", "chat", "widget"))
    elif project.slug == "code-review":
        record["tags"]["repo"] = rng.choice(("acme/api", "acme/web", "acme/infra"))
    # Repeated prompt templates: the later "cache this prompt" recommendations look for them.
    template = rng.randrange(40)
    record["prompt_hash"] = hashlib.sha256(f"{agent.name}:{template}".encode()).hexdigest()[:32]
    return record


def _sprint_starts(today: date) -> list[date]:
    first = (today - timedelta(days=SPRINT_HISTORY_DAYS) - SPRINT_GRID_START).days // SPRINT_DAYS
    last = (today - SPRINT_GRID_START).days // SPRINT_DAYS
    return [SPRINT_GRID_START + timedelta(days=SPRINT_DAYS * k) for k in range(first, last + 1)]


def _batches(records: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


class Command(BaseCommand):
    help = "Seed the demo organization 'Acme AI' with projects, sprints, agents and usage (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--days", type=int, default=30, help="Days of usage ending now (default 30).")
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="Where the demo is served, for the printed URLs."
        )
        parser.add_argument(
            "--admin-password", default=DEFAULT_ADMIN_PASSWORD, help="Password set on the 'admin' superuser."
        )

    def handle(self, *args, days: int, base_url: str, admin_password: str, **options) -> None:
        if not 1 <= days <= 366:
            raise CommandError("--days must be between 1 and 366.")
        if not ModelPrice.objects.exists():
            raise CommandError("The price catalog is empty: run `manage.py sync_prices` first.")
        now = timezone.now()
        base_url = base_url.rstrip("/")

        organization, counts = self._hierarchy(now)
        self._warn_unpriced(now)
        api_key, secret = api_key_create(organization=organization, name=f"demo key {now:%Y-%m-%d %H:%M} UTC")
        records = demo_usage(days=days, now=now, tz=organization.tzinfo)
        written = replayed = 0
        for batch in _batches(records, BATCH_SIZE):
            for item in usage_ingest(api_key=api_key, records=batch, now=now):
                replayed += item.replayed
                written += not item.replayed
        self._ensure_admin(admin_password)

        totals = UsageRecord.objects.filter(organization=organization).aggregate(
            rows=Count("id"),
            cost=Sum("cost_usd"),
            unpriced=Count("id", filter=Q(cost_source=CostSource.UNPRICED)),
        )
        cost = totals["cost"] or Decimal(0)
        out = self.stdout.write
        out(
            f"Organization {organization.name!r} ({organization.slug}, {organization.timezone}): "
            f"{counts['projects']} projects, {counts['sprints']} sprints, {counts['agents']} agents."
        )
        out(
            f"Usage: {len(records):,} demo records over {days} days — {written:,} written, {replayed:,} already there. "
            f"Ledger: {totals['rows']:,} records, ${cost:,.2f}, {totals['unpriced']:,} unpriced "
            f"({', '.join(UNPRICED_MODELS)})."
        )
        out("")
        out(f"  Admin:    {base_url}/admin/")
        out(f"  Reports:  {base_url}/reports/   API docs: {base_url}/api/v1/docs/")
        out(f"  Login:    {ADMIN_USERNAME} / {admin_password}")
        out(f"  API key:  {secret}")
        out("            (organization 'acme'; stored hashed, shown only now — each run makes a new one)")
        out("")
        out("  Record one request:")
        out(f"    curl -s {base_url}/api/v1/usage/ \\")
        out(f'      -H "Authorization: Bearer {secret}" \\')
        out('      -H "Content-Type: application/json" \\')
        out(
            """      -d '{"request_id": "curl-1", "project": "support-bot", "agent": "triage", """
            """"model": "gpt-4o-mini", "prompt_tokens": 1200, "completion_tokens": 300}'"""
        )

    @transaction.atomic
    def _hierarchy(self, now: datetime) -> tuple[Organization, dict[str, int]]:
        organization, _ = organization_get_or_create(**ORGANIZATION)
        today = now.astimezone(organization.tzinfo).date()
        counts = {"projects": 0, "sprints": 0, "agents": 0}
        try:
            for spec in PROJECTS:
                project, _ = project_get_or_create(organization=organization, slug=spec.slug, name=spec.name)
                counts["projects"] += 1
                for start in _sprint_starts(today):
                    end = start + timedelta(days=SPRINT_DAYS - 1)
                    sprint_get_or_create(
                        project=project,
                        slug=f"sprint-{start.isoformat()}",
                        name=f"Sprint {start:%d %b} – {end:%d %b %Y}",
                        start_date=start,
                        end_date=end,
                    )
                for agent in spec.agents:
                    agent_get_or_create(
                        project=project,
                        name=agent.name,
                        description=agent.description,
                        model_override=agent.model_override,
                    )
                counts["agents"] += len(spec.agents)
                counts["sprints"] += project.sprints.count()
        except ValidationFailed as exc:
            raise CommandError(f"Cannot seed {organization.slug!r}: {exc.message} {exc.fields}") from exc
        return organization, counts

    def _warn_unpriced(self, now: datetime) -> None:
        book = PriceBook((model, PROVIDERS[model]) for model in PRICED_MODELS)
        missing = [model for model in PRICED_MODELS if book.resolve(model, PROVIDERS[model], now) is None]
        if missing:
            self.stderr.write(
                f"Warning: no catalog price for {', '.join(missing)}; their demo usage is recorded as unpriced."
            )

    def _ensure_admin(self, password: str) -> None:
        user, _ = get_user_model().objects.get_or_create(username=ADMIN_USERNAME)
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
