"""What a check reads before it reserves: who it is for (:class:`_Target`) and the candidate
budgets with their periods, from this process's check context cache (:mod:`budgets.services.check_context`)
or afresh."""

from dataclasses import dataclass
from datetime import datetime

from budgets.errors import AgentPaused
from budgets.models import Budget, BudgetPeriod, PeriodKind
from budgets.services import check_context
from budgets.services.check_context import CheckContext
from budgets.services.enforcement.store import _AGENT_FIELDS, _BUDGET_FIELDS, _PERIOD_FIELDS, _dt, _run, _sql, _Stale
from budgets.services.periods import next_local_midnight, period_bounds
from config.db import fetch_instances, row_shape
from config.errors import OutOfScope, ValidationFailed
from costs.models import Agent, AgentStatus, Project, Sprint
from costs.services.scope import KeyScope


@dataclass(slots=True)
class _Target:
    """Who the check is for. ``agent`` is None for a name not registered yet (or not looked up yet:
    ``agent_lookup``)."""

    project: Project | None  # None: ``project_slug`` is looked up (organization keys)
    agent: Agent | None
    agent_name: str
    sprint_slug: str | None
    agent_lookup: bool = False
    project_slug: str | None = None

    @property
    def cache_key(self) -> tuple:
        """Identifies the target among an organization's cached check contexts."""
        project = self.project.pk if self.project is not None else self.project_slug
        agent = self.agent.pk if self.agent is not None and not self.agent_lookup else self.agent_name
        return (project, agent, self.sprint_slug)


def _target_resolve(
    *, scope: KeyScope, agent_name: str | None, project_slug: str | None, sprint_slug: str | None
) -> _Target:
    problems: dict[str, list[str]] = {}
    if project_slug is not None and not scope.project_allowed(project_slug):
        problems["project"] = [f"This API key may only act on project {scope.project.slug!r}."]
    if agent_name is not None and not scope.agent_allowed(agent_name):
        problems["agent"] = [f"This API key may only act as agent {scope.agent.name!r}."]
    if problems:
        raise OutOfScope(fields=problems)
    if scope.agent is None and agent_name is None:
        problems["agent"] = [f"This field is required for a {scope.level}-scoped API key."]
    if scope.project is None and project_slug is None:
        problems["project"] = ["This field is required for an organization-scoped API key."]
    if problems:
        raise ValidationFailed(fields=problems)

    project = scope.project
    if scope.agent is not None:
        return _Target(project=project, agent=scope.agent, agent_name=scope.agent.name, sprint_slug=sprint_slug)
    # Looked up together with the budgets (one round trip).
    return _Target(
        project=project,
        agent=None,
        agent_name=agent_name,
        sprint_slug=sprint_slug,
        agent_lookup=True,
        project_slug=project_slug if project is None else None,
    )


def _project_lookup(*, scope: KeyScope, slug: str) -> Project:
    found = fetch_instances(
        Project, ("id", "organization_id", "slug"), "organization_id = %s AND slug = %s", [scope.organization.pk, slug]
    )
    if not found:
        raise ValidationFailed(
            fields={"project": [f"Unknown project {slug!r} in organization {scope.organization.slug!r}."]}
        )
    return found[0]


def _candidates(
    *, target: _Target, organization_id: int, now: datetime, with_version: bool
) -> tuple[int | None, list[tuple[Budget, BudgetPeriod | None]]]:
    """Active budgets that may cover a request of ``target`` (organization budgets, the project's,
    its sprints', the agent's), each with its period row containing ``now`` if one exists. Model
    filters and the exact sprint are applied by the caller. Looks up ``target.agent`` by name
    when asked to, in the same round trip, and ``with_version`` the organization's check context
    version first (so what follows is at least as new as the version returned; else None)."""
    moment = _dt(now)
    project_id = target.project.pk
    statements = [(check_context.version_sql(), [organization_id])] if with_version else []
    if target.agent_lookup:
        agent_shape = row_shape(Agent, _AGENT_FIELDS)
        statements.append((_sql()["agent"], [project_id, target.agent_name]))
        params = [moment, moment, organization_id, True, project_id, target.agent_name, project_id, project_id]
        statements.append((_sql()["candidates_by_name"], params))
    else:
        agent_id = target.agent.pk if target.agent is not None else None
        statements.append(
            (_sql()["candidates"], [moment, moment, organization_id, True, agent_id, project_id, project_id])
        )
    results = _run(statements)
    version = results.pop(0)[0][0] if with_version else None
    if target.agent_lookup:
        found = agent_shape.instances(results[0])
        target.agent = found[0] if found else None
        target.agent_lookup = False
    budget_shape, period_shape = row_shape(Budget, _BUDGET_FIELDS), row_shape(BudgetPeriod, _PERIOD_FIELDS)
    split = len(budget_shape.fields)
    result = []
    for row in results[-1]:
        budget = budget_shape.instance(row[:split])
        period = period_shape.instance(row[split:]) if row[split] is not None else None
        result.append((budget, period))
    return version, result


class _ContextLoading:
    """The steps of :class:`~budgets.services.enforcement.check._Check` that load what it reads."""

    def _context_load(self) -> None:
        """Attribution, candidate budgets and the sprint: from this process's cache when the key's
        version allows (the reservation then runs only if that version still holds), else read —
        and cached when read at the key's version."""
        organization_id = self.scope.organization.pk
        cache_key = self.target.cache_key
        self.guard = None
        if self.version is not None:
            context = check_context.context_get(
                organization_id=organization_id, version=self.version, target=cache_key, now=self.now
            )
            if context is not None:
                self.context, self.candidates, self.guard = context, context.candidates, self.version
                self.read_now = False
                self.target.project, self.target.agent, self.target.agent_lookup = context.project, context.agent, False
                self._sprints, self._sprint, self._sprint_resolved = context.sprints, context.sprint, True
                return
        self.read_now = True
        began = check_context.generation()
        if self.target.project is None:
            self.target.project = _project_lookup(scope=self.scope, slug=self.target.project_slug)
        read_version, self.candidates = _candidates(
            target=self.target, organization_id=organization_id, now=self.now, with_version=self.version is not None
        )
        if self.version is not None and read_version != self.version:
            # Before judging anything read with the key (an agent key's agent, paused or not): the
            # key itself may be from before the latest change.
            raise _Stale()
        agent = self.target.agent
        if agent is not None and agent.status == AgentStatus.PAUSED:
            raise AgentPaused(f"Agent {agent.name!r} is paused; an operator must resume it.")
        for budget, _ in self.candidates:  # what period_bounds reads, already in hand
            budget.organization = self.scope.organization
            if agent is not None and budget.agent_id == agent.pk:
                budget.agent = agent
        if self.target.sprint_slug is not None or any(_needs_sprint(b) for b, _ in self.candidates):
            self._sprint_resolve()
        if self.version is None:
            return
        self.guard = self.version
        self.context = CheckContext(
            computed_at=self.now,
            valid_until=self._valid_until(),
            project=self.target.project,
            agent=agent,
            candidates=self.candidates,
            sprints=self._sprints,
            sprint=self._sprint,
        )
        check_context.context_put(
            organization_id=organization_id,
            version=self.version,
            target=cache_key,
            context=self.context,
            generation=began,
        )

    def _valid_until(self) -> datetime:
        """The first instant after now at which a candidate's period, or the current sprint, may
        change (the clock moves budgets into new periods; the version only tracks edits)."""
        edges = [next_local_midnight(self.now, self.scope.organization.timezone)]  # sprints are dates
        for budget, _ in self.candidates:
            if budget.period == PeriodKind.CUSTOM:
                edges.extend(e for e in (budget.custom_start, budget.custom_end) if e is not None and e > self.now)
            elif budget.period not in (PeriodKind.SPRINT, PeriodKind.TOTAL):
                edges.append(period_bounds(budget, self.now).ends_at)
        return min(edges)

    def _sprint_resolve(self) -> None:
        project = self.target.project
        self._sprints = fetch_instances(
            Sprint, ("id", "project_id", "slug", "start_date", "end_date"), "project_id = %s", [project.pk]
        )
        slug = self.target.sprint_slug
        if slug is not None:
            sprint = next((s for s in self._sprints if s.slug == slug), None)
            if sprint is None:
                raise ValidationFailed(fields={"sprint": [f"Unknown sprint {slug!r} in project {project.slug!r}."]})
        else:
            local = self.now.astimezone(self.scope.organization.tzinfo).date()
            sprint = next((s for s in self._sprints if s.start_date <= local <= s.end_date), None)
        self._sprint, self._sprint_resolved = sprint, True
        # period_bounds reads these relations; the check already holds them.
        for budget, _ in self.candidates:
            if budget.sprint_id is not None and sprint is not None and budget.sprint_id == sprint.pk:
                budget.sprint = sprint


def _needs_sprint(budget: Budget) -> bool:
    return budget.sprint_id is not None or budget.period == PeriodKind.SPRINT
