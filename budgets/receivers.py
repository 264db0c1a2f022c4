"""Receivers of the budgets app's signals (connected in ``BudgetsConfig.ready()``).

They run inside the transaction that booked the spend: they write their rows there (so a booking
that rolls back leaves no alert and no action behind) and defer side effects (e-mail, webhooks) to
``transaction.on_commit`` through the services they call.
"""

from budgets.models import BudgetPeriod


def record_threshold_alert(
    sender, *, budget, period: BudgetPeriod, threshold: int, spent_nanos: int, limit_nanos: int, **kwargs
) -> None:
    """``budget_threshold_crossed`` -> one ``BudgetAlert`` (once per budget, period, threshold, limit)."""
    if threshold not in (budget.thresholds or ()):
        return  # an action-only crossing (see budgets.services.actions.ACTION_THRESHOLD)
    from budgets.services.alerts import threshold_alert_record

    threshold_alert_record(
        budget=budget, period=period, threshold=threshold, spent_nanos=spent_nanos, limit_nanos=limit_nanos
    )


def run_budget_action(sender, *, budget, period: BudgetPeriod, threshold: int, **kwargs) -> None:
    """``budget_threshold_crossed`` at 100 % -> the budget's action (pause the agent, downgrade it)."""
    from budgets.services.actions import ACTION_THRESHOLD, budget_action_run

    if threshold == ACTION_THRESHOLD:
        budget_action_run(budget=budget, period=period)
