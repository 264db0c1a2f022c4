"""The price catalog: effective-dated prices per model, and operator-defined aliases.

All rates are **USD per 1,000,000 tokens** (the unit providers publish), stored as Decimal.
A price row is never edited once usage may point at it: a change closes the current row
(``effective_to``) and opens a new one, so every ledger row keeps the exact price it was costed with.
"""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

# Rates per 1M tokens: 12 decimal places keep litellm's per-token floats (down to ~1e-18 USD/token) exact.
RATE_FIELD_KWARGS = {"max_digits": 24, "decimal_places": 12, "validators": [MinValueValidator(0)]}
TIER_RATE_KEYS = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "reasoning",
    "batch_input",
    "batch_output",
    "batch_cache_read",
    "batch_cache_write",
)
RATE_FIELDS = (
    "input_usd_per_mtok",
    "output_usd_per_mtok",
    "cache_read_usd_per_mtok",
    "cache_write_usd_per_mtok",
    "reasoning_usd_per_mtok",
    "batch_input_usd_per_mtok",
    "batch_output_usd_per_mtok",
    "batch_cache_read_usd_per_mtok",
    "batch_cache_write_usd_per_mtok",
)


class PriceSource(models.TextChoices):
    LITELLM = "litellm", "litellm model map"
    MANUAL = "manual", "Manual (operator)"


class ModelPrice(models.Model):
    """One version of the price of one model (as named by the catalog, e.g. ``gpt-4o`` or
    ``bedrock/anthropic.claude-3-haiku``) from one provider, valid on ``[effective_from, effective_to)``.

    Manual rows win over litellm rows for the same model name while both are in effect.
    """

    model = models.CharField(max_length=255, help_text="Model name as the catalog knows it.")
    provider = models.CharField(max_length=64, blank=True, default="")
    mode = models.CharField(max_length=32, blank=True, default="chat", help_text="chat, completion, embedding, ...")
    source = models.CharField(max_length=16, choices=PriceSource.choices, default=PriceSource.MANUAL)

    input_usd_per_mtok = models.DecimalField("input (USD / 1M tokens)", **RATE_FIELD_KWARGS)
    output_usd_per_mtok = models.DecimalField("output (USD / 1M tokens)", **RATE_FIELD_KWARGS)
    # Null means "not published": cached tokens are then billed at the input rate, cache writes too.
    cache_read_usd_per_mtok = models.DecimalField(
        "cache read (USD / 1M tokens)", null=True, blank=True, **RATE_FIELD_KWARGS
    )
    cache_write_usd_per_mtok = models.DecimalField(
        "cache write (USD / 1M tokens)", null=True, blank=True, **RATE_FIELD_KWARGS
    )
    # Null means reasoning tokens cost the same as other output tokens.
    reasoning_usd_per_mtok = models.DecimalField(
        "reasoning (USD / 1M tokens)", null=True, blank=True, **RATE_FIELD_KWARGS
    )
    # Batch rates are set together (both null: a batch request is billed at the standard rates).
    # Reasoning tokens of a batch request are billed at the batch output rate.
    batch_input_usd_per_mtok = models.DecimalField(
        "batch input (USD / 1M tokens)", null=True, blank=True, **RATE_FIELD_KWARGS
    )
    batch_output_usd_per_mtok = models.DecimalField(
        "batch output (USD / 1M tokens)", null=True, blank=True, **RATE_FIELD_KWARGS
    )
    # Null means the batch input rate.
    batch_cache_read_usd_per_mtok = models.DecimalField(
        "batch cache read (USD / 1M tokens)", null=True, blank=True, **RATE_FIELD_KWARGS
    )
    batch_cache_write_usd_per_mtok = models.DecimalField(
        "batch cache write (USD / 1M tokens)", null=True, blank=True, **RATE_FIELD_KWARGS
    )
    # Long-context tiers: [{"above_tokens": 200000, "input": "5", "output": "22.5", "cache_read": "0.5",
    # "cache_write": null, "reasoning": null, "batch_input": "2.5", ...}, ...] with rates as decimal
    # strings in USD / 1M tokens. Once prompt_tokens exceeds a tier's threshold, that tier's rates
    # apply to the whole request (the highest tier exceeded wins); a rate the tier leaves null falls
    # back as documented in pricing.calculator.
    tiers = models.JSONField(default=list, blank=True)

    max_input_tokens = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    # supports_* flags and similar from the model map (used to pick substitutes).
    capabilities = models.JSONField(default=dict, blank=True)

    effective_from = models.DateTimeField()
    effective_to = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.CheckConstraint(
                condition=Q(effective_to__isnull=True) | Q(effective_to__gt=models.F("effective_from")),
                name="price_effective_range_valid",
            ),
            models.CheckConstraint(
                condition=Q(batch_input_usd_per_mtok__isnull=True, batch_output_usd_per_mtok__isnull=True)
                | Q(batch_input_usd_per_mtok__isnull=False, batch_output_usd_per_mtok__isnull=False),
                name="price_batch_rates_together",
            ),
            models.CheckConstraint(
                condition=Q(*(Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__gte": 0}) for field in RATE_FIELDS)),
                name="price_rates_non_negative",
            ),
            # At most one open-ended (current) version per model, provider and source.
            models.UniqueConstraint(
                fields=["model", "provider", "source"],
                condition=Q(effective_to__isnull=True),
                name="price_one_current_version",
            ),
        ]
        indexes = [models.Index(fields=["model", "effective_from"], name="price_model_from_idx")]

    def __str__(self) -> str:
        return f"{self.model} ({self.source}, from {self.effective_from:%Y-%m-%d})"

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        tier_problems = validate_tiers(self.tiers)
        if tier_problems:
            errors["tiers"] = tier_problems
        if (self.batch_input_usd_per_mtok is None) != (self.batch_output_usd_per_mtok is None):
            errors["batch_output_usd_per_mtok"] = ["Set batch input and batch output together, or neither."]
        if errors:
            raise ValidationError(errors)

    @property
    def is_current(self) -> bool:
        return self.effective_to is None


def validate_tiers(tiers: object) -> list[str]:
    """Return human-readable problems with a ``tiers`` value (empty when valid)."""
    if not isinstance(tiers, list):
        return ["Must be a list of tiers."]
    problems = []
    thresholds = set()
    for index, tier in enumerate(tiers):
        if not isinstance(tier, dict):
            problems.append(f"Tier {index}: must be an object.")
            continue
        above = tier.get("above_tokens")
        if isinstance(above, bool) or not isinstance(above, int) or above < 0:
            problems.append(f"Tier {index}: above_tokens must be a non-negative integer.")
        elif above in thresholds:
            problems.append(f"Tier {index}: another tier already starts above {above} tokens.")
        else:
            thresholds.add(above)
        unknown = sorted(set(tier) - {"above_tokens", *TIER_RATE_KEYS})
        if unknown:
            problems.append(f"Tier {index}: unknown keys {', '.join(unknown)} (allowed: {', '.join(TIER_RATE_KEYS)}).")
        for key in TIER_RATE_KEYS:
            value = tier.get(key)
            if value is None:
                continue
            try:
                if isinstance(value, (bool, float)) or not Decimal(str(value)).is_finite() or Decimal(str(value)) < 0:
                    raise ValueError
            except (ValueError, ArithmeticError):
                problems.append(f"Tier {index}: {key} must be a non-negative decimal string.")
    return problems


class ModelAlias(models.Model):
    """Operator-defined name -> catalog model, e.g. ``my-gpt`` -> ``gpt-4o`` (tried after exact and
    provider-stripped names)."""

    alias = models.CharField(max_length=255, unique=True)
    model = models.CharField(max_length=255, help_text="Catalog model name the alias resolves to.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["alias"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return f"{self.alias} → {self.model}"
