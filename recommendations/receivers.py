"""Receivers of other apps' signals (connected in ``RecommendationsConfig.ready()``).

A budget crossing one of its thresholds is the moment someone will ask "how do we spend less
here?", so it queues a generation for the budget's own scope — after the booking commits (never
inside the spend transaction) and at most once per scope per
``SPENDGUARD_RECOMMENDATION_ALERT_DEBOUNCE_SECONDS`` (a run of crossings asks once).
"""

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from costs.models import Sprint


def debounce_key(organization_id: int, project_id: int | None, agent_id: int | None) -> str:
    return f"recommendations:alert-run:{organization_id}:{project_id or '-'}:{agent_id or '-'}"


def generate_for_budget_scope(sender, *, budget, threshold: int, **kwargs) -> None:
    if threshold not in (budget.thresholds or ()):
        return  # an action-only crossing, not an alert
    organization_id, project_id, sprint_id, agent_id = (
        budget.organization_id, budget.project_id, budget.sprint_id, budget.agent_id,
    )  # fmt: skip

    def queue() -> None:
        # After the booking committed: nothing here (not even the sprint's project) runs inside it.
        scope_project = project_id  # None for an organization budget; an agent implies its project
        if sprint_id:
            scope_project = Sprint.objects.filter(pk=sprint_id).values_list("project_id", flat=True).first()
        key = debounce_key(organization_id, scope_project, agent_id)
        if not cache.add(key, 1, timeout=settings.SPENDGUARD_RECOMMENDATION_ALERT_DEBOUNCE_SECONDS):
            return
        from recommendations.tasks import generate_recommendations

        generate_recommendations.delay(organization_id, project_id=scope_project, agent_id=agent_id)

    transaction.on_commit(queue)
