from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "budgets"
    verbose_name = "Budgets"

    def ready(self) -> None:
        from budgets import checks  # noqa: F401  (registers the settings checks)

        # The one seam from costs to budgets (costs must not import budgets): every ingested batch
        # settles its reservations and books its cost in the ingest transaction.
        from budgets.services.settlement import usage_settle
        from costs.services.ingest import register_rows_written_hook

        register_rows_written_hook(usage_settle)

        # Threshold crossings (sent where spend is booked): record the alert, run the budget's action.
        from budgets import receivers
        from budgets.signals import budget_threshold_crossed

        for receiver in (receivers.record_threshold_alert, receivers.run_budget_action):
            budget_threshold_crossed.connect(receiver, dispatch_uid=f"budgets.{receiver.__name__}")
