from django.apps import AppConfig


class RecommendationsConfig(AppConfig):
    name = "recommendations"
    verbose_name = "Recommendations"

    def ready(self) -> None:
        # A budget threshold alert triggers generation for the budget's scope (see receivers).
        from budgets.signals import budget_threshold_crossed
        from recommendations import receivers

        budget_threshold_crossed.connect(
            receivers.generate_for_budget_scope, dispatch_uid="recommendations.generate_for_budget_scope"
        )
