"""Budgets on any node of the hierarchy, their live per-period spend, and reservations.

Units: limits are Decimal USD (``limit_usd``); live counters are integer **nano-dollars**
(``*_nanos``, 1 USD = 1,000,000,000) so that the guarded reservation update is exact integer
arithmetic on PostgreSQL and SQLite alike. A ledger row contributes ``usd_to_nanos(cost_usd)``
(half-up to the nano-dollar) — the same rule the reconciliation job applies to the ledger sum.
"""

import uuid
import zoneinfo
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from costs.models import validate_email_list
from pricing.calculator import format_usd, usd_text

NANOS_PER_USD = 1_000_000_000
DEFAULT_THRESHOLDS = (50, 75, 90, 100)


def usd_to_nanos(amount: Decimal) -> int:
    """USD -> integer nano-dollars, half-up (PostgreSQL's ``round()`` rule, so SQL sums agree)."""
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


def nanos_to_usd(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_USD


def nanos_usd_text(nanos: int) -> str:
    """Nano-dollars as JSON money: a USD decimal string ("0.0045")."""
    return format_usd(nanos_to_usd(nanos))


def nanos_usd_display(nanos: int) -> str:
    """Nano-dollars for people (messages, e-mails): "$1,234.56", "$0.0045" (``usd_text``)."""
    return usd_text(nanos_to_usd(nanos))


def default_thresholds() -> list[int]:
    return list(DEFAULT_THRESHOLDS)


def _validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"Unknown time zone {value!r}.") from exc


class BudgetScope(models.TextChoices):
    ORGANIZATION = "organization", "Organization"
    PROJECT = "project", "Project"
    SPRINT = "sprint", "Sprint"
    AGENT = "agent", "Agent"


class PeriodKind(models.TextChoices):
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly (ISO, from Monday)"
    MONTHLY = "monthly", "Monthly"
    QUARTERLY = "quarterly", "Quarterly"
    YEARLY = "yearly", "Yearly"
    SPRINT = "sprint", "Sprint (the sprint's own dates)"
    TOTAL = "total", "Total (lifetime)"
    CUSTOM = "custom", "Custom date range"


class Enforcement(models.TextChoices):
    SOFT = "soft", "Soft (warn, never block)"
    HARD = "hard", "Hard (block)"


class ExceededAction(models.TextChoices):
    BLOCK = "block", "Block the request"
    PAUSE_AGENT = "pause_agent", "Pause the agent"
    DOWNGRADE = "downgrade", "Downgrade to a cheaper model"


class Budget(models.Model):
    """A spending limit on one node: the organization itself, or one project, sprint or agent of it.

    ``organization`` is always set (tenancy); at most one of ``project`` / ``sprint`` / ``agent`` is,
    and that one says which node the budget belongs to (``scope``).
    """

    organization = models.ForeignKey("costs.Organization", on_delete=models.CASCADE, related_name="budgets")
    project = models.ForeignKey(
        "costs.Project", on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    sprint = models.ForeignKey("costs.Sprint", on_delete=models.CASCADE, null=True, blank=True, related_name="budgets")
    agent = models.ForeignKey("costs.Agent", on_delete=models.CASCADE, null=True, blank=True, related_name="budgets")
    name = models.CharField(max_length=200)

    limit_usd = models.DecimalField("limit (USD)", max_digits=18, decimal_places=6)
    period = models.CharField(max_length=16, choices=PeriodKind.choices, default=PeriodKind.MONTHLY)
    # Only for period="custom": the range [custom_start, custom_end).
    custom_start = models.DateTimeField(null=True, blank=True)
    custom_end = models.DateTimeField(null=True, blank=True)
    # Calendar periods (daily ... yearly) start at local midnight in this zone.
    timezone = models.CharField(max_length=64, default="UTC", validators=[_validate_timezone])
    # When set, only usage of this model counts and only checks for it are gated (a per-model budget).
    model_filter = models.CharField(max_length=255, blank=True, default="")

    enforcement = models.CharField(max_length=8, choices=Enforcement.choices, default=Enforcement.HARD)
    # Hard budgets admit spend up to limit x (1 + grace_percent / 100) before denying.
    grace_percent = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal(0))
    # Percentages of the limit at which alerts fire (the alerts issue consumes them).
    thresholds = models.JSONField(default=default_thresholds, blank=True)
    action = models.CharField(max_length=16, choices=ExceededAction.choices, default=ExceededAction.BLOCK)
    downgrade_model = models.CharField(max_length=255, blank=True, default="")
    is_active = models.BooleanField(default=True)
    # Who hears about its alerts besides the organization's alert contacts (comma-separated e-mails).
    alert_emails = models.TextField(blank=True, default="", validators=[validate_email_list])

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(project__isnull=True, sprint__isnull=True, agent__isnull=True)
                    | Q(project__isnull=False, sprint__isnull=True, agent__isnull=True)
                    | Q(project__isnull=True, sprint__isnull=False, agent__isnull=True)
                    | Q(project__isnull=True, sprint__isnull=True, agent__isnull=False)
                ),
                name="budget_exactly_one_scope",
            ),
            models.CheckConstraint(condition=Q(limit_usd__gt=0), name="budget_limit_positive"),
            models.CheckConstraint(condition=Q(grace_percent__gte=0), name="budget_grace_not_negative"),
            models.CheckConstraint(
                condition=~Q(period=PeriodKind.CUSTOM)
                | Q(custom_start__isnull=False, custom_end__isnull=False, custom_start__lt=F("custom_end")),
                name="budget_custom_period_has_range",
            ),
            models.CheckConstraint(
                condition=~Q(period=PeriodKind.SPRINT)
                | Q(project__isnull=False)
                | Q(sprint__isnull=False)
                | Q(agent__isnull=False),
                name="budget_sprint_period_needs_project_node",
            ),
            models.CheckConstraint(
                condition=~Q(action=ExceededAction.DOWNGRADE) | ~Q(downgrade_model=""),
                name="budget_downgrade_names_model",
            ),
        ]
        indexes = [models.Index(fields=["organization", "is_active"], name="budget_org_active_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def scope(self) -> str:
        if self.agent_id:
            return BudgetScope.AGENT
        if self.sprint_id:
            return BudgetScope.SPRINT
        if self.project_id:
            return BudgetScope.PROJECT
        return BudgetScope.ORGANIZATION

    @property
    def period_word(self) -> str:
        """The period kind for sentences ("... of its monthly budget"): daily ... yearly, sprint, total,
        custom-range."""
        return "custom-range" if self.period == PeriodKind.CUSTOM else str(self.period)

    @property
    def limit_nanos(self) -> int:
        return usd_to_nanos(self.limit_usd)

    @property
    def ceiling_nanos(self) -> int:
        """What settled + reserved may reach: the limit plus grace for hard budgets (soft budgets
        never block, so their ceiling is only used to report status)."""
        if self.enforcement == Enforcement.SOFT:
            return self.limit_nanos
        return usd_to_nanos(self.limit_usd * (1 + self.grace_percent / 100))

    def clean(self) -> None:
        errors = {}
        thresholds = self.thresholds
        if not isinstance(thresholds, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 < t <= 1000 for t in thresholds
        ):
            errors["thresholds"] = "A list of whole percentages between 1 and 1000, e.g. [50, 75, 90, 100]."
        if self.period == PeriodKind.SPRINT and not (self.project_id or self.sprint_id or self.agent_id):
            errors["period"] = "A sprint period needs a project, sprint or agent budget."
        if self.action == ExceededAction.DOWNGRADE and not self.downgrade_model:
            errors["downgrade_model"] = "Name the cheaper model to downgrade to."
        if self.action == ExceededAction.PAUSE_AGENT and not self.agent_id:
            errors["action"] = "Only an agent budget can pause its agent."
        for node in ("project", "sprint", "agent"):
            obj = getattr(self, node) if getattr(self, f"{node}_id") else None
            org_id = obj and (obj.organization_id if node == "project" else obj.project.organization_id)
            if obj is not None and org_id != self.organization_id:
                errors[node] = f"This {node} belongs to another organization."
        if errors:
            raise ValidationError(errors)


class BudgetPeriod(models.Model):
    """The live spend of one budget in one period: ``spent_nanos`` (settled, from the ledger) and
    ``reserved_nanos`` (held by in-flight requests). Created on first use, with ``spent_nanos``
    taken from the ledger, so a budget added or changed mid-period is right from its first request.
    """

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="periods")
    starts_at = models.DateTimeField()
    # Null: open-ended (period "total").
    ends_at = models.DateTimeField(null=True, blank=True)
    # The budget's limit and ceiling (limit + grace), nano-dollars, kept in the row so the guarded
    # update needs no join; budget changes rewrite them for the current period.
    limit_nanos = models.BigIntegerField()
    ceiling_nanos = models.BigIntegerField()
    spent_nanos = models.BigIntegerField(default=0)
    reserved_nanos = models.BigIntegerField(default=0)
    # Bumped by a PostgreSQL trigger on every change of spent_nanos (migration 0005), whoever makes
    # it: the Redis live store copies spent_nanos only from a newer version than it holds, so
    # copies applied out of order after concurrent commits never go back (ADR 0008).
    spent_version = models.BigIntegerField(default=0, db_default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["budget", "-starts_at"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "starts_at"], name="budget_period_unique_start"),
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=F("starts_at")), name="budget_period_range_valid"
            ),
            models.CheckConstraint(condition=Q(reserved_nanos__gte=0), name="budget_period_reserved_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.budget} from {self.starts_at:%Y-%m-%d %H:%M}"

    @property
    def remaining_nanos(self) -> int:
        return self.limit_nanos - self.spent_nanos - self.reserved_nanos


class ReservationStatus(models.TextChoices):
    HELD = "held", "Held"
    SETTLED = "settled", "Settled by usage"
    RELEASED = "released", "Released"
    EXPIRED = "expired", "Expired (not settled in time)"


class Reservation(models.Model):
    """Money held against every covering budget period by one pre-call check, until the request's
    usage settles it (or it is released, or it expires)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey("costs.Organization", on_delete=models.CASCADE, related_name="reservations")
    # Attribution of the checked request, for tenancy (which keys may see / release it). The project
    # is always set by the check (null only on rows made before it existed); the agent is null when
    # the check named an agent that is not registered yet (checks never register agents: ingestion
    # of the request's usage does).
    project = models.ForeignKey(
        "costs.Project", on_delete=models.CASCADE, null=True, blank=True, related_name="reservations"
    )
    agent = models.ForeignKey(
        "costs.Agent", on_delete=models.CASCADE, null=True, blank=True, related_name="reservations"
    )
    # The agent's idempotency key for the call, when it sent one: usage with this request_id settles it.
    request_id = models.CharField(max_length=128, blank=True, default="")
    model = models.CharField(max_length=255, help_text="The model reserved for (after any downgrade).")
    amount_nanos = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=ReservationStatus.choices, default=ReservationStatus.HELD)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "request_id"],
                condition=~Q(request_id=""),
                name="reservation_request_id_unique_in_org",
            ),
            models.CheckConstraint(condition=Q(amount_nanos__gte=0), name="reservation_amount_not_negative"),
        ]
        indexes = [
            # The expiry job's "due" scan.
            models.Index(fields=["expires_at"], name="reservation_held_due_idx", condition=Q(status="held")),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class ReservationHold(models.Model):
    """The part of a reservation held against one budget period."""

    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="holds")
    period = models.ForeignKey(BudgetPeriod, on_delete=models.CASCADE, related_name="holds")
    amount_nanos = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reservation", "period"], name="reservation_hold_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.amount_nanos} nano-USD on {self.period_id}"


class AuditAction(models.TextChoices):
    BUDGET_CREATED = "budget_created", "Budget created"
    BUDGET_CHANGED = "budget_changed", "Budget changed"
    BUDGET_DELETED = "budget_deleted", "Budget deleted"
    PERIOD_RESET = "period_reset", "Period reset"
    AGENT_PAUSED = "agent_paused", "Agent paused"
    AGENT_RESUMED = "agent_resumed", "Agent resumed"
    MODEL_DOWNGRADED = "model_downgraded", "Agent switched to a cheaper model"
    ALERT_ACKNOWLEDGED = "alert_acknowledged", "Alert acknowledged"
    ALERT_RESOLVED = "alert_resolved", "Alert resolved"


class AuditEntry(models.Model):
    """Who changed what, when: budget edits, period resets, agent pauses (append-only)."""

    organization = models.ForeignKey("costs.Organization", on_delete=models.CASCADE, related_name="audit_entries")
    budget = models.ForeignKey(Budget, on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_entries")
    agent = models.ForeignKey(
        "costs.Agent", on_delete=models.SET_NULL, null=True, blank=True, related_name="audit_entries"
    )
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    # Who acted when there is no user: "api-key:<prefix>", "system", ...
    actor_label = models.CharField(max_length=200, blank=True, default="")
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    changes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["organization", "created_at"], name="audit_org_time_idx")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} at {self.created_at:%Y-%m-%d %H:%M}"


class CheckContextVersion(models.Model):
    """A counter per organization that PostgreSQL triggers bump whenever something a budget check
    reads about the organization changes: its budgets or their period rows, agents, sprints,
    projects, API keys (revocation) or its time zone (migration ``0003_check_context_version``).

    The check caches what it read per process and runs its reservation only if this counter still
    holds the value it read with, in the same statement — so a pause, a revoked key or a new budget
    acts on the very next check without a lookup per check (ADR 0003, "Check context cache").
    Counter updates (spent / reserved) do not bump it. A missing row means version 0.
    """

    # A plain id, not a foreign key: deleting an organization deletes its agents and budgets first,
    # and their triggers bump this row again; a constraint would then fail the deletion. Ids are
    # never reused, so a leftover row is harmless.
    organization_id = models.BigIntegerField(primary_key=True)
    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"check context v{self.version}"


# --- alerts (issue 5) -------------------------------------------------------------------------


class AlertKind(models.TextChoices):
    THRESHOLD = "threshold", "Threshold crossed"
    FORECAST = "forecast", "Forecast to exceed the limit"
    ANOMALY = "anomaly", "Spend anomaly"


class AlertSeverity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class AlertStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


class AnomalyWindow(models.TextChoices):
    HOUR = "hour", "Last hour"
    DAY = "day", "Last day"


def severity_for_percent(percent: int) -> str:
    """info below 75 %, warning below 100 %, critical at 100 % and over."""
    if percent >= 100:
        return AlertSeverity.CRITICAL
    if percent >= 75:
        return AlertSeverity.WARNING
    return AlertSeverity.INFO


class BudgetAlert(models.Model):
    """One alert, recorded once: a budget period's spend crossed a threshold (``threshold``), its
    forecast crossed the limit (``forecast``), or an agent's / project's spend in a window is far
    above its own baseline (``anomaly``).

    Once-only is a database rule, not a hope: threshold and forecast alerts are unique per
    (budget, period start, kind, threshold, limit) — a new period or a changed limit re-arms them — and anomaly
    alerts per (subject, window, window start). Amounts are integer nano-dollars.
    """

    organization = models.ForeignKey("costs.Organization", on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=16, choices=AlertKind.choices)
    severity = models.CharField(max_length=16, choices=AlertSeverity.choices)
    # Threshold and forecast alerts: the budget and its period. The period's bounds are copied, and
    # both links survive deletion as null, so history outlives a budget or a re-shaped period.
    budget = models.ForeignKey(Budget, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts")
    period = models.ForeignKey(BudgetPeriod, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts")
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    # Percent of the limit (threshold alerts; 100 for forecast alerts).
    threshold_percent = models.PositiveIntegerField(null=True, blank=True)
    # The limit in force when it fired (nano-dollars): part of the once-only key, so a changed limit re-arms.
    limit_nanos = models.BigIntegerField(null=True, blank=True)
    # Anomaly alerts: the agent or project whose spend spiked, over [window_start, window_start + window).
    project = models.ForeignKey("costs.Project", on_delete=models.CASCADE, null=True, blank=True, related_name="alerts")
    agent = models.ForeignKey("costs.Agent", on_delete=models.CASCADE, null=True, blank=True, related_name="alerts")
    window = models.CharField(max_length=8, choices=AnomalyWindow.choices, blank=True, default="")
    window_start = models.DateTimeField(null=True, blank=True)
    # Spend when it fired: the period's settled spend, or the window's spend (nano-dollars).
    spend_nanos = models.BigIntegerField()
    # Forecast: projected spend at the period's end and when the limit is projected to be reached.
    projected_nanos = models.BigIntegerField(null=True, blank=True)
    projected_exhaustion_at = models.DateTimeField(null=True, blank=True)
    # Anomaly: the baseline (median) and the level that counted as anomalous (median + k x MAD).
    baseline_nanos = models.BigIntegerField(null=True, blank=True)
    cutoff_nanos = models.BigIntegerField(null=True, blank=True)
    message = models.CharField(max_length=300)
    fired_at = models.DateTimeField()

    status = models.CharField(max_length=16, choices=AlertStatus.choices, default=AlertStatus.OPEN)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Who acted when there is no user ("api-key:<prefix>").
    handled_by_label = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start", "kind", "threshold_percent", "limit_nanos"],
                condition=Q(kind__in=["threshold", "forecast"]),
                name="alert_once_per_period_threshold",
            ),
            # One per subject (an agent or a project) and window; two partial constraints rather than
            # one with NULLS NOT DISTINCT, which SQLite (the embedded default) does not enforce.
            models.UniqueConstraint(
                fields=["organization", "agent", "window", "window_start"],
                condition=Q(kind="anomaly", agent__isnull=False),
                name="alert_anomaly_once_per_agent_window",
            ),
            models.UniqueConstraint(
                fields=["organization", "project", "window", "window_start"],
                condition=Q(kind="anomaly", project__isnull=False),
                name="alert_anomaly_once_per_project_window",
            ),
            models.CheckConstraint(
                condition=(
                    ~Q(kind__in=["threshold", "forecast"])
                    | Q(period_start__isnull=False, threshold_percent__isnull=False, limit_nanos__isnull=False)
                ),
                name="alert_budget_kinds_name_their_period",
            ),
            models.CheckConstraint(
                condition=~Q(kind="anomaly")
                | (
                    Q(window_start__isnull=False)
                    & ~Q(window="")
                    & (Q(project__isnull=False, agent__isnull=True) | Q(project__isnull=True, agent__isnull=False))
                ),
                name="alert_anomaly_names_one_subject_and_window",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-fired_at"], name="alert_org_fired_idx"),
            models.Index(fields=["organization", "status"], name="alert_org_status_idx"),
        ]

    def __str__(self) -> str:
        return self.message


class DeliveryChannel(models.TextChoices):
    EMAIL = "email", "E-mail"
    WEBHOOK = "webhook", "Webhook (Slack-compatible)"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (will retry)"
    GAVE_UP = "gave_up", "Failed (gave up)"


class AlertDelivery(models.Model):
    """One channel's delivery of one alert, recorded in the transaction that recorded the alert, so
    an outage of the mail server or the broker delays it and loses nothing: a periodic job retries
    every due delivery with exponential backoff until it is sent (or gives up after
    ``SPENDGUARD_ALERT_DELIVERY_MAX_ATTEMPTS``)."""

    alert = models.ForeignKey(BudgetAlert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=16, choices=DeliveryChannel.choices)
    # E-mail: the recipients, comma-separated; webhook: the URL. Fixed when the alert fired.
    target = models.TextField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["alert", "channel"]
        verbose_name_plural = "alert deliveries"
        constraints = [
            models.UniqueConstraint(fields=["alert", "channel"], name="alert_delivery_once_per_channel"),
        ]
        indexes = [
            # The retry job's "due" scan.
            models.Index(
                fields=["next_attempt_at"],
                name="alert_delivery_due_idx",
                condition=Q(status__in=["pending", "failed"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} of alert {self.alert_id}: {self.status}"
