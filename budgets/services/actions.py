"""What a budget does when its spend reaches its limit (issue 5: "Actions configured on the budget
run when the threshold that triggers them is crossed, and are written to the audit log").

The trigger is the crossing of 100 % of the limit by *settled* spend (``ACTION_THRESHOLD``; it is
evaluated for budgets with an action even when 100 is not one of their alert thresholds). The
pre-call check enforces hard budgets per request already (deny, or answer ``downgrade``); these
actions make the decision stick for the agent, so it also holds for soft budgets and for calls
made without a check:

- ``pause_agent`` (agent budgets): the agent is paused; every check answers 429 ``agent_paused``
  until an operator resumes it.
- ``downgrade`` on an agent budget: the agent's ``model_override`` becomes the budget's
  ``downgrade_model``, so its checks answer that model. On a project / sprint / organization budget
  the downgrade stays per request (the check's ``downgrade`` answer): switching every agent of a
  project would outlive the budget's period and surprise its owners.
- ``block``: nothing beyond what the check enforces.

Each action is a guarded update (a second crossing, or a concurrent one, changes nothing) and
writes an :class:`~budgets.models.AuditEntry` when it changed something.
"""

from budgets.models import AuditAction, AuditEntry, Budget, BudgetPeriod, ExceededAction, nanos_usd_text
from costs.models import AgentStatus
from costs.services.hierarchy import agent_set_model_override, agent_set_status

ACTION_THRESHOLD = 100


def action_thresholds(budget: Budget) -> tuple[int, ...]:
    """The thresholds whose crossing runs an action (besides the alert thresholds)."""
    if budget.action in (ExceededAction.PAUSE_AGENT, ExceededAction.DOWNGRADE) and budget.agent_id:
        return (ACTION_THRESHOLD,)
    return ()


def budget_action_run(*, budget: Budget, period: BudgetPeriod) -> str | None:
    """Run ``budget``'s action for ``period`` reaching its limit; returns the audit action written,
    or None when there was nothing to do (no action, not an agent budget, already done)."""
    if not budget.agent_id:
        return None
    agent = budget.agent
    reason = {
        "reason": "budget_limit_reached",
        "budget": budget.pk,
        "period_start": period.starts_at.isoformat(),
        "spent_usd": nanos_usd_text(period.spent_nanos),
        "limit_usd": nanos_usd_text(period.limit_nanos),
    }
    if budget.action == ExceededAction.PAUSE_AGENT:
        if not agent_set_status(agent=agent, status=AgentStatus.PAUSED):
            return None
        action, changes = AuditAction.AGENT_PAUSED, {"status": [AgentStatus.ACTIVE.value, AgentStatus.PAUSED.value]}
    elif budget.action == ExceededAction.DOWNGRADE and budget.downgrade_model:
        old = agent.model_override
        if not agent_set_model_override(agent=agent, model=budget.downgrade_model):
            return None
        action, changes = AuditAction.MODEL_DOWNGRADED, {"model_override": [old, budget.downgrade_model]}
    else:
        return None
    AuditEntry.objects.create(
        organization_id=budget.organization_id,
        budget=budget,
        agent=agent,
        actor_label=f"system (budget {budget.pk} reached {ACTION_THRESHOLD}%)",
        action=action,
        changes={**changes, **reason},
    )
    return action
