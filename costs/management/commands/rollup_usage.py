"""Roll the usage ledger up into daily buckets by hand (ADR 0006).

    python manage.py rollup_usage                                    # what the 5-minute job does
    python manage.py rollup_usage --organization acme --since 2026-11-01 --until 2026-11-30   # rebuild

Without dates: the incremental refresh up to now minus ``SPENDGUARD_ROLLUP_LAG_SECONDS``. With
``--since`` and ``--until`` (organization-local dates, both included): recompute those days from the
ledger — a repair, e.g. after an organization's time zone changed. Both are safe to repeat.
"""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from costs.models import Organization
from costs.services.rollups import rollups_rebuild, rollups_refresh


class Command(BaseCommand):
    help = "Refresh the daily usage rollups (incremental), or rebuild the days --since to --until."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--organization", metavar="SLUG", help="Only this organization (default: all).")
        parser.add_argument("--since", type=dt.date.fromisoformat, metavar="DATE", help="First day to rebuild.")
        parser.add_argument("--until", type=dt.date.fromisoformat, metavar="DATE", help="Last day to rebuild.")

    def handle(self, *args, **options) -> None:
        since, until = options["since"], options["until"]
        if (since is None) != (until is None):
            raise CommandError("--since and --until go together (both organization-local dates, included).")
        if since is not None and until < since:
            raise CommandError(f"--until {until} is before --since {since}.")
        organizations = Organization.objects.order_by("pk")
        if options["organization"]:
            organizations = organizations.filter(slug=options["organization"])
            if not organizations.exists():
                raise CommandError(f"No organization with slug {options['organization']!r}.")

        if since is None:
            organization_id = organizations.get().pk if options["organization"] else None
            report = rollups_refresh(organization_id=organization_id)
            self.stdout.write(
                f"Rolled up to {report.until:%Y-%m-%d %H:%M:%S} UTC: {len(report.organizations)} organizations, "
                f"{report.days} days recomputed, {report.buckets} buckets written"
                + (f"; skipped {len(report.skipped)} held by another run" if report.skipped else "")
                + "."
            )
            return
        for organization in organizations:
            done = rollups_rebuild(organization_id=organization.pk, start=since, end=until)
            self.stdout.write(
                f"{organization.slug}: rebuilt {len(done.days)} days ({since} to {until}), {done.buckets} buckets "
                f"written, from rows received before {done.rolled_until:%Y-%m-%d %H:%M:%S} UTC."
            )
