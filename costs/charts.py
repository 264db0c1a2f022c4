"""Charts for the report pages, drawn server-side as inline SVG (no JavaScript, nothing loaded from
anywhere): a bar chart of a money series and a budget gauge.

Pure functions of Decimal data returning markup that is safe to embed: every text that comes from
data (labels, names) is escaped here. Coordinates are rounded to 0.1 px; money is never turned into
a float for arithmetic — only its *ratio* to the axis maximum becomes a pixel length.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from pricing.calculator import usd_text

ZERO = Decimal(0)


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= ``value`` (an axis maximum people can read)."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        candidate = step.scaleb(exponent)
        if candidate >= value:
            return candidate
    return Decimal(10).scaleb(exponent)  # unreachable: 10 x 10^k >= any value with that exponent


def _px(value: Decimal | float) -> str:
    return f"{Decimal(str(value)).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP):f}"


@dataclass(frozen=True)
class Bar:
    label: str  # x-axis label (a date, a name)
    value: Decimal  # USD
    title: str = ""  # hover text; default "label: $value"


def bar_chart_svg(
    bars: Sequence[Bar], *, width: int = 720, height: int = 220, label_every: int = 1, caption: str = ""
) -> SafeString:
    """A responsive (``viewBox``) bar chart of USD values with a 0 / half / max axis.

    ``label_every``: show every n-th x label (a 90-day series needs fewer). Empty input draws an
    empty frame with "No spend in this range".
    """
    left, right, top, bottom = 64, 8, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    maximum = nice_ceiling(max((bar.value for bar in bars), default=ZERO))
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" preserveAspectRatio="xMidYMid meet"'
        f' aria-label="{escape(caption or "Spend chart")}">'
    ]
    if caption:
        parts.append(f"<title>{escape(caption)}</title>")
    for fraction in (Decimal(0), Decimal("0.5"), Decimal(1)):
        y = top + plot_h - plot_h * fraction
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{_px(y)}" y2="{_px(y)}" class="grid"/>'
            f'<text x="{left - 6}" y="{_px(y + 4)}" text-anchor="end" class="axis">'
            f"{escape(usd_text(maximum * fraction))}</text>"
        )
    if not bars:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" class="empty">'
            "No spend in this range</text></svg>"
        )
        return mark_safe("".join(parts))  # every data text above is escaped
    slot = Decimal(plot_w) / len(bars)
    bar_w = max(slot * Decimal("0.8"), Decimal(1))
    for index, bar in enumerate(bars):
        x = left + slot * index + (slot - bar_w) / 2
        h = Decimal(plot_h) * (max(bar.value, ZERO) / maximum)
        y = top + plot_h - h
        title = bar.title or f"{bar.label}: {usd_text(bar.value)}"
        parts.append(
            f'<rect x="{_px(x)}" y="{_px(y)}" width="{_px(bar_w)}" height="{_px(h)}" class="bar">'
            f"<title>{escape(title)}</title></rect>"
        )
        if index % max(label_every, 1) == 0:
            parts.append(
                f'<text x="{_px(x + bar_w / 2)}" y="{height - 10}" text-anchor="middle" class="axis">'
                f"{escape(bar.label)}</text>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every data text above is escaped


def gauge_svg(
    *, limit: Decimal, spent: Decimal, reserved: Decimal = ZERO, projected: Decimal | None = None, width: int = 320
) -> SafeString:
    """A horizontal gauge of one budget period: spent (solid), reserved (hatched) against the limit,
    and a tick at the projected spend. Over the limit, the scale grows to show by how much."""
    height, top, bar_h = 44, 6, 18
    scale = max(limit, spent + reserved, projected or ZERO, Decimal("0.000001"))
    usable = Decimal(width - 2)

    def x_of(amount: Decimal) -> Decimal:
        return 1 + usable * (max(amount, ZERO) / scale)

    spent_w = x_of(spent) - 1
    reserved_w = x_of(spent + reserved) - x_of(spent)
    state = "over" if spent + reserved > limit else ("near" if (spent + reserved) * 10 >= limit * 9 else "ok")
    label = f"{usd_text(spent)} spent, {usd_text(reserved)} reserved of {usd_text(limit)}"
    if projected is not None:
        label += f"; {usd_text(projected)} projected"
    parts = [
        f'<svg class="gauge gauge-{state}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>"
        f'<rect x="1" y="{top}" width="{_px(usable)}" height="{bar_h}" class="track"/>'
        f'<rect x="1" y="{top}" width="{_px(spent_w)}" height="{bar_h}" class="spent"/>'
        f'<rect x="{_px(1 + spent_w)}" y="{top}" width="{_px(reserved_w)}" height="{bar_h}" class="reserved"/>'
        f'<line x1="{_px(x_of(limit))}" x2="{_px(x_of(limit))}" y1="{top - 4}" y2="{top + bar_h + 4}" class="limit"/>'
    ]
    if projected is not None:
        x = _px(x_of(projected))
        parts.append(f'<path d="M{x} {top + bar_h + 2} l-5 8 h10 z" class="projected"/>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every data text above is escaped
