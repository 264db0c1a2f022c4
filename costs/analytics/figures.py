"""The shapes spend analytics answers in, and its vocabulary: dimensions, metrics and limits."""

from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

DIMENSIONS = ("org", "project", "sprint", "agent", "model", "provider", "operation", "day", "week", "month")
TIME_DIMENSIONS = ("day", "week", "month")
TAG_PREFIX = "tag:"
# Longest date range of any report, in days (both ends included).
MAX_RANGE_DAYS = 366
# Longest range of a tag breakdown: it reads the ledger, not the rollups.
MAX_TAG_RANGE_DAYS = 31
TOP_BY = ("agent", "project", "model")

MONEY_PLACES = Decimal("1e-12")

_COUNTS = (
    "requests",
    "error_requests",
    "unpriced_requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
)
METRICS = (*_COUNTS, "cost_usd")


# --- shapes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpendFigures:
    """What some usage cost and consumed. Tokens follow the ledger's convention (cached and
    cache-write tokens are part of ``prompt_tokens``, reasoning tokens of ``completion_tokens``)."""

    requests: int = 0
    error_requests: int = 0
    unpriced_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_per_request(self) -> Decimal | None:
        """USD per request (unpriced requests included), or None without requests."""
        return _ratio(self.cost_usd, self.requests)

    @property
    def cost_per_1k_tokens(self) -> Decimal | None:
        """USD per 1,000 prompt + completion tokens, or None without tokens."""
        return _ratio(self.cost_usd * 1000, self.total_tokens)

    def metrics(self) -> dict:
        return {name: getattr(self, name) for name in METRICS}


@dataclass(frozen=True, slots=True)
class BreakdownRow(SpendFigures):
    """One group of a breakdown. ``key`` maps each dimension to its value: ``org`` and ``project``
    slugs, ``sprint`` slug (None for usage outside sprints), ``agent`` name, ``model``,
    ``provider``, ``operation`` as recorded, ``day`` / ``week`` / ``month`` the bucket's first day,
    ``tag:<key>`` the tag's value (None when absent). Grouping by ``agent`` or ``sprint`` also
    names their ``project`` (agents and sprints are named per project), which splits nothing."""

    key: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrendPoint(SpendFigures):
    """One bucket of a trend: ``period`` is its first day (the day, the Monday, the 1st)."""

    period: date = date.min


@dataclass(frozen=True, slots=True)
class CurrentSpend:
    """Today and the month so far, in the organization's time zone, at ``now``."""

    today: date
    month_start: date
    today_figures: SpendFigures
    month_to_date: SpendFigures


@dataclass(frozen=True, slots=True)
class UnpricedRow:
    """Usage of one model (as recorded, with its provider) that had no price."""

    model: str
    provider: str
    unpriced_requests: int
    first_day: date
    last_day: date


def _ratio(amount: Decimal, count: int) -> Decimal | None:
    if not count:
        return None
    return (amount / count).quantize(MONEY_PLACES, rounding=ROUND_HALF_UP)
