"""The demo's quality tiers and its recommendations (run by ``make demo`` after ``seed_demo``)."""

from collections import Counter

from django.core.management.base import BaseCommand, CommandError

from costs.models import Organization
from pricing.calculator import usd_text
from recommendations.models import ModelTier, Recommendation, RecommendationStatus
from recommendations.services.generate import recommendations_generate

DEMO_ORGANIZATION = "acme"
# Catalog model names an operator would vet as interchangeable for Acme's work.
DEMO_TIERS = {
    "frontier": ("gpt-4.1", "gpt-4o", "claude-sonnet-4-5", "gemini/gemini-2.5-pro", "mistral/mistral-large-latest"),
    "fast": ("gpt-4o-mini", "gpt-4.1-mini", "claude-haiku-4-5", "gemini/gemini-2.5-flash", "deepseek/deepseek-chat"),
}


class Command(BaseCommand):
    help = "Seed the demo's model quality tiers and generate its recommendations (idempotent)."

    def handle(self, *args, **options) -> None:
        organization = Organization.objects.filter(slug=DEMO_ORGANIZATION).first()
        if organization is None:
            raise CommandError("No demo organization: run `manage.py seed_demo` first.")
        for family, models in DEMO_TIERS.items():
            for model in models:
                ModelTier.objects.update_or_create(model=model, defaults={"family": family, "note": "demo tier"})
        report = recommendations_generate(organization=organization)
        open_recs = Recommendation.objects.filter(organization=organization, status=RecommendationStatus.OPEN)
        kinds = Counter(open_recs.values_list("kind", flat=True))
        total = sum((rec.estimated_monthly_saving_usd for rec in open_recs), start=0)
        self.stdout.write(
            f"Recommendations: {len(report.created)} new, {len(report.refreshed)} refreshed; "
            f"{open_recs.count()} open worth {usd_text(total)} a month "
            f"({', '.join(f'{count} {kind}' for kind, count in sorted(kinds.items()))})."
        )
