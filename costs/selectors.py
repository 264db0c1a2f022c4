"""Reads of the costs app: the usage ledger as an API key may see it."""

from django.db.models import QuerySet

from config.errors import NotFound
from costs.models import UsageRecord
from costs.services.scope import KeyScope


def usage_records_visible(*, scope: KeyScope) -> QuerySet[UsageRecord]:
    """The ledger rows ``scope`` may read (organization, project or agent), newest first, with what
    the API answer needs joined in."""
    return (
        UsageRecord.objects.filter(**scope.usage_filter())
        .select_related("organization", "project", "sprint", "agent")
        .order_by("-occurred_at", "-id")
    )


def usage_record_get(*, scope: KeyScope, pk: int) -> UsageRecord:
    """One ledger row; rows outside ``scope`` (e.g. another organization's) are "not found"."""
    row = usage_records_visible(scope=scope).filter(pk=pk).first()
    if row is None:
        raise NotFound("No usage record with this id.")
    return row
