"""Anomaly alerts: an agent or a project whose spend in the current hour or day is far above its
own baseline, flagged once per window (issue 5).

Windows and baselines (all boundaries computed here, in Python, so PostgreSQL and SQLite agree and
local days are right across DST):

- **hour**: the UTC clock hour ``[HH:00, HH:00 + 1 h)``; its baseline is the *same hour* on each of the
  previous ``BASELINE_WINDOWS`` (14) days. Many agents follow a daily rhythm (office hours, a nightly
  batch): against the previous 24 hours, the nightly batch would look like a spike every night and a
  runaway at 10:00 would be hidden by the office hours before it. Fourteen days hold ten weekdays, so
  the median follows the working-day level.
- **day**: the local day in the organization's time zone ``[midnight, next midnight)``; its baseline
  is the previous 14 local days.

Each run checks the current window (with its spend so far: a partial window that already exceeds
the cutoff is anomalous whatever the rest of it brings, so it fires as soon as it can) and the
window just completed (spend booked in the minutes between the last run and the window's end, or a
run that came late, is still caught). The once-only key (subject, window, window start) makes
re-checking a window that already fired a no-op.

The statistic, per subject and window, over its baseline windows' spend (integer nano-USD, exact
``Fraction`` arithmetic, the cutoff rounded half-up to the nano-dollar):

    median  = median of the baseline windows' spend (windows with no spend count as 0)
    MAD     = median of |spend - median| (raw, not scaled by 1.4826: k x MAD with k = 6 is about
              4 standard deviations for normally distributed spend — a spike, not a busy hour)
    cutoff  = median + max(MAD_K x MAD, MIN_EXCESS, (MIN_RATIO - 1) x median)

and the window is anomalous when its spend reaches the cutoff. The two floors keep steady subjects
(MAD near 0) quiet: spend must exceed the median by at least ``MIN_EXCESS_NANOS`` ($1, so cents of
noise never page anyone) and be at least ``MIN_RATIO`` (2) times the median ("far above" its
baseline, not a percent above a very regular one).

History: a baseline window counts only if it ends after the subject's first spend seen in the
baseline range (an agent that did not exist yet has no zero spend); fewer than ``MIN_HISTORY`` (7)
counting windows — a new agent or project — and nothing is flagged.

Queries: one aggregate per organization (``GROUP BY agent, project`` with one conditional sum per
window), plus the organizations themselves and the names of flagged subjects.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone

from budgets.models import (
    NANOS_PER_USD,
    AlertKind,
    AlertSeverity,
    AnomalyWindow,
    BudgetAlert,
    nanos_to_usd,
    nanos_usd_display,
    usd_to_nanos,
)
from budgets.services.alerts import alert_record
from budgets.services.forecasts import fraction_round_half_up
from budgets.services.periods import ledger_nanos_sum, next_local_midnight
from costs.models import Agent, Organization, Project, UsageRecord

logger = logging.getLogger(__name__)

# The defaults of the SPENDGUARD_ANOMALY_* settings (config/settings/base.py), which are read per call:
# cutoff = median + max(MAD_K x MAD, MIN_EXCESS_NANOS, (MIN_RATIO - 1) x median); see the docstring.
MAD_K = 6
MIN_EXCESS_NANOS = 1 * NANOS_PER_USD
MIN_RATIO = 2
# Baseline windows per check (same hour on previous days / previous days), and how many of them
# must lie after the subject's first spend.
BASELINE_WINDOWS = 14
MIN_HISTORY = 7


def _setting(name: str, default):
    return getattr(settings, f"SPENDGUARD_ANOMALY_{name}", default)


_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Cutoff:
    """A subject's baseline for one window: ``median_nanos`` and ``cutoff_nanos`` (nano-USD)."""

    median_nanos: int
    mad_nanos: int
    cutoff_nanos: int


def _median(values: list[Fraction]) -> Fraction:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def spend_cutoff(
    history_nanos: list[int],
    *,
    k: int = MAD_K,
    min_excess_nanos: int = MIN_EXCESS_NANOS,
    min_ratio: int = MIN_RATIO,
) -> Cutoff:
    """The anomaly cutoff for a subject whose baseline windows spent ``history_nanos`` (pure; at
    least one value). Median and MAD are exact; the reported figures are rounded half-up."""
    values = [Fraction(v) for v in history_nanos]
    median = _median(values)
    mad = _median([abs(v - median) for v in values])
    cutoff = median + max(k * mad, Fraction(min_excess_nanos), (min_ratio - 1) * median)
    return Cutoff(
        median_nanos=fraction_round_half_up(median),
        mad_nanos=fraction_round_half_up(mad),
        cutoff_nanos=fraction_round_half_up(cutoff),
    )


@dataclass(frozen=True, slots=True)
class _Window:
    start: datetime
    end: datetime

    @property
    def alias(self) -> str:
        return f"w{int(self.start.timestamp())}_{int(self.end.timestamp())}"


@dataclass(frozen=True, slots=True)
class _Check:
    window: str  # AnomalyWindow
    current: _Window
    baseline: tuple[_Window, ...]  # newest first


def _checks(now: datetime, timezone_name: str) -> list[_Check]:
    """The windows one run checks at ``now``: this hour and the last, today and yesterday."""
    windows = _setting("BASELINE_WINDOWS", BASELINE_WINDOWS)
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    checks = []
    for start in (hour, hour - _HOUR):
        baseline = tuple(_Window(start - d * _DAY, start - d * _DAY + _HOUR) for d in range(1, windows + 1))
        checks.append(_Check(AnomalyWindow.HOUR, _Window(start, start + _HOUR), baseline))
    # Local days, newest first: days[0] is today, days[i] the day i days ago.
    midnights = [next_local_midnight(now, timezone_name)]
    for _ in range(windows + 2):
        midnights.append(_previous_local_midnight(midnights[-1], timezone_name))
    days = [_Window(midnights[i + 1], midnights[i]) for i in range(windows + 2)]
    for offset in (0, 1):
        checks.append(_Check(AnomalyWindow.DAY, days[offset], tuple(days[offset + 1 : offset + 1 + windows])))
    return checks


def _previous_local_midnight(midnight: datetime, timezone_name: str) -> datetime:
    # A local day lasts 23 to 25 hours, so 30 hours before ``midnight`` lies in the day before the
    # one ending at ``midnight``; the first midnight after it starts that day.
    return next_local_midnight(midnight - timedelta(hours=30), timezone_name)


def spend_anomalies_detect(*, now: datetime | None = None) -> int:
    """Check every organization's agents and projects for spend far above their own baseline in
    the current and the just-completed hour and local day (rules: the module docstring) and record
    an ``anomaly`` alert per anomalous subject and window, once. Returns how many this run recorded.

    Safe to run twice, late or concurrently: the alert's once-only key makes a repeat a no-op.
    """
    now = now or timezone.now()
    recorded = 0
    for organization in Organization.objects.order_by("id"):
        recorded += _detect_organization(organization, now)
    if recorded:
        logger.info("Recorded %d anomaly alert(s).", recorded)
    return recorded


@dataclass(slots=True)
class _Subject:
    first_seen: datetime
    spend: dict[str, int]  # window alias -> nano-USD


def _detect_organization(organization: Organization, now: datetime) -> int:
    checks = _checks(now, organization.timezone)
    windows = {w.alias: w for check in checks for w in (check.current, *check.baseline)}
    since = min(w.start for w in windows.values())
    until = max(w.end for w in windows.values())
    rows = (
        UsageRecord.objects.filter(
            organization_id=organization.id, occurred_at__gte=since, occurred_at__lt=until, cost_usd__isnull=False
        )
        .order_by()
        .values("project_id", "agent_id")
        .annotate(
            first_seen=Min("occurred_at"),
            **{
                alias: ledger_nanos_sum(where=Q(occurred_at__gte=w.start, occurred_at__lt=w.end))
                for alias, w in windows.items()
            },
        )
    )
    agents: dict[int, _Subject] = {}
    projects: dict[int, _Subject] = {}
    for row in rows:
        spend = {alias: int(row[alias] or 0) for alias in windows}
        agents[row["agent_id"]] = _Subject(row["first_seen"], spend)
        project = projects.get(row["project_id"])
        if project is None:
            projects[row["project_id"]] = _Subject(row["first_seen"], dict(spend))
        else:
            project.first_seen = min(project.first_seen, row["first_seen"])
            for alias, nanos in spend.items():
                project.spend[alias] += nanos

    found = []  # (kind, subject id, check, spend, cutoff)
    for kind, subjects in (("agent", agents), ("project", projects)):
        for subject_id, subject in subjects.items():
            for check in checks:
                flagged = _anomalous(subject, check)
                if flagged is not None:
                    found.append((kind, subject_id, check, *flagged))
    if not found:
        return 0
    # Windows that fired before are skipped here. The once-only constraint is what guarantees it
    # under concurrency, but its NULLS NOT DISTINCT needs PostgreSQL 15: on SQLite (the embedded mode,
    # one worker) this read is what keeps a second run from recording a window again.
    fired = set(
        BudgetAlert.objects.filter(
            organization_id=organization.id,
            kind=AlertKind.ANOMALY,
            window_start__in={check.current.start for check in checks},
        ).values_list("agent_id", "project_id", "window", "window_start")
    )
    found = [f for f in found if _key(*f[:3]) not in fired]
    names = {
        "agent": Agent.objects.select_related("project").in_bulk([f[1] for f in found if f[0] == "agent"]),
        "project": Project.objects.in_bulk([f[1] for f in found if f[0] == "project"]),
    }
    recorded = 0
    for kind, subject_id, check, spend, cutoff in found:
        if _anomaly_alert_record(organization, kind, names[kind][subject_id], check, spend, cutoff, now):
            recorded += 1
    return recorded


def _key(kind: str, subject_id: int, check: _Check) -> tuple:
    """An anomaly alert's once-only key as ``(agent id, project id, window, window start)``."""
    return (
        subject_id if kind == "agent" else None,
        subject_id if kind == "project" else None,
        check.window,
        check.current.start,
    )


def _anomalous(subject: _Subject, check: _Check) -> tuple[int, Cutoff] | None:
    """``(spend, cutoff)`` when ``subject``'s spend in ``check``'s window reaches its cutoff."""
    spend = subject.spend[check.current.alias]
    if spend <= 0:
        return None
    history = [subject.spend[w.alias] for w in check.baseline if w.end > subject.first_seen]
    if len(history) < _setting("MIN_HISTORY", MIN_HISTORY):
        return None
    cutoff = spend_cutoff(
        history,
        k=_setting("MAD_K", MAD_K),
        min_excess_nanos=usd_to_nanos(Decimal(_setting("MIN_EXCESS_USD", nanos_to_usd(MIN_EXCESS_NANOS)))),
        min_ratio=_setting("MIN_RATIO", MIN_RATIO),
    )
    if spend < cutoff.cutoff_nanos:
        return None
    return spend, cutoff


@transaction.atomic
def _anomaly_alert_record(organization, kind, subject, check: _Check, spend: int, cutoff: Cutoff, now) -> bool:
    who = f"Agent {subject.name} (project {subject.project.name})" if kind == "agent" else f"Project {subject.name}"
    if check.window == AnomalyWindow.HOUR:
        when = f"in the hour from {check.current.start:%Y-%m-%d %H:%M} UTC"
    else:
        day = check.current.start.astimezone(organization.tzinfo).date()
        when = f"on {day.isoformat()} ({organization.timezone})"
    message = (
        f"{who} spent {nanos_usd_display(spend)} {when}, far above its usual {nanos_usd_display(cutoff.median_nanos)}"
        f" (anomaly cutoff {nanos_usd_display(cutoff.cutoff_nanos)})."
    )
    alert = alert_record(
        organization_id=organization.id,
        kind=AlertKind.ANOMALY,
        severity=AlertSeverity.WARNING,
        message=message[:300],
        spend_nanos=spend,
        fired_at=now,
        window=check.window,
        window_start=check.current.start,
        baseline_nanos=cutoff.median_nanos,
        cutoff_nanos=cutoff.cutoff_nanos,
        **{kind: subject},
    )
    return alert is not None
