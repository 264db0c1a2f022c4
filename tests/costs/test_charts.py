"""Inline SVG charts: exact geometry for simple data, escaping, money labels."""

from decimal import Decimal as D

from costs.charts import Bar, bar_chart_svg, gauge_svg, nice_ceiling
from pricing.calculator import usd_text


def test_usd_text():
    assert usd_text(D("1234.567")) == "$1,234.57"
    assert usd_text(D("0.004512")) == "$0.0045"
    assert usd_text(D("0")) == "$0.00"
    assert usd_text(D("-2.5")) == "-$2.50"
    assert usd_text(None) == "—"


def test_nice_ceiling():
    assert [nice_ceiling(D(v)) for v in ("0", "0.7", "1", "1.2", "2.2", "3", "7", "10", "73")] == [
        D(1),
        D("1"),
        D("1"),
        D("2"),
        D("2.5"),
        D("5"),
        D("10"),
        D("10"),
        D("100"),
    ]


def test_bars_scale_to_a_readable_maximum_and_escape_labels():
    svg = bar_chart_svg([Bar("<b>Mon</b>", D("1")), Bar("Tue", D("2"))], width=172, height=140, caption="Spend")

    # Plot 100 x 100 px from (64, 12); axis max $2: Tue is full height, Mon half.
    assert '<rect x="69.0" y="62.0" width="40.0" height="50.0" class="bar"><title>&lt;b&gt;Mon&lt;/b&gt;: $1.00' in svg
    assert '<rect x="119.0" y="12.0" width="40.0" height="100.0" class="bar"><title>Tue: $2.00</title>' in svg
    assert ">$2.00</text>" in svg and ">$1.00</text>" in svg and ">$0.00</text>" in svg
    assert "<b>" not in svg


def test_an_empty_series_says_so():
    assert "No spend in this range" in bar_chart_svg([])


def test_gauge_marks_spent_reserved_limit_and_projection():
    svg = gauge_svg(limit=D("100"), spent=D("50"), reserved=D("25"), projected=D("120"), width=122)

    # Scale is the projection ($120) over 120 px: spent 50 px, reserved 25 px, limit at x=101.
    assert '<rect x="1" y="6" width="50.0" height="18" class="spent"/>' in svg
    assert '<rect x="51.0" y="6" width="25.0" height="18" class="reserved"/>' in svg
    assert 'x1="101.0" x2="101.0"' in svg
    assert '<path d="M121.0 26 l-5 8 h10 z" class="projected"/>' in svg
    assert 'class="gauge gauge-ok"' in svg
    assert "$50.00 spent, $25.00 reserved of $100.00; $120.00 projected" in svg


def test_gauge_states():
    assert "gauge-near" in gauge_svg(limit=D(10), spent=D(9))
    assert "gauge-over" in gauge_svg(limit=D(10), spent=D(9), reserved=D(2))
