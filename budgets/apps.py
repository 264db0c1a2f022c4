from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "budgets"
    verbose_name = "Budgets"

    def ready(self) -> None:
        # The one seam from costs to budgets (costs must not import budgets): every ingested batch
        # settles its reservations and books its cost in the ingest transaction.
        from budgets.services.settlement import usage_settle
        from costs.services.ingest import register_rows_written_hook

        register_rows_written_hook(usage_settle)
