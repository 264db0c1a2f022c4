"""Seed budgets on the demo organization (``acme``, made by ``seed_demo``): one budget in each state —
ok, warning, exceeded — at each level (organization, project, sprint, agent), hard and soft, one
with a model filter, one that downgrades, one that blocks a runaway agent.

Limits are sized from the spend the ledger holds for each budget's current period when the command
runs, so the states come out right whatever day (or minute) the demo is seeded:

- ok: spend is ~30 % of the limit; warning: ~95 % (past the 90 % threshold); exceeded: ~125 %.
- A budget that must show spend but whose current period has none yet (a daily budget just after
  local midnight, a sprint on its first morning) takes the next longer period that has spend
  (daily → weekly → monthly → … → total; a sprint budget moves to the latest sprint with spend).

Idempotent: budgets are found by name; a rerun resizes them to the ledger as it is then, through
``budget_update`` (audited only when something changed), and creates none twice.
"""

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from budgets.models import Budget, BudgetAlert, Enforcement, ExceededAction, PeriodKind, nanos_to_usd
from budgets.selectors import LiveStatus, budget_queryset, budgets_live
from budgets.services.budgets import budget_create, budget_update
from budgets.services.periods import ledger_spend_nanos, period_bounds, period_ensure
from costs.models import Agent, Organization, Project, Sprint

ORGANIZATION_SLUG = "acme"
ACTOR = "seed_demo_budgets"
DEMO_ALERT_EMAIL = "finops@acme.example"
# Share of the limit the current spend should be, per target state.
TARGET_SHARE = {
    LiveStatus.OK: Decimal("0.30"),
    LiveStatus.WARNING: Decimal("0.95"),
    LiveStatus.EXCEEDED: Decimal("1.25"),
}
# Limit of an "ok" budget whose node has no spend at all.
EMPTY_OK_LIMIT = Decimal(10)
LONGER = [PeriodKind.DAILY, PeriodKind.WEEKLY, PeriodKind.MONTHLY, PeriodKind.QUARTERLY, PeriodKind.YEARLY]


@dataclass(frozen=True)
class BudgetSpec:
    name: str
    state: str
    period: str
    enforcement: str
    project: str | None = None  # slug
    agent: str | None = None  # name, inside project
    sprint: bool = False  # the project's current sprint
    extra: dict = field(default_factory=dict)


SPECS = (
    # Organization
    BudgetSpec(
        "Acme monthly", LiveStatus.OK, PeriodKind.MONTHLY, Enforcement.HARD, extra={"grace_percent": Decimal(5)}
    ),
    BudgetSpec("Acme daily (soft)", LiveStatus.WARNING, PeriodKind.DAILY, Enforcement.SOFT),
    BudgetSpec("Acme weekly (soft)", LiveStatus.EXCEEDED, PeriodKind.WEEKLY, Enforcement.SOFT),
    # Project
    BudgetSpec(
        "Support bot monthly",
        LiveStatus.OK,
        PeriodKind.MONTHLY,
        Enforcement.HARD,
        project="support-bot",
        extra={"grace_percent": Decimal(10)},
    ),
    BudgetSpec("Code review weekly", LiveStatus.WARNING, PeriodKind.WEEKLY, Enforcement.SOFT, project="code-review"),
    BudgetSpec("Research monthly", LiveStatus.EXCEEDED, PeriodKind.MONTHLY, Enforcement.SOFT, project="research"),
    # Sprint (each project's current sprint)
    BudgetSpec(
        "Data pipeline sprint", LiveStatus.OK, PeriodKind.SPRINT, Enforcement.HARD, "data-pipeline", sprint=True
    ),
    BudgetSpec(
        "Support bot sprint", LiveStatus.WARNING, PeriodKind.SPRINT, Enforcement.SOFT, "support-bot", sprint=True
    ),
    BudgetSpec("Research sprint", LiveStatus.EXCEEDED, PeriodKind.SPRINT, Enforcement.SOFT, "research", sprint=True),
    # Agent
    BudgetSpec(
        "Triage gpt-4o-mini monthly",
        LiveStatus.OK,
        PeriodKind.MONTHLY,
        Enforcement.HARD,
        "support-bot",
        agent="triage",
        extra={"model_filter": "gpt-4o-mini"},
    ),
    BudgetSpec(
        "PR reviewer daily (downgrades)",
        LiveStatus.WARNING,
        PeriodKind.DAILY,
        Enforcement.HARD,
        "code-review",
        agent="pr-reviewer",
        extra={"action": ExceededAction.DOWNGRADE, "downgrade_model": "claude-haiku-4-5"},
    ),
    BudgetSpec(
        "Analyst daily (runaway guard)",
        LiveStatus.EXCEEDED,
        PeriodKind.DAILY,
        Enforcement.HARD,
        "research",
        agent="analyst",
    ),
)


def size_limit(spent_nanos: int, state: str) -> Decimal:
    """A round-ish limit (USD) that puts ``spent_nanos`` at the target share of it: rounded so that
    the state cannot change (ok rounds up, exceeded rounds down, warning to 3 significant digits)."""
    if spent_nanos <= 0:
        return EMPTY_OK_LIMIT
    raw = nanos_to_usd(spent_nanos) / TARGET_SHARE[state]
    digits, rounding = {
        LiveStatus.OK: (2, ROUND_CEILING),
        LiveStatus.WARNING: (3, ROUND_HALF_UP),
        LiveStatus.EXCEEDED: (2, ROUND_FLOOR),
    }[state]
    exponent = math.floor(raw.log10()) - digits + 1
    limit = raw.quantize(Decimal(1).scaleb(exponent), rounding=rounding)
    return max(limit, Decimal("0.000001")).quantize(Decimal("0.000001"), rounding=ROUND_CEILING)


class Command(BaseCommand):
    help = "Seed demo budgets in each state (ok, warning, exceeded) on the demo organization (idempotent)."

    def handle(self, *args, **options) -> None:
        organization = Organization.objects.filter(slug=ORGANIZATION_SLUG).first()
        if organization is None:
            raise CommandError(f"No organization {ORGANIZATION_SLUG!r}: run `manage.py seed_demo` first.")
        now = timezone.now()
        created = updated = 0
        names = []
        alerts_before = BudgetAlert.objects.filter(organization=organization).count()
        with transaction.atomic():
            for spec in SPECS:
                fields = self._fields(organization, spec, now)
                existing = Budget.objects.filter(organization=organization, name=spec.name).first()
                if existing is None:
                    budget_create(organization=organization, name=spec.name, **fields, actor_label=ACTOR)
                    created += 1
                else:
                    before = existing.updated_at
                    after = budget_update(budget=existing, data=fields, actor_label=ACTOR, now=now)
                    updated += after.updated_at != before
                names.append(spec.name)
            # Start each budget's live period now, as its first check would: the thresholds its seeded
            # spend already crossed alert here, once, rather than all at the walkthrough's first request.
            for budget in budget_queryset().filter(organization=organization, name__in=names, is_active=True):
                bounds = period_bounds(budget, now)
                if bounds is not None:
                    period_ensure(budget, bounds)
            if not organization.alert_emails:
                # From now on alerts are e-mailed (to the console, the embedded default's backend). Set
                # after the seeded alerts, which stay in the admin without flooding the demo's terminal.
                organization.alert_emails = DEMO_ALERT_EMAIL
                organization.save(update_fields=["alert_emails"])
        alerts = BudgetAlert.objects.filter(organization=organization).count() - alerts_before

        live = budgets_live(
            budgets=budget_queryset().filter(organization=organization, name__in=names).order_by("name"), now=now
        )
        wanted = {spec.name: spec.state for spec in SPECS}
        out = self.stdout.write
        out(
            f"Demo budgets on {organization.name!r}: {created} created, {updated} resized, {len(SPECS)} in all; "
            f"{alerts} new alert(s); new alerts are e-mailed to {organization.alert_emails}."
        )
        for item in live:
            budget = item.budget
            node = budget.agent or budget.sprint or budget.project or "organization"
            out(
                f"  {item.status:<9} {budget.name:<32} {budget.enforcement:<4} {budget.period:<8} "
                f"${item.spent_usd:,.2f} of ${budget.limit_usd:,.2f}  ({node})"
            )
            if item.status != wanted[budget.name]:
                self.stderr.write(f"Warning: {budget.name!r} is {item.status}, meant to be {wanted[budget.name]}.")

    def _fields(self, organization: Organization, spec: BudgetSpec, now: datetime) -> dict:
        """The budget's fields, with its period (maybe a longer one, see the module docstring) and
        its limit sized from the ledger."""
        node = {"project": None, "sprint": None, "agent": None}
        project = Project.objects.get(organization=organization, slug=spec.project) if spec.project else None
        candidates: list[tuple[dict, str]] = []
        if spec.agent:
            node["agent"] = Agent.objects.get(project=project, name=spec.agent)
        elif spec.sprint:
            # The current sprint first, then earlier ones (for a sprint that has no spend yet).
            today = now.astimezone(organization.tzinfo).date()
            sprints = Sprint.objects.filter(project=project, start_date__lte=today).order_by("-start_date")
            for index, sprint in enumerate(sprints):
                candidates.append(({**node, "sprint": sprint}, spec.period if index == 0 else PeriodKind.TOTAL))
            if not candidates:
                raise CommandError(f"Project {spec.project!r} has no sprint: run `manage.py seed_demo` first.")
        elif project is not None:
            node["project"] = project
        if not candidates:
            longer = LONGER[LONGER.index(spec.period) :] if spec.period in LONGER else [spec.period]
            candidates = [(node, period) for period in [*longer, PeriodKind.TOTAL]]

        for chosen_node, period in candidates:
            budget = Budget(
                organization=organization,
                period=period,
                timezone=organization.timezone,
                **chosen_node,
                **spec.extra,
            )
            bounds = period_bounds(budget, now)
            spent = ledger_spend_nanos(budget, bounds) if bounds is not None else 0
            if spent > 0 or spec.state == LiveStatus.OK:
                break
        return {
            **chosen_node,
            "period": period,
            "enforcement": spec.enforcement,
            "limit_usd": size_limit(spent, spec.state),
            "timezone": organization.timezone,
            **spec.extra,
        }
