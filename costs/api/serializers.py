"""Shapes of the usage API.

The serializers here *declare* the request and response shapes for the OpenAPI schema
(drf-spectacular); they are not run per record — ingest validation is hand-written
(:mod:`costs.services.usage_input`) and answers are built by :func:`usage_record_payload`, because
per-record serializer work costs more than the rest of a 1,000-record batch.
"""

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from rest_framework import serializers

from costs.models import CostSource, Operation, UsageRecord, UsageStatus
from pricing.calculator import format_usd

_MONEY_HELP = 'USD as a decimal string, e.g. "0.002475"; null when not applicable.'


def usage_record_payload(row: UsageRecord, *, replayed: bool | None = None) -> dict:
    """The public JSON form of a ledger row (money as decimal strings). ``replayed`` is included
    only in answers to POST, where it says whether the row already existed.

    ``row`` must have organization, project, sprint and agent loaded (the ingest service and
    :func:`costs.selectors.usage_records_visible` do).
    """
    return _Payloads().build(row, replayed)


def usage_record_payloads(items: Iterable[tuple[UsageRecord, bool | None]]) -> list[dict]:
    """:func:`usage_record_payload` for many ``(row, replayed)`` pairs. Names of related objects and
    money strings are worked out once per distinct value: a batch of 1,000 rows has a handful."""
    payloads = _Payloads()
    return [payloads.build(row, replayed) for row, replayed in items]


def usage_record_summaries(items: Iterable[tuple[UsageRecord, bool]]) -> list[dict]:
    """The batch answer's per-record objects (:class:`IngestedSummarySerializer`): what a batch
    sender needs to reconcile its records — id, replay flag, attribution, cost. Echoing the full
    row (30 fields) back for 1,000 records would cost more than validating and storing them."""
    payloads = _Payloads()
    return [payloads.summary(row, replayed) for row, replayed in items]


class _Payloads:
    __slots__ = ("agents", "money", "organizations", "projects", "sprints")

    def __init__(self) -> None:
        self.money: dict[Decimal, str] = {}
        self.organizations: dict[int, str] = {}
        self.projects: dict[int, str] = {}
        self.sprints: dict[int | None, str | None] = {None: None}
        self.agents: dict[int, str] = {}

    def usd(self, amount: Decimal | None) -> str | None:
        if amount is None:
            return None
        text = self.money.get(amount)
        if text is None:
            # Equal Decimals (0.50 and 0.5) share a hash and format_usd gives them the same text.
            text = self.money[amount] = format_usd(amount)
        return text

    def summary(self, row: UsageRecord, replayed: bool) -> dict:
        return {
            "id": row.id,
            "request_id": row.request_id,
            "replayed": replayed,
            "project": self._name(self.projects, row.project_id, lambda: row.project.slug),
            "sprint": self._name(self.sprints, row.sprint_id, lambda: row.sprint.slug),
            "agent": self._name(self.agents, row.agent_id, lambda: row.agent.name),
            "model": row.model,
            "cost_usd": self.usd(row.cost_usd),
            "cost_source": row.cost_source,
            "price_id": row.price_id,
        }

    @staticmethod
    def _name(cache: dict, key: int | None, load) -> str | None:
        try:
            return cache[key]
        except KeyError:
            value = cache[key] = load()
            return value

    def build(self, row: UsageRecord, replayed: bool | None) -> dict:
        organization = self.organizations.get(row.organization_id)
        if organization is None:
            organization = self.organizations[row.organization_id] = row.organization.slug
        project = self.projects.get(row.project_id)
        if project is None:
            project = self.projects[row.project_id] = row.project.slug
        sprint_id = row.sprint_id
        if sprint_id in self.sprints:
            sprint = self.sprints[sprint_id]
        else:
            sprint = self.sprints[sprint_id] = row.sprint.slug
        agent = self.agents.get(row.agent_id)
        if agent is None:
            agent = self.agents[row.agent_id] = row.agent.name
        usd = self.usd
        reservation_id = row.reservation_id

        # One dict literal (no update(**kwargs) round trip): this runs 1,000 times per batch answer.
        payload = {
            "id": row.id,
            "request_id": row.request_id,
            "replayed": replayed,
            "organization": organization,
            "project": project,
            "sprint": sprint,
            "agent": agent,
            "model": row.model,
            "provider": row.provider,
            "operation": row.operation,
            "status": row.status,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "cached_tokens": row.cached_tokens,
            "cache_creation_tokens": row.cache_creation_tokens,
            "reasoning_tokens": row.reasoning_tokens,
            "batch": row.is_batch,
            "occurred_at": _iso(row.occurred_at),
            "cost_usd": usd(row.cost_usd),
            "cost_source": row.cost_source,
            "input_cost_usd": usd(row.input_cost_usd),
            "cached_input_cost_usd": usd(row.cached_input_cost_usd),
            "cache_creation_cost_usd": usd(row.cache_creation_cost_usd),
            "output_cost_usd": usd(row.output_cost_usd),
            "computed_cost_usd": usd(row.computed_cost_usd),
            "provider_cost_usd": usd(row.provider_cost_usd),
            "price_id": row.price_id,
            "reservation_id": str(reservation_id) if reservation_id is not None else None,
            "tags": row.tags,
            "latency_ms": row.latency_ms,
            "end_user": row.end_user,
            "prompt_hash": row.prompt_hash,
        }
        if replayed is None:
            del payload["replayed"]
        return payload


def _iso(moment: datetime) -> str:
    """UTC, ISO 8601, ``Z`` suffix (as DRF renders datetimes)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# --- schema-only declarations -------------------------------------------------------------------


class UsageInputSerializer(serializers.Serializer):
    """One usage object (DESIGN.md, "Usage object"). Token convention: cached and cache-write tokens
    are part of ``prompt_tokens``; reasoning tokens are part of ``completion_tokens``."""

    request_id = serializers.CharField(max_length=128, help_text="Idempotency key, unique per organization.")
    project = serializers.SlugField(
        required=False, help_text="Project slug; the key's project when omitted (required for organization keys)."
    )
    sprint = serializers.SlugField(
        required=False, help_text="Sprint slug; default: the project's sprint containing occurred_at."
    )
    agent = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Agent name; the key's agent when omitted. Unknown names register under project/org keys.",
    )
    model = serializers.CharField(max_length=255, help_text="As sent to the provider; 'openai/gpt-4o' accepted.")
    provider = serializers.CharField(required=False, max_length=64, allow_blank=True)
    prompt_tokens = serializers.IntegerField(min_value=0)
    completion_tokens = serializers.IntegerField(min_value=0)
    cached_tokens = serializers.IntegerField(min_value=0, required=False, default=0)
    cache_creation_tokens = serializers.IntegerField(min_value=0, required=False, default=0)
    reasoning_tokens = serializers.IntegerField(min_value=0, required=False, default=0)
    occurred_at = serializers.DateTimeField(
        required=False, help_text="ISO 8601 with offset; default now; at most 5 minutes in the future."
    )
    operation = serializers.ChoiceField(choices=Operation.choices, required=False, default=Operation.CHAT)
    status = serializers.ChoiceField(choices=UsageStatus.choices, required=False, default=UsageStatus.SUCCESS)
    latency_ms = serializers.IntegerField(min_value=0, required=False)
    end_user = serializers.CharField(max_length=255, required=False, allow_blank=True)
    tags = serializers.DictField(
        required=False, help_text="Up to 50 keys (<= 64 chars) to string (<= 256 chars), number or boolean."
    )
    prompt_hash = serializers.CharField(max_length=128, required=False, allow_blank=True)
    batch = serializers.BooleanField(required=False, default=False, help_text="Sent through a batch API.")
    provider_cost_usd = serializers.DecimalField(
        max_digits=24, decimal_places=12, min_value=0, required=False, help_text="Provider-reported cost, USD."
    )
    reservation_id = serializers.UUIDField(required=False, help_text="The budget-check reservation this settles.")


class UsageBatchInputSerializer(serializers.Serializer):
    records = UsageInputSerializer(many=True, help_text="1 to 1,000 usage objects; all or nothing.")


class UsageRecordSerializer(serializers.Serializer):
    """A ledger row."""

    id = serializers.IntegerField()
    request_id = serializers.CharField()
    organization = serializers.SlugField()
    project = serializers.SlugField()
    sprint = serializers.SlugField(allow_null=True)
    agent = serializers.CharField()
    model = serializers.CharField()
    provider = serializers.CharField()
    operation = serializers.ChoiceField(choices=Operation.choices)
    status = serializers.ChoiceField(choices=UsageStatus.choices)
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    cache_creation_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    batch = serializers.BooleanField()
    occurred_at = serializers.DateTimeField()
    cost_usd = serializers.CharField(allow_null=True, help_text="What this row charges; null when unpriced.")
    cost_source = serializers.ChoiceField(choices=CostSource.choices)
    input_cost_usd = serializers.CharField(allow_null=True, help_text=_MONEY_HELP)
    cached_input_cost_usd = serializers.CharField(allow_null=True, help_text=_MONEY_HELP)
    cache_creation_cost_usd = serializers.CharField(allow_null=True, help_text=_MONEY_HELP)
    output_cost_usd = serializers.CharField(allow_null=True, help_text=_MONEY_HELP)
    computed_cost_usd = serializers.CharField(allow_null=True, help_text=_MONEY_HELP)
    provider_cost_usd = serializers.CharField(allow_null=True, help_text=_MONEY_HELP)
    price_id = serializers.IntegerField(allow_null=True, help_text="The catalog price row used.")
    reservation_id = serializers.UUIDField(allow_null=True)
    tags = serializers.DictField()
    latency_ms = serializers.IntegerField(allow_null=True)
    end_user = serializers.CharField()
    prompt_hash = serializers.CharField()


class IngestedRecordSerializer(UsageRecordSerializer):
    replayed = serializers.BooleanField(help_text="True when this request_id was already recorded (nothing new).")


class IngestedSummarySerializer(serializers.Serializer):
    """One record of a batch answer: identity, attribution and cost (the full row is at
    ``GET /api/v1/usage/<id>/``)."""

    id = serializers.IntegerField()
    request_id = serializers.CharField()
    replayed = serializers.BooleanField(help_text="True when this request_id was already recorded (nothing new).")
    project = serializers.SlugField()
    sprint = serializers.SlugField(allow_null=True)
    agent = serializers.CharField()
    model = serializers.CharField()
    cost_usd = serializers.CharField(allow_null=True, help_text="What this row charges; null when unpriced.")
    cost_source = serializers.ChoiceField(choices=CostSource.choices)
    price_id = serializers.IntegerField(allow_null=True, help_text="The catalog price row used.")


class IngestedBatchSerializer(serializers.Serializer):
    records = IngestedSummarySerializer(many=True, help_text="In input order.")


class ApiErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable error code, e.g. validation_error, out_of_scope.")
    message = serializers.CharField()
    fields = serializers.DictField(help_text='Field errors; for a batch: {"records": {"<index>": {...}}}.')


class ApiErrorSerializer(serializers.Serializer):
    error = ApiErrorDetailSerializer()
