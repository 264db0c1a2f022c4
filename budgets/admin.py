"""Operator admin for budgets (with live status), reservations and the audit trail.

Budget writes go through :mod:`budgets.services.budgets` so every change is audited with the
operator who made it and reaches the live periods in the same transaction. Live figures come from
:func:`budgets.selectors.budgets_live`, a fixed number of queries per list page.
"""

import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST
from redis import RedisError

from budgets.models import (
    AlertDelivery,
    AuditEntry,
    Budget,
    BudgetAlert,
    BudgetPeriod,
    BudgetScope,
    Reservation,
    ReservationHold,
    nanos_usd_text,
)
from budgets.selectors import BudgetLive, LiveStatus, budget_ids_with_status, budgets_live, live_reserved_apply
from budgets.services import redis_store
from budgets.services.alerts import alerts_acknowledge, alerts_resolve
from budgets.services.budgets import EDITABLE_FIELDS, budget_create, budget_delete, budget_update, period_reset
from pricing.calculator import format_usd

# Inline of live periods: the recent ones (a daily budget gathers 365 rows a year).
PERIOD_INLINE_DAYS = 31


def _usd(nanos: int | None) -> str:
    return "—" if nanos is None else f"${nanos_usd_text(nanos)}"


# --- Budgets ----------------------------------------------------------------------------------


class StatusFilter(admin.SimpleListFilter):
    """By live status (computed from the current period, so worked out by the selector)."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(value, value) for value in LiveStatus.values]

    def queryset(self, request, queryset):
        if self.value() in LiveStatus.values:
            return queryset.filter(pk__in=budget_ids_with_status(budgets=queryset, status=self.value()))
        return queryset


class ScopeFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request, model_admin):
        return BudgetScope.choices

    def queryset(self, request, queryset):
        nodes = {
            BudgetScope.ORGANIZATION: Q(project__isnull=True, sprint__isnull=True, agent__isnull=True),
            BudgetScope.PROJECT: Q(project__isnull=False),
            BudgetScope.SPRINT: Q(sprint__isnull=False),
            BudgetScope.AGENT: Q(agent__isnull=False),
        }
        return queryset.filter(nodes[self.value()]) if self.value() in nodes else queryset


class BudgetChangeList(ChangeList):
    """Works out the live status of the page's budgets in one go (no query per row)."""

    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        for item in budgets_live(budgets=self.result_list):
            item.budget._live = item


class BudgetForm(forms.ModelForm):
    class Meta:
        model = Budget
        fields = ["organization", *EDITABLE_FIELDS]
        help_texts = {
            "project": "Set at most one of project, sprint and agent; none for an organization-wide budget.",
            "limit_usd": "USD per period.",
            "grace_percent": "Hard budgets admit spend up to limit × (1 + grace / 100).",
            "thresholds": "Alert thresholds in percent of the limit, e.g. [50, 75, 90, 100].",
        }


class BudgetPeriodInline(admin.TabularInline):
    model = BudgetPeriod
    verbose_name_plural = f"Live periods (last {PERIOD_INLINE_DAYS} days)"
    fields = ["starts_at", "ends_at", "limit", "spent", "reserved", "remaining", "updated_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        since = timezone.now() - timedelta(days=PERIOD_INLINE_DAYS)
        return super().get_queryset(request).filter(Q(ends_at__isnull=True) | Q(ends_at__gt=since))

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="limit")
    def limit(self, obj: BudgetPeriod) -> str:
        return _usd(obj.limit_nanos)

    @admin.display(description="spent")
    def spent(self, obj: BudgetPeriod) -> str:
        return _usd(obj.spent_nanos)

    @admin.display(description="reserved")
    def reserved(self, obj: BudgetPeriod) -> str:
        return _usd(self._live(obj).reserved_nanos)

    @admin.display(description="remaining")
    def remaining(self, obj: BudgetPeriod) -> str:
        return _usd(max(0, self._live(obj).remaining_nanos))

    def _live(self, obj: BudgetPeriod) -> BudgetPeriod:
        """The row with what the enforcing store holds (the Redis store reserves outside it)."""
        if not hasattr(obj, "_live_applied"):
            live_reserved_apply([obj])
            obj._live_applied = True
        return obj


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    form = BudgetForm
    list_display = [
        "name",
        "organization",
        "node",
        "period",
        "enforcement",
        "limit",
        "spent",
        "reserved",
        "remaining",
        "status",
        "is_active",
    ]
    list_filter = [StatusFilter, ScopeFilter, "enforcement", "period", "organization", "is_active"]
    search_fields = ["name"]
    # The node's str() names its organization: load it with the node.
    list_select_related = [
        "organization",
        "project__organization",
        "sprint__project__organization",
        "agent__project__organization",
    ]
    autocomplete_fields = ["organization", "project", "sprint", "agent"]
    readonly_fields = ["live_status", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "organization", "project", "sprint", "agent", "is_active"]}),
        ("Limit", {"fields": ["limit_usd", "enforcement", "grace_percent", "action", "downgrade_model"]}),
        ("Period", {"fields": ["period", "custom_start", "custom_end", "timezone", "model_filter"]}),
        ("Alerts", {"fields": ["thresholds"]}),
        ("Now", {"fields": ["live_status", "created_at", "updated_at"]}),
    ]
    inlines = [BudgetPeriodInline]
    actions = ["reset_current_period"]

    def get_changelist(self, request, **kwargs):
        return BudgetChangeList

    def get_readonly_fields(self, request, obj=None):
        # The organization is fixed once created: audit rows and tenancy hang on it.
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "organization"] if obj is not None else fields

    # Writes go through the services (audit rows with the operator, live periods kept right).
    def save_model(self, request, obj: Budget, form, change: bool) -> None:
        if change:
            data = {field: form.cleaned_data[field] for field in form.changed_data if field in EDITABLE_FIELDS}
            budget_update(budget=obj, data=data, actor=request.user)
            obj.refresh_from_db()
            return
        fields = {field: form.cleaned_data[field] for field in EDITABLE_FIELDS if field in form.cleaned_data}
        budget = budget_create(organization=form.cleaned_data["organization"], **fields, actor=request.user)
        # The admin goes on with `obj` (history entry, redirect): make it the stored row.
        obj.pk = budget.pk
        obj.refresh_from_db()
        obj._state.adding = False

    def delete_model(self, request, obj: Budget) -> None:
        budget_delete(budget=obj, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for budget in queryset:
            budget_delete(budget=budget, actor=request.user)

    @admin.action(description="Reset current period (release held reservations, re-derive spend)")
    def reset_current_period(self, request, queryset) -> None:
        results = [period_reset(budget=budget, actor=request.user) for budget in queryset]
        reset = [r for r in results if r.period is not None]
        released = sum(r.released for r in reset)
        skipped = len(results) - len(reset)
        note = f"; {skipped} had no current period" if skipped else ""
        self.message_user(
            request,
            f"Reset the current period of {len(reset)} budget(s): released {released} held reservation(s), "
            f"spend re-derived from the ledger{note}.",
            messages.SUCCESS,
        )

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        own = [
            path(
                "<path:object_id>/reset-period/",
                self.admin_site.admin_view(self.reset_view),
                name="{}_{}_reset_period".format(*info),
            )
        ]
        return own + super().get_urls()

    @method_decorator(require_POST)
    def reset_view(self, request, object_id: str):
        """POST-only target of the "Reset current period" button on the change page."""
        budget = get_object_or_404(Budget, pk=object_id)
        if not self.has_change_permission(request, budget):
            raise PermissionDenied
        result = period_reset(budget=budget, actor=request.user)
        if result.period is None:
            self.message_user(request, f"Budget {budget} has no current period; nothing to reset.", messages.WARNING)
        else:
            self.message_user(
                request,
                f"Reset the current period of {budget}: released {result.released} held reservation(s); "
                f"spent {_usd(result.spent_before)} → {_usd(result.spent_after)}, "
                f"reserved {_usd(result.reserved_before)} → {_usd(result.reserved_after)}.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:budgets_budget_change", args=[budget.pk]))

    def _live(self, obj: Budget) -> BudgetLive:
        live = getattr(obj, "_live", None)
        if live is None:  # a single object (change page): one selector call
            live = obj._live = budgets_live(budgets=[obj])[0]
        return live

    @admin.display(description="node")
    def node(self, obj: Budget) -> str:
        node = obj.agent or obj.sprint or obj.project
        return f"{obj.scope}: {node}" if node else "organization"

    @admin.display(description="limit", ordering="limit_usd")
    def limit(self, obj: Budget) -> str:
        return f"${format_usd(obj.limit_usd)}"

    @admin.display(description="spent")
    def spent(self, obj: Budget) -> str:
        return _usd(self._live(obj).spent_nanos)

    @admin.display(description="reserved")
    def reserved(self, obj: Budget) -> str:
        return _usd(self._live(obj).reserved_nanos)

    @admin.display(description="remaining")
    def remaining(self, obj: Budget) -> str:
        return _usd(self._live(obj).remaining_nanos)

    @admin.display(description="status")
    def status(self, obj: Budget) -> str:
        return self._live(obj).status

    @admin.display(description="current period")
    def live_status(self, obj: Budget) -> str:
        if obj.pk is None:
            return "—"
        live = self._live(obj)
        if live.period_start is None:
            return format_html("<strong>{}</strong> (no current period)", live.status)
        end = f"{live.period_end:%Y-%m-%d %H:%M} UTC" if live.period_end else "open-ended"
        return format_html(
            "<strong>{}</strong>: {} spent + {} reserved of {} ({} remaining), {} UTC – {}",
            live.status,
            _usd(live.spent_nanos),
            _usd(live.reserved_nanos),
            _usd(live.limit_nanos),
            _usd(live.remaining_nanos),
            f"{live.period_start:%Y-%m-%d %H:%M}",
            end,
        )


# --- Reservations (read-only) -----------------------------------------------------------------


class ReadOnlyAdminMixin:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReservationHoldInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ReservationHold
    fields = ["period", "amount"]
    readonly_fields = fields
    extra = 0

    @admin.display(description="amount")
    def amount(self, obj: ReservationHold) -> str:
        return _usd(obj.amount_nanos)


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "organization", "agent", "model", "amount", "status", "created_at", "expires_at", "closed_at"]
    list_filter = ["status", "organization"]
    search_fields = ["id", "request_id", "model", "agent__name"]
    list_select_related = ["organization", "agent__project__organization"]
    date_hierarchy = "created_at"
    inlines = [ReservationHoldInline]

    @admin.display(description="amount", ordering="amount_nanos")
    def amount(self, obj: Reservation) -> str:
        return _usd(obj.amount_nanos)

    def changelist_view(self, request, extra_context=None):
        if redis_store.enabled():
            # This list is PostgreSQL's; the Redis store keeps its reservations in Redis (ADR 0008).
            try:
                held = redis_store.held_summary()
            except RedisError as exc:
                self.message_user(request, f"The Redis budget store is unreachable: {exc}", messages.WARNING)
            else:
                self.message_user(
                    request,
                    f"Budgets are enforced by the Redis store: {held.count} reservation(s) are held there "
                    f"({_usd(held.amount_nanos)} in all). This list shows those made while PostgreSQL enforced; "
                    "to release what Redis holds against a budget, use the budget's “reset period” action.",
                    messages.INFO,
                )
        return super().changelist_view(request, extra_context)


# --- Audit trail (read-only) ------------------------------------------------------------------


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "who", "action", "subject", "changes_summary"]
    list_filter = ["action", "organization"]
    search_fields = ["actor_label", "budget__name", "agent__name"]
    list_select_related = ["actor", "budget", "agent__project__organization"]
    date_hierarchy = "created_at"
    fields = ["created_at", "organization", "who", "action", "budget", "agent", "changes_pretty"]
    readonly_fields = fields

    @admin.display(description="who", ordering="actor_label")
    def who(self, obj: AuditEntry) -> str:
        return obj.actor_label or (obj.actor.get_username() if obj.actor else "system")

    @admin.display(description="budget / agent")
    def subject(self, obj: AuditEntry) -> str:
        if obj.budget_id:
            return f"budget: {obj.budget}"
        if obj.agent_id:
            return f"agent: {obj.agent}"
        deleted = obj.changes.get("name", {}) if isinstance(obj.changes, dict) else {}
        return f"deleted budget: {deleted.get('old')}" if isinstance(deleted, dict) and deleted.get("old") else "—"

    @admin.display(description="changes")
    def changes_summary(self, obj: AuditEntry) -> str:
        changes = obj.changes if isinstance(obj.changes, dict) else {}
        parts = []
        for field, value in changes.items():
            if isinstance(value, dict) and set(value) == {"old", "new"}:
                parts.append(f"{field}: {_short(value['old'])} → {_short(value['new'])}")
            else:
                parts.append(f"{field}: {_short(value)}")
        text = "; ".join(parts)
        return text if len(text) <= 300 else text[:299] + "…"

    @admin.display(description="changes")
    def changes_pretty(self, obj: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.changes, indent=2, sort_keys=True, ensure_ascii=False))


def _short(value) -> str:
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])
    if value is None:
        return "—"
    return str(value)


# --- Alerts -------------------------------------------------------------------------------------


class AlertDeliveryInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = AlertDelivery
    fields = ["channel", "target", "status", "attempts", "last_error", "next_attempt_at", "sent_at"]
    readonly_fields = fields
    extra = 0


@admin.register(BudgetAlert)
class BudgetAlertAdmin(admin.ModelAdmin):
    """Alerts are recorded by the system; operators acknowledge and resolve them (bulk actions, via
    :mod:`budgets.services.alerts`, audited). Acknowledged alerts stay listed with who and when."""

    list_display = ["fired_at", "severity", "kind", "message", "status", "handled"]
    list_filter = ["status", "severity", "kind", "organization"]
    search_fields = ["message", "budget__name", "agent__name", "project__name"]
    list_select_related = ["acknowledged_by", "resolved_by"]
    date_hierarchy = "fired_at"
    actions = ["acknowledge", "resolve"]
    inlines = [AlertDeliveryInline]
    fields = [
        "fired_at",
        "organization",
        "kind",
        "severity",
        "message",
        "budget",
        "period_start",
        "period_end",
        "threshold_percent",
        "spend",
        "limit",
        "projected",
        "projected_exhaustion_at",
        "project",
        "agent",
        "window",
        "window_start",
        "baseline",
        "cutoff",
        "status",
        "acknowledged_by",
        "acknowledged_at",
        "resolved_by",
        "resolved_at",
        "handled_by_label",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # Viewing and the bulk actions only: an alert is a record of what happened.
        return request.method in ("GET", "HEAD") or obj is None

    @admin.display(description="handled")
    def handled(self, obj: BudgetAlert) -> str:
        if obj.status == "resolved":
            return f"resolved by {obj.handled_by_label} at {obj.resolved_at:%Y-%m-%d %H:%M}"
        if obj.status == "acknowledged":
            return f"acknowledged by {obj.handled_by_label} at {obj.acknowledged_at:%Y-%m-%d %H:%M}"
        return "—"

    @admin.display(description="spend")
    def spend(self, obj: BudgetAlert) -> str:
        return _usd(obj.spend_nanos)

    @admin.display(description="limit")
    def limit(self, obj: BudgetAlert) -> str:
        return _usd(obj.limit_nanos)

    @admin.display(description="projected")
    def projected(self, obj: BudgetAlert) -> str:
        return _usd(obj.projected_nanos)

    @admin.display(description="baseline")
    def baseline(self, obj: BudgetAlert) -> str:
        return _usd(obj.baseline_nanos)

    @admin.display(description="cutoff")
    def cutoff(self, obj: BudgetAlert) -> str:
        return _usd(obj.cutoff_nanos)

    @admin.action(description="Acknowledge selected alerts")
    def acknowledge(self, request, queryset):
        changed = alerts_acknowledge(alerts=queryset, actor=request.user)
        self.message_user(request, f"Acknowledged {len(changed)} alert(s).", messages.SUCCESS)

    @admin.action(description="Resolve selected alerts")
    def resolve(self, request, queryset):
        changed = alerts_resolve(alerts=queryset, actor=request.user)
        self.message_user(request, f"Resolved {len(changed)} alert(s).", messages.SUCCESS)
