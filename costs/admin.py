"""Operator admin for the hierarchy, API keys and the (read-only) usage ledger.

Writes that carry rules go through the services: key creation and revocation
(``costs.services.api_keys``), pausing and resuming agents (``costs.services.hierarchy``).
"""

import zoneinfo

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Count
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from costs.models import Agent, AgentStatus, ApiKey, Organization, Project, Sprint, UsageRecord
from costs.services.api_keys import api_key_create, api_key_revoke
from costs.services.hierarchy import agent_set_status
from pricing.calculator import format_usd

# --- Organization -----------------------------------------------------------------------------


class OrganizationForm(forms.ModelForm):
    timezone = forms.ChoiceField(
        choices=[(name, name) for name in sorted(zoneinfo.available_timezones())],
        initial="UTC",
        help_text="Sprint dates and calendar budget periods are read in this time zone.",
    )
    alert_webhook_url = forms.URLField(
        max_length=500,
        required=False,
        assume_scheme="https",
        label="Alert webhook URL",
        help_text='Optional Slack-compatible incoming webhook: each alert is POSTed as {"text": ...}.',
    )

    class Meta:
        model = Organization
        fields = ["name", "slug", "timezone", "alert_emails", "alert_webhook_url"]
        help_texts = {
            "alert_emails": "Who receives every budget alert of this organization (comma-separated e-mail addresses).",
            "alert_webhook_url": 'Optional Slack-compatible incoming webhook: each alert is POSTed as {"text": ...}.',
        }


class ProjectInline(admin.TabularInline):
    model = Project
    fields = ["name", "slug"]
    extra = 0
    show_change_link = True


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    form = OrganizationForm
    list_display = ["name", "slug", "timezone", "project_count", "created_at"]
    search_fields = ["name", "slug"]
    list_filter = ["timezone"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at"]
    inlines = [ProjectInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_project_count=Count("projects"))

    @admin.display(description="projects", ordering="_project_count")
    def project_count(self, obj: Organization) -> int:
        return obj._project_count


# --- Project, sprints, agents -----------------------------------------------------------------


class FixedParentMixin:
    """The parent of a project, sprint or agent is set once: ledger rows carry both the child and
    its parent, so moving a child would leave rows attributed to two places at once."""

    parent_field: str

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, self.parent_field] if obj is not None else fields


class SprintInlineFormSet(BaseInlineFormSet):
    """Sprint.clean compares each sprint with the *stored* sprints of its project; this also catches
    overlaps among the rows of one submission (two new sprints, or a new project's first sprints)."""

    def clean(self) -> None:
        super().clean()
        ranges = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or not data.get("start_date") or not data.get("end_date"):
                continue
            ranges.append((data["start_date"], data["end_date"], data.get("slug") or data.get("name") or "?"))
        ranges.sort()
        latest_end, latest_name = None, None
        for start, end, name in ranges:
            if latest_end is not None and start <= latest_end:
                raise ValidationError(
                    f"Sprints {latest_name!r} and {name!r} overlap; sprints of one project may not overlap."
                )
            if latest_end is None or end > latest_end:
                latest_end, latest_name = end, name


class SprintInline(admin.TabularInline):
    model = Sprint
    formset = SprintInlineFormSet
    fields = ["name", "slug", "start_date", "end_date"]
    prepopulated_fields = {"slug": ["name"]}
    extra = 0
    show_change_link = True


class AgentInline(admin.TabularInline):
    model = Agent
    fields = ["name", "status", "model_override", "description"]
    # Pause / resume go through agent_set_status (Agent admin actions), not a raw field edit.
    readonly_fields = ["status"]
    extra = 0
    show_change_link = True


@admin.register(Project)
class ProjectAdmin(FixedParentMixin, admin.ModelAdmin):
    parent_field = "organization"
    list_display = ["name", "slug", "organization", "sprint_count", "agent_count", "created_at"]
    list_filter = ["organization"]
    search_fields = ["name", "slug", "organization__slug", "organization__name"]
    list_select_related = ["organization"]
    autocomplete_fields = ["organization"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at"]
    inlines = [SprintInline, AgentInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _sprint_count=Count("sprints", distinct=True),
                _agent_count=Count("agents", distinct=True),
            )
        )

    @admin.display(description="sprints", ordering="_sprint_count")
    def sprint_count(self, obj: Project) -> int:
        return obj._sprint_count

    @admin.display(description="agents", ordering="_agent_count")
    def agent_count(self, obj: Project) -> int:
        return obj._agent_count


@admin.register(Sprint)
class SprintAdmin(FixedParentMixin, admin.ModelAdmin):
    parent_field = "project"
    list_display = ["name", "slug", "project", "start_date", "end_date"]
    list_filter = ["project__organization", "project"]
    search_fields = ["name", "slug", "project__slug", "project__name"]
    list_select_related = ["project__organization"]
    autocomplete_fields = ["project"]
    prepopulated_fields = {"slug": ["name"]}
    date_hierarchy = "start_date"
    readonly_fields = ["created_at"]


@admin.register(Agent)
class AgentAdmin(FixedParentMixin, admin.ModelAdmin):
    parent_field = "project"
    list_display = ["name", "project", "organization", "status", "model_override", "created_at"]
    list_filter = ["status", "project__organization", "project"]
    search_fields = ["name", "project__slug", "project__name", "model_override"]
    list_select_related = ["project__organization"]
    autocomplete_fields = ["project"]
    fields = ["project", "name", "status", "model_override", "description", "created_at"]
    # Status changes go through agent_set_status: the actions below and the change page buttons.
    readonly_fields = ["status", "created_at"]
    actions = ["pause_agents", "resume_agents"]

    @admin.display(description="organization", ordering="project__organization__name")
    def organization(self, obj: Agent) -> Organization:
        return obj.project.organization

    @admin.action(description="Pause selected agents", permissions=["change"])
    def pause_agents(self, request, queryset) -> None:
        self._set_status(request, queryset, AgentStatus.PAUSED, "Paused")

    @admin.action(description="Resume selected agents", permissions=["change"])
    def resume_agents(self, request, queryset) -> None:
        self._set_status(request, queryset, AgentStatus.ACTIVE, "Resumed")

    def _set_status(self, request, queryset, status: str, verb: str) -> None:
        changed = 0
        for agent in queryset:
            if agent_set_status(agent=agent, status=status):
                changed += 1
                self._log_status(request, agent, verb)
        unchanged = len(queryset) - changed
        note = f" ({unchanged} already {AgentStatus(status).label.lower()})" if unchanged else ""
        self.message_user(request, f"{verb} {changed} agent(s){note}.", messages.SUCCESS)

    def _log_status(self, request, agent: Agent, verb: str) -> None:
        # Who paused or resumed which agent, and when: the admin's own history (LogEntry), shown on
        # the agent's History page. (costs cannot import budgets, whose AuditEntry records pauses
        # made by budget enforcement.)
        self.log_change(request, agent, f"{verb} the agent (status: {agent.status}).")

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        own = [
            path(
                "<path:object_id>/pause/",
                self.admin_site.admin_view(self.status_view),
                {"status": AgentStatus.PAUSED},
                name="{}_{}_pause".format(*info),
            ),
            path(
                "<path:object_id>/resume/",
                self.admin_site.admin_view(self.status_view),
                {"status": AgentStatus.ACTIVE},
                name="{}_{}_resume".format(*info),
            ),
        ]
        return own + super().get_urls()

    @method_decorator(require_POST)
    def status_view(self, request, object_id: str, status: str):
        """POST-only target of the "Pause agent" / "Resume agent" buttons on the change page."""
        agent = get_object_or_404(Agent, pk=object_id)
        if not self.has_change_permission(request, agent):
            raise PermissionDenied
        if agent_set_status(agent=agent, status=status):
            self._log_status(request, agent, "Paused" if status == AgentStatus.PAUSED else "Resumed")
            self.message_user(request, f"Agent {agent} is now {agent.get_status_display().lower()}.", messages.SUCCESS)
        else:
            self.message_user(request, f"Agent {agent} was already {agent.get_status_display().lower()}.")
        return HttpResponseRedirect(reverse("admin:costs_agent_change", args=[agent.pk]))


# --- API keys ---------------------------------------------------------------------------------


class ApiKeyAddForm(forms.ModelForm):
    """Only what a new key needs; the secret, its hash and prefix are made by api_key_create."""

    class Meta:
        model = ApiKey
        fields = ["name", "organization", "project", "agent"]
        help_texts = {
            "project": "Optional: narrow the key to one project.",
            "agent": "Optional: narrow the key to one agent (its project is implied).",
        }

    def clean(self):
        data = super().clean()
        organization, project, agent = data.get("organization"), data.get("project"), data.get("agent")
        # Mirrors api_key_create's checks so the operator sees field errors instead of a server error.
        if agent is not None:
            if project is None:
                data["project"] = project = agent.project
            elif agent.project_id != project.pk:
                self.add_error("agent", "The agent does not belong to this project.")
        if organization is not None and project is not None and project.organization_id != organization.pk:
            self.add_error("project", "The project does not belong to this organization.")
        return data


class RevokedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    add_form = ApiKeyAddForm
    list_display = [
        "name",
        "prefix_display",
        "scope",
        "organization",
        "project",
        "agent",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = [RevokedFilter, "organization"]
    search_fields = ["name", "prefix", "organization__slug", "project__slug", "agent__name"]
    list_select_related = ["organization", "project__organization", "agent__project__organization"]
    autocomplete_fields = ["organization", "project", "agent"]
    # The secret is never stored and the hash is never shown; a key's scope is fixed once created.
    fields = [
        "name",
        "prefix_display",
        "scope",
        "organization",
        "project",
        "agent",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
    ]
    readonly_fields = [
        "prefix_display",
        "scope",
        "organization",
        "project",
        "agent",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke_keys"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return list(self.add_form.Meta.fields) if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)  # only the name is editable
            return
        api_key, secret = api_key_create(
            organization=form.cleaned_data["organization"],
            project=form.cleaned_data.get("project"),
            agent=form.cleaned_data.get("agent"),
            name=form.cleaned_data["name"],
            created_by=request.user,
        )
        # The admin goes on with `obj` (history entry, redirect): make it the stored row.
        obj.pk = api_key.pk
        obj.refresh_from_db()
        obj._state.adding = False
        # Shown once: the message is consumed by the next page; the secret exists nowhere else.
        messages.warning(
            request,
            format_html(
                "New {} API key “{}”: <code>{}</code> — copy it now. It is stored hashed and will not be shown again.",
                api_key.scope,
                api_key.name,
                secret,
            ),
        )

    @admin.display(description="prefix", ordering="prefix")
    def prefix_display(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(description="scope")
    def scope(self, obj: ApiKey) -> str:
        return obj.scope

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request, queryset) -> None:
        active = list(queryset.filter(revoked_at__isnull=True))
        for api_key in active:
            api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {len(active)} API key(s).", messages.SUCCESS)


# --- Usage ledger (read-only) -----------------------------------------------------------------


class EstimatedCountPaginator(Paginator):
    """The unfiltered ledger is millions of rows: on PostgreSQL take the planner's row estimate for
    the page count instead of a full COUNT(*). Filtered lists are counted exactly."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if getattr(queryset, "query", None) is not None and not queryset.query.where:
            connection = connections[queryset.db]
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                        [queryset.model._meta.db_table],
                    )
                    row = cursor.fetchone()
                # reltuples is -1 (never analyzed) or stale on small tables: count those exactly.
                if row and row[0] > 100_000:
                    return int(row[0])
        return super().count


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "occurred_at",
        "request_id",
        "organization_slug",
        "project_slug",
        "agent_name",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "source",
        "status",
        "prompt_hash",
    ]
    # Model names come from a DISTINCT over the ledger; later rollup tables can serve it cheaper.
    list_filter = ["cost_source", "status", "operation", "organization", "project", "model"]
    search_fields = ["request_id", "model", "end_user"]
    date_hierarchy = "occurred_at"
    list_select_related = ["organization", "project", "agent"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        # Links from recommendations and reports filter the ledger to one agent (there are too many
        # agents for a sidebar filter, which is what the admin otherwise requires for a related lookup).
        return lookup == "agent__id__exact" or super().lookup_allowed(lookup, value, request)

    fieldsets = [
        ("Request", {"fields": ["request_id", "occurred_at", "received_at", "status", "operation", "latency_ms"]}),
        ("Attribution", {"fields": ["organization", "project", "sprint", "agent", "end_user", "tags"]}),
        ("Model", {"fields": ["model", "provider", "is_batch", "prompt_hash"]}),
        (
            "Tokens",
            {
                "fields": [
                    "prompt_tokens",
                    "cached_tokens",
                    "cache_creation_tokens",
                    "completion_tokens",
                    "reasoning_tokens",
                ]
            },
        ),
        (
            "Cost (USD)",
            {
                "fields": [
                    "cost_usd",
                    "cost_source",
                    "price",
                    "input_cost_usd",
                    "cached_input_cost_usd",
                    "cache_creation_cost_usd",
                    "output_cost_usd",
                    "computed_cost_usd",
                    "provider_cost_usd",
                    "reservation_id",
                ]
            },
        ),
    ]
    readonly_fields = [field.name for field in UsageRecord._meta.fields if field.name != "id"]

    # The ledger is append-only: rows come from ingestion only, a correction is a new row.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="organization", ordering="organization__slug")
    def organization_slug(self, obj: UsageRecord) -> str:
        return obj.organization.slug

    @admin.display(description="project", ordering="project__slug")
    def project_slug(self, obj: UsageRecord) -> str:
        return obj.project.slug

    @admin.display(description="agent", ordering="agent__name")
    def agent_name(self, obj: UsageRecord) -> str:
        return obj.agent.name

    @admin.display(description="cost source", ordering="cost_source")
    def source(self, obj: UsageRecord) -> str:
        return obj.cost_source  # the short code: the labels are long for a list column

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, obj: UsageRecord) -> str:
        return format_usd(obj.cost_usd) if obj.cost_usd is not None else "—"
