"""Spend analytics (issue 6): totals, breakdowns, trends, today / month to date, top spenders and
unpriced usage of one organization — the reads behind ``/api/v1/reports/`` and the report pages.

Where the figures come from (ADR 0006): :class:`~costs.models.DailyRollup` holds exactly the ledger
rows received before the organization's :class:`~costs.models.RollupState` watermark; the rows
received since (the *tail*: the last minutes) are read from the ledger and aggregated the same way,
days taken in the organization's time zone. Every figure is rollups + tail: exact and current, and
fast, because the tail is small and rollups are few rows per day. Both parts are one SQL statement
(``UNION ALL``, the watermark read in a subquery of it), so they see one snapshot: a rollup run
committing meanwhile can neither double-count nor drop the rows it moves.

Grouping by a tag (``tag:<key>``) is the exception: rollups carry no tags, so it reads the ledger
itself — the slow path, limited to :data:`MAX_TAG_RANGE_DAYS` days.

Conventions:

- A date range is ``start`` .. ``end``, both included, in organization-local days.
- ``week`` buckets are ISO weeks labelled by their Monday, ``month`` buckets calendar months labelled by
  their first day — both of organization-local days. A bucket cut by the range counts only the
  range's days.
- Money is Decimal USD (the ledger's 12 decimal places); unpriced requests count in ``requests``
  and ``unpriced_requests`` and add no cost, so averages over ranges with unpriced usage understate.
- ``cost_per_request`` = cost / requests, ``cost_per_1k_tokens`` = cost x 1,000 / (prompt + completion
  tokens), rounded half-up to 12 decimal places; None when the divisor is 0.

Layout: :mod:`.figures` holds the shapes and the vocabulary (dimensions, metrics, limits),
:mod:`.selectors` the public reads, :mod:`.ranges` date ranges and time buckets, and :mod:`.queries`
the private query builders behind the selectors.
"""

from costs.analytics.figures import (
    DIMENSIONS,
    MAX_RANGE_DAYS,
    MAX_TAG_RANGE_DAYS,
    METRICS,
    MONEY_PLACES,
    TAG_PREFIX,
    TIME_DIMENSIONS,
    TOP_BY,
    BreakdownRow,
    CurrentSpend,
    SpendFigures,
    TrendPoint,
    UnpricedRow,
)
from costs.analytics.queries import NEVER_ROLLED, RECEIVED_MAX
from costs.analytics.ranges import bucket_start, bucket_starts, check_range, local_midnight
from costs.analytics.selectors import (
    breakdown_regroup,
    spend_breakdown,
    spend_daily_series,
    spend_today_and_month_to_date,
    spend_totals,
    spend_trend,
    top_spenders,
    unpriced_usage,
)

__all__ = [
    "DIMENSIONS",
    "MAX_RANGE_DAYS",
    "MAX_TAG_RANGE_DAYS",
    "METRICS",
    "MONEY_PLACES",
    "NEVER_ROLLED",
    "RECEIVED_MAX",
    "TAG_PREFIX",
    "TIME_DIMENSIONS",
    "TOP_BY",
    "BreakdownRow",
    "CurrentSpend",
    "SpendFigures",
    "TrendPoint",
    "UnpricedRow",
    "breakdown_regroup",
    "bucket_start",
    "bucket_starts",
    "check_range",
    "local_midnight",
    "spend_breakdown",
    "spend_daily_series",
    "spend_today_and_month_to_date",
    "spend_totals",
    "spend_trend",
    "top_spenders",
    "unpriced_usage",
]
