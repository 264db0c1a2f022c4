"""Receivers of other apps' signals (connected in ``RecommendationsConfig.ready()``).

A budget crossing one of its thresholds is the moment someone will ask "how do we spend less
here?", so it queues a generation for the budget's own scope — after the booking commits (never
inside the spend transaction) and at most once per scope per
``SPENDGUARD_RECOMMENDATION_ALERT_DEBOUNCE_SECONDS`` (a run of crossings asks once).
"""

from django.conf import settings
from django.core.cache import cache
from django.db import transaction


def debounce_key(organization_id: int, project_id: int | None, agent_id: int | None) -> str:
    return f"recommendations:alert-run:{organization_id}:{project_id or '-'}:{agent_id or '-'}"


def generate_for_budget_scope(sender, *, budget, threshold: int, **kwargs) -> None:
    if threshold not in (budget.thresholds or ()):
        return  # an action-only crossing, not an alert
    project_id = budget.project_id or (budget.sprint.project_id if budget.sprint_id else None)
    agent_id = budget.agent_id
    if agent_id:
        project_id = None  # the agent implies its project
    key = debounce_key(budget.organization_id, project_id, agent_id)

    def queue() -> None:
        if not cache.add(key, 1, timeout=settings.SPENDGUARD_RECOMMENDATION_ALERT_DEBOUNCE_SECONDS):
            return
        from recommendations.tasks import generate_recommendations

        generate_recommendations.delay(budget.organization_id, project_id=project_id, agent_id=agent_id)

    transaction.on_commit(queue)
