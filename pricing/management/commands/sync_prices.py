"""``manage.py sync_prices``: load litellm's bundled model map (offline) into the price catalog."""

import time

from django.core.management.base import BaseCommand

from pricing.services import prices_sync


class Command(BaseCommand):
    help = (
        "Sync the price catalog with the model map bundled in the installed litellm package (offline). "
        "Creates new effective-dated rows only where a price changed; safe to run repeatedly."
    )

    def handle(self, *args, **options) -> None:
        started = time.monotonic()
        report = prices_sync()
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"Synced {report.total:,} model map entries in {elapsed:.1f}s: {report.created:,} new, "
            f"{report.changed:,} changed, {report.unchanged:,} unchanged, "
            f"{report.skipped:,} skipped (not priced per token)."
        )
        if report.metadata_updated:
            self.stdout.write(f"Refreshed mode / limits / capabilities of {report.metadata_updated:,} models.")
        if report.changed_models:
            self.stdout.write(f"Changed prices (effective {report.effective_from:%Y-%m-%d %H:%M:%S %Z}):")
            for model in report.changed_models:
                self.stdout.write(f"  {model}")
