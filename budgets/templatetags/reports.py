"""Template helpers of the report pages: money as people read it, table cells and headers."""

from decimal import Decimal

from django import template

from pricing.calculator import usd_text

register = template.Library()


@register.filter
def usd(value) -> str:
    """``Decimal`` USD -> "$1,234.56" ("$0.0045" under a cent; "—" for None)."""
    if value is None or value == "":
        return "—"
    return usd_text(value if isinstance(value, Decimal) else Decimal(str(value)))


@register.filter
def cell(row: dict, key: str):
    return row.get(key)


@register.filter
def table_header(table, request) -> list[dict]:
    return table.header(request)
