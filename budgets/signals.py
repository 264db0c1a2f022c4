"""The budgets app's domain signals.

``budget_threshold_crossed`` is sent, inside the transaction that booked the spend, once for each
alert threshold that a booking carried a budget period's settled spend across
(``before < threshold <= after``; :func:`budgets.services.alerts.thresholds_cross`). The crossing is
decided on the values one guarded ``UPDATE ... RETURNING`` produced, so concurrent bookings see it
exactly once between them. Receivers (connected in ``BudgetsConfig.ready()``) do little and defer
side effects with ``transaction.on_commit``; a receiver's exception rolls the booking back, so they
must not raise for anything but a bug.

Keyword arguments:
    budget: the :class:`~budgets.models.Budget`
    period: its :class:`~budgets.models.BudgetPeriod` (counters as the booking left them)
    threshold: the percentage of the limit crossed (int)
    spent_nanos: the period's settled spend after the booking (nano-dollars)
    limit_nanos: the limit in force (nano-dollars)
"""

from django.dispatch import Signal

budget_threshold_crossed = Signal()
