"""On-demand generation (the beat job runs the same service nightly)."""

from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError

from costs.models import Organization
from pricing.calculator import usd_text
from recommendations.models import Recommendation, RecommendationStatus
from recommendations.services.generate import recommendations_generate


class Command(BaseCommand):
    help = "Generate savings recommendations for one organization (--organization SLUG) or all of them."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--organization", help="Organization slug (default: every organization).")

    def handle(self, *args, organization: str | None, **options) -> None:
        organizations = Organization.objects.order_by("slug")
        if organization:
            organizations = organizations.filter(slug=organization)
            if not organizations.exists():
                raise CommandError(f"No organization with slug {organization!r}.")
        for org in organizations:
            report = recommendations_generate(organization=org)
            open_recs = Recommendation.objects.filter(organization=org, status=RecommendationStatus.OPEN)
            # start=Decimal(0): usd_text needs a Decimal, also when nothing is open.
            total = sum((rec.estimated_monthly_saving_usd for rec in open_recs), start=Decimal(0))
            self.stdout.write(
                f"{org.slug}: {len(report.created)} new, {len(report.refreshed)} refreshed, "
                f"{len(report.reopened)} reopened, {len(report.expired)} expired; "
                f"{open_recs.count()} open worth {usd_text(total)} a month."
            )
