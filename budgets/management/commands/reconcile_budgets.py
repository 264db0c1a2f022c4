from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Reconcile live budget spend with the usage ledger now, print the report, repair drift."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Report drift without repairing it.")

    def handle(self, *args, dry_run: bool = False, **options) -> None:
        from budgets.services.maintenance import budget_spend_reconcile

        report = budget_spend_reconcile(repair=not dry_run)
        for line in report.lines():
            self.stdout.write(line)
