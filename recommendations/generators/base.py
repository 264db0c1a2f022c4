"""What every generator takes and returns.

A generator is a plain function ``generate(context) -> list[Finding]``: it reads the ledger (through
:mod:`recommendations.selectors`) and the price catalog for the context's window and scope, and
returns one :class:`Finding` per opportunity whose saving clears ``context.min_monthly_saving``. It
writes nothing: :func:`recommendations.services.generate.recommendations_generate` turns findings
into rows (and decides what is new, refreshed or expired).

Savings are priced at today's catalog on the window's actual token counts, and scaled to a month
of 30 days: ``monthly = window saving x 30 / window days``.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from costs.models import Organization, UsageRecord
from pricing.calculator import quantize_usd

DAYS_PER_MONTH = Decimal(30)
MICROSECONDS_PER_DAY = Decimal(86_400_000_000)


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class GenerationContext:
    """The window ``[start, end)`` of ledger rows (by ``occurred_at``) to learn from, optionally
    narrowed to one project or one agent (generation triggered by a budget alert)."""

    organization: Organization
    start: datetime
    end: datetime
    min_monthly_saving: Decimal
    project_id: int | None = None
    agent_id: int | None = None

    @property
    def days(self) -> Decimal:
        """The window's length in days, exactly (integer microseconds: never through a float)."""
        return Decimal(_microseconds(self.end - self.start)) / MICROSECONDS_PER_DAY

    def monthly(self, window_amount: Decimal) -> Decimal:
        """A window's amount as a 30-day month's, at the ledger's 12 decimal places."""
        return quantize_usd(window_amount * DAYS_PER_MONTH / self.days)

    def clears_minimum(self, monthly_saving: Decimal) -> bool:
        return monthly_saving > 0 and monthly_saving >= self.min_monthly_saving

    def ledger(self):
        """The priced ledger rows of the window and scope (unpriced rows have no cost to save on)."""
        rows = UsageRecord.objects.filter(
            organization=self.organization,
            occurred_at__gte=self.start,
            occurred_at__lt=self.end,
            cost_usd__isnull=False,
        )
        if self.agent_id is not None:
            rows = rows.filter(agent_id=self.agent_id)
        elif self.project_id is not None:
            rows = rows.filter(project_id=self.project_id)
        return rows


@dataclass(frozen=True, slots=True)
class Finding:
    """One opportunity as a generator found it. Amounts are exact USD; ``evidence`` holds the
    numbers behind the estimate as JSON (money as decimal strings)."""

    kind: str
    title: str
    explanation: str
    monthly_saving_usd: Decimal
    baseline_cost_usd: Decimal
    baseline_requests: int
    confidence: str
    effort: str
    project_id: int | None = None
    agent_id: int | None = None
    operation: str = ""
    model: str = ""
    provider: str = ""
    target: str = ""
    evidence: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """The opportunity's identity: kind, scope and the traffic it is about — not what it proposes
        (``target``) nor its figures, so a refreshed estimate or a better target updates the same row."""
        key = "|".join(
            str(part)
            for part in (
                self.kind,
                self.project_id or "",
                self.agent_id or "",
                self.operation,
                self.model,
                self.provider,
            )
        )
        return hashlib.sha256(key.encode()).hexdigest()
