"""Date ranges and time buckets of organization-local days."""

from datetime import UTC, date, datetime, time, timedelta

from config.errors import ValidationFailed
from costs.models import Organization


def bucket_start(day: date, interval: str) -> date:
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def bucket_starts(start: date, end: date, interval: str) -> list[date]:
    """The first day of every ``interval`` bucket that ``start`` .. ``end`` touches."""
    buckets, current = [], bucket_start(start, interval)
    while current <= end:
        buckets.append(current)
        if interval == "week":
            current += timedelta(days=7)
        elif interval == "month":
            current = (current.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            current += timedelta(days=1)
    return buckets


def local_midnight(day: date, organization: Organization) -> datetime:
    """The instant an organization-local day begins (UTC)."""
    return datetime.combine(day, time(0), tzinfo=organization.tzinfo).astimezone(UTC)


def check_range(start: date, end: date, max_days: int) -> None:
    if end < start:
        raise ValidationFailed("The date range is reversed.", fields={"end": ["Must not be before start."]})
    if (end - start).days + 1 > max_days:
        raise ValidationFailed(
            "The date range is too long.", fields={"end": [f"The range may span at most {max_days} days."]}
        )
