"""Query filters of the usage ledger list (``GET /api/v1/usage/``)."""

import django_filters

from costs.models import CostSource, UsageRecord, UsageStatus


class UsageRecordFilter(django_filters.FilterSet):
    occurred_after = django_filters.IsoDateTimeFilter(
        field_name="occurred_at", lookup_expr="gte", label="occurred_at >= this ISO 8601 date-time"
    )
    occurred_before = django_filters.IsoDateTimeFilter(
        field_name="occurred_at", lookup_expr="lt", label="occurred_at < this ISO 8601 date-time"
    )
    project = django_filters.CharFilter(field_name="project__slug", label="project slug")
    sprint = django_filters.CharFilter(field_name="sprint__slug", label="sprint slug")
    agent = django_filters.CharFilter(field_name="agent__name", label="agent name")
    model = django_filters.CharFilter(field_name="model", label="model name as sent")
    cost_source = django_filters.ChoiceFilter(choices=CostSource.choices, label="e.g. unpriced")
    status = django_filters.ChoiceFilter(choices=UsageStatus.choices)

    class Meta:
        model = UsageRecord
        fields = ["occurred_after", "occurred_before", "project", "sprint", "agent", "model", "cost_source", "status"]
