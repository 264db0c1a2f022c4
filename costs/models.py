"""The attribution hierarchy (Organization › Project › Sprint › Agent) and the usage ledger.

Money is Decimal USD with 12 decimal places (pico-dollars): one token of the cheapest embedding
models costs ~1e-11 USD, and rounding each row to cents would lose real spend in aggregate.
"""

import hashlib
import secrets
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import models
from django.db.models import F, Q

MONEY_FIELD_KWARGS = {"max_digits": 24, "decimal_places": 12}


def _validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"Unknown time zone {value!r}.") from exc


def validate_email_list(value: str) -> None:
    """Comma- or newline-separated e-mail addresses (blank: none)."""
    bad = [address for address in split_email_list(value) if not _is_email(address, validate_email)]
    if bad:
        raise ValidationError(f"Not an e-mail address: {', '.join(bad)}.")


def _is_email(address: str, validator) -> bool:
    try:
        validator(address)
    except ValidationError:
        return False
    return True


def split_email_list(value: str) -> list[str]:
    return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]


class Organization(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    # Dates (sprint membership, calendar budget periods) are taken in this zone.
    timezone = models.CharField(max_length=64, default="UTC", validators=[_validate_timezone])
    # Alert contacts: who gets every budget alert of the organization (comma-separated e-mails), and an
    # optional Slack-compatible incoming webhook (a JSON {"text": ...} POST per alert).
    alert_emails = models.TextField(blank=True, default="", validators=[validate_email_list])
    alert_webhook_url = models.URLField(
        max_length=500, blank=True, default="", validators=[URLValidator(schemes=["http", "https"])]
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class Project(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "slug"], name="project_slug_unique_in_org"),
        ]

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.slug}"


class Sprint(models.Model):
    """A date range inside a project; ``start_date`` and ``end_date`` are both included and read in
    the organization's time zone. Sprints of one project do not overlap (checked in ``clean``)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sprints")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100)
    start_date = models.DateField()
    end_date = models.DateField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "start_date"]
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="sprint_slug_unique_in_project"),
            models.CheckConstraint(condition=Q(start_date__lte=F("end_date")), name="sprint_start_before_end"),
        ]
        indexes = [models.Index(fields=["project", "start_date", "end_date"], name="sprint_project_dates_idx")]

    def __str__(self) -> str:
        return f"{self.project}/{self.slug}"

    def clean(self) -> None:
        if self.start_date and self.end_date and self.project_id:
            overlapping = Sprint.objects.filter(
                project_id=self.project_id, start_date__lte=self.end_date, end_date__gte=self.start_date
            ).exclude(pk=self.pk)
            if overlapping.exists():
                raise ValidationError(
                    f"Overlaps sprint {overlapping.first().slug!r} of the same project; sprints may not overlap."
                )


class AgentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"


class Agent(models.Model):
    """A named worker inside a project (registered by an operator or on first usage)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=AgentStatus.choices, default=AgentStatus.ACTIVE)
    # When set, budget checks steer this agent to this model.
    model_override = models.CharField(max_length=255, blank=True, default="")
    description = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="agent_name_unique_in_project"),
        ]

    def __str__(self) -> str:
        return f"{self.project}/{self.name}"


class ApiKey(models.Model):
    """An agent's credential. Only the SHA-256 of the secret is stored; the secret is shown once.

    Scope: the organization, optionally narrowed to one project, optionally to one agent of it.
    (SHA-256 rather than a slow password hash: keys are 256-bit random, so there is nothing to
    brute-force, and the lookup sits on every ingest request.)
    """

    PREFIX = "sg_"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, help_text="First characters of the key, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["organization", "name"]
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=Q(agent__isnull=True) | Q(project__isnull=False), name="apikey_agent_needs_project"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def scope(self) -> str:
        if self.agent_id:
            return "agent"
        if self.project_id:
            return "project"
        return "organization"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @staticmethod
    def hash_secret(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def generate_secret(cls) -> str:
        return cls.PREFIX + secrets.token_urlsafe(32)


class Operation(models.TextChoices):
    CHAT = "chat", "Chat"
    COMPLETION = "completion", "Completion"
    EMBEDDING = "embedding", "Embedding"
    RESPONSES = "responses", "Responses"
    IMAGE = "image_generation", "Image generation"
    AUDIO_TRANSCRIPTION = "audio_transcription", "Audio transcription"
    AUDIO_SPEECH = "audio_speech", "Audio speech"
    RERANK = "rerank", "Rerank"
    MODERATION = "moderation", "Moderation"
    OTHER = "other", "Other"


class UsageStatus(models.TextChoices):
    SUCCESS = "success", "Success"
    ERROR = "error", "Error"


class CostSource(models.TextChoices):
    COMPUTED = "computed", "Computed from the price catalog"
    PROVIDED = "provided", "Provider-reported (no catalog price)"
    ESTIMATED = "estimated", "Estimated"
    UNPRICED = "unpriced", "Unpriced (no price known)"


class UsageRecordQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("The usage ledger is append-only: record a correction as a new row.")

    def unpriced(self) -> "UsageRecordQuerySet":
        return self.filter(cost_source=CostSource.UNPRICED)


class UsageRecord(models.Model):
    """One LLM request: the append-only ledger. Rows are never updated; a correction is a new row.

    Token convention (OpenAI / litellm): ``cached_tokens`` and ``cache_creation_tokens`` are part of
    ``prompt_tokens``; ``reasoning_tokens`` are part of ``completion_tokens``.
    """

    # No single-column FK indexes: the composite "<fk>, occurred_at" indexes below lead with each of
    # these columns and serve the same lookups; every extra index slows each ledger insert.
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="usage_records", db_index=False
    )
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="usage_records", db_index=False)
    sprint = models.ForeignKey(
        Sprint, on_delete=models.PROTECT, null=True, blank=True, related_name="usage_records", db_index=False
    )
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="usage_records", db_index=False)
    # Idempotency key chosen by the caller, unique per organization.
    request_id = models.CharField(max_length=128)

    model = models.CharField(max_length=255, help_text="Model name as sent by the caller.")
    provider = models.CharField(max_length=64, blank=True, default="")
    operation = models.CharField(max_length=32, choices=Operation.choices, default=Operation.CHAT)
    status = models.CharField(max_length=16, choices=UsageStatus.choices, default=UsageStatus.SUCCESS)

    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0, help_text="Part of prompt_tokens.")
    cache_creation_tokens = models.PositiveBigIntegerField(default=0, help_text="Part of prompt_tokens.")
    reasoning_tokens = models.PositiveBigIntegerField(default=0, help_text="Part of completion_tokens.")
    is_batch = models.BooleanField(default=False)

    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    end_user = models.CharField(max_length=255, blank=True, default="")
    tags = models.JSONField(default=dict, blank=True)
    prompt_hash = models.CharField(max_length=128, blank=True, default="")

    # What this row charges, USD. Null only when cost_source is "unpriced".
    cost_usd = models.DecimalField(null=True, blank=True, **MONEY_FIELD_KWARGS)
    cost_source = models.CharField(max_length=16, choices=CostSource.choices)
    # Parts of the catalog-computed cost, USD (null when no catalog price applied).
    input_cost_usd = models.DecimalField(null=True, blank=True, **MONEY_FIELD_KWARGS)
    cached_input_cost_usd = models.DecimalField(null=True, blank=True, **MONEY_FIELD_KWARGS)
    cache_creation_cost_usd = models.DecimalField(null=True, blank=True, **MONEY_FIELD_KWARGS)
    output_cost_usd = models.DecimalField(null=True, blank=True, **MONEY_FIELD_KWARGS)
    # Catalog-computed total and the caller's provider-reported cost, kept side by side, USD.
    computed_cost_usd = models.DecimalField(null=True, blank=True, **MONEY_FIELD_KWARGS)
    provider_cost_usd = models.DecimalField(null=True, blank=True, **MONEY_FIELD_KWARGS)
    price = models.ForeignKey(
        "pricing.ModelPrice", on_delete=models.PROTECT, null=True, blank=True, related_name="usage_records"
    )
    # The budget-check reservation this usage settles, if the agent made one.
    reservation_id = models.UUIDField(null=True, blank=True)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "request_id"], name="usage_request_id_unique_in_org"),
            models.CheckConstraint(
                condition=Q(cached_tokens__lte=F("prompt_tokens") - F("cache_creation_tokens")),
                name="usage_cache_tokens_within_prompt",
            ),
            models.CheckConstraint(
                condition=Q(reasoning_tokens__lte=F("completion_tokens")),
                name="usage_reasoning_within_completion",
            ),
            models.CheckConstraint(
                condition=Q(cost_source="unpriced", cost_usd__isnull=True)
                | (~Q(cost_source="unpriced") & Q(cost_usd__isnull=False)),
                name="usage_cost_null_iff_unpriced",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "occurred_at"], name="usage_org_time_idx"),
            models.Index(fields=["project", "occurred_at"], name="usage_project_time_idx"),
            models.Index(fields=["agent", "occurred_at"], name="usage_agent_time_idx"),
            models.Index(fields=["sprint", "occurred_at"], name="usage_sprint_time_idx"),
            models.Index(fields=["organization", "model", "occurred_at"], name="usage_org_model_time_idx"),
            models.Index(
                fields=["organization", "occurred_at"],
                name="usage_unpriced_idx",
                condition=Q(cost_source="unpriced"),
            ),
            # The rollup job's "received since the watermark" scan and the reports' tail.
            models.Index(fields=["organization", "received_at"], name="usage_org_received_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} ({self.model})"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not self._state.adding:
            raise TypeError("The usage ledger is append-only: record a correction as a new row.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("The usage ledger is append-only: rows are never deleted.")


# --- rollups (issue 6) --------------------------------------------------------------------------


class DailyRollup(models.Model):
    """The ledger summed per organization-local day and bucket (project, sprint, agent, model,
    provider, operation). Written only by ``costs.services.rollups``, which recomputes whole days
    from the ledger, so a bucket is always exactly the sum of its ledger rows received before the
    organization's :class:`RollupState` watermark (ADR 0006). Money in USD (Decimal), like the ledger.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="daily_rollups")
    # The local date of occurred_at in the organization's time zone.
    day = models.DateField()
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    sprint = models.ForeignKey(Sprint, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=255)
    provider = models.CharField(max_length=64, blank=True, default="")
    operation = models.CharField(max_length=32, choices=Operation.choices)

    requests = models.PositiveBigIntegerField(default=0)
    error_requests = models.PositiveBigIntegerField(default=0)
    unpriced_requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    # Sum of the rows' cost_usd (unpriced rows add nothing), USD.
    cost_usd = models.DecimalField(default=0, **MONEY_FIELD_KWARGS)

    class Meta:
        ordering = ["organization", "day"]
        constraints = [
            # One bucket per key; two partial constraints because a bucket's sprint may be null and
            # SQLite (the embedded default) does not enforce NULLS NOT DISTINCT.
            models.UniqueConstraint(
                fields=["organization", "day", "project", "sprint", "agent", "model", "provider", "operation"],
                condition=Q(sprint__isnull=False),
                name="rollup_bucket_unique_in_sprint",
            ),
            models.UniqueConstraint(
                fields=["organization", "day", "project", "agent", "model", "provider", "operation"],
                condition=Q(sprint__isnull=True),
                name="rollup_bucket_unique_without_sprint",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "day"], name="rollup_org_day_idx"),
            models.Index(fields=["project", "day"], name="rollup_project_day_idx"),
            models.Index(fields=["agent", "day"], name="rollup_agent_day_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.day} {self.model}"


class RollupState(models.Model):
    """How far one organization's rollups reach: every ledger row with ``received_at`` before
    ``rolled_until`` is counted in :class:`DailyRollup`, and no later row is. Reports add the tail —
    rows received since — from the ledger, so they are exact and current (ADR 0006)."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="rollup_state")
    rolled_until = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"rolled until {self.rolled_until:%Y-%m-%d %H:%M:%S}"
