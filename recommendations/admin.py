"""Operators: recommendations (accept / reject with a reason / mark implemented / measure realized
savings) and the quality tiers that say which models may replace which."""

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.template.response import TemplateResponse

from config.errors import ApplicationError
from pricing.calculator import usd_text
from recommendations.models import ModelTier, Recommendation, RecommendationStatus
from recommendations.services.lifecycle import (
    recommendation_accept,
    recommendation_implement,
    recommendation_reject,
)
from recommendations.services.realized import recommendation_verify


class RejectForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=2000)


class RecommendationAdminForm(forms.ModelForm):
    """The change form edits only ``status_reason``; a rejected row must keep one (a database rule,
    which would otherwise surface as a server error)."""

    class Meta:
        model = Recommendation
        fields = ["status_reason"]

    def clean_status_reason(self) -> str:
        reason = (self.cleaned_data.get("status_reason") or "").strip()
        if self.instance.status == RecommendationStatus.REJECTED and not reason:
            raise forms.ValidationError("A rejected recommendation needs a reason.")
        return reason


@admin.register(Recommendation)
class RecommendationAdmin(admin.ModelAdmin):
    form = RecommendationAdminForm
    list_display = [
        "title",
        "kind",
        "scope",
        "monthly_saving",
        "confidence",
        "effort",
        "priority_score",
        "status",
        "realized",
    ]
    list_filter = ["status", "kind", "confidence", "effort", "organization"]
    search_fields = ["title", "model", "target", "agent__name", "project__slug"]
    list_select_related = ["organization", "project", "agent"]
    actions = ["accept", "reject", "mark_implemented", "measure_realized"]
    readonly_fields = [f.name for f in Recommendation._meta.fields if f.name not in ("status_reason",)]
    fieldsets = [
        (None, {"fields": ["title", "kind", "organization", "project", "agent", "status", "status_reason"]}),
        (
            "Estimate",
            {
                "fields": [
                    "explanation",
                    "estimated_monthly_saving_usd",
                    "confidence",
                    "effort",
                    "priority_score",
                    "operation",
                    "model",
                    "provider",
                    "target",
                    "window_start",
                    "window_end",
                    "baseline_requests",
                    "baseline_cost_usd",
                    "evidence",
                ]
            },
        ),
        (
            "Lifecycle",
            {
                "fields": [
                    "status_changed_at",
                    "status_changed_by",
                    "status_changed_by_label",
                    "implemented_at",
                    "realized_monthly_saving_usd",
                    "realized_measured_at",
                    "realized_evidence",
                    "created_at",
                    "refreshed_at",
                    "fingerprint",
                ]
            },
        ),
    ]

    def has_add_permission(self, request) -> bool:
        return False  # generators write recommendations

    def has_delete_permission(self, request, obj=None) -> bool:
        # A deleted rejection would be suggested again: recommendations are kept, their status says why.
        return False

    @admin.display(description="scope")
    def scope(self, obj: Recommendation) -> str:
        return obj.scope_label

    @admin.display(description="saving / month", ordering="estimated_monthly_saving_usd")
    def monthly_saving(self, obj: Recommendation) -> str:
        return usd_text(obj.estimated_monthly_saving_usd)

    @admin.display(description="realized / month", ordering="realized_monthly_saving_usd")
    def realized(self, obj: Recommendation) -> str:
        return usd_text(obj.realized_monthly_saving_usd) if obj.realized_monthly_saving_usd is not None else "—"

    def _each(self, request, queryset: QuerySet, verb: str, move) -> None:
        done, refused = 0, []
        for rec in queryset:
            try:
                move(rec)
            except ApplicationError as error:
                refused.append(f"{rec.pk}: {error.message}")
            else:
                done += 1
        if done:
            self.message_user(request, f"{verb} {done} recommendation(s).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)

    @admin.action(description="Accept")
    def accept(self, request, queryset) -> None:
        self._each(
            request, queryset, "Accepted", lambda rec: recommendation_accept(recommendation=rec, actor=request.user)
        )

    @admin.action(description="Mark implemented (realized savings are measured from now)")
    def mark_implemented(self, request, queryset) -> None:
        self._each(
            request,
            queryset,
            "Marked implemented",
            lambda rec: recommendation_implement(recommendation=rec, actor=request.user),
        )

    @admin.action(description="Measure realized savings")
    def measure_realized(self, request, queryset) -> None:
        self._each(request, queryset, "Measured", lambda rec: recommendation_verify(recommendation=rec))

    @admin.action(description="Reject (with a reason)")
    def reject(self, request, queryset):
        """An intermediate page asks for the reason; its POST (with ``apply``) rejects."""
        form = RejectForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            reason = form.cleaned_data["reason"]
            self._each(
                request,
                queryset,
                "Rejected",
                lambda rec: recommendation_reject(recommendation=rec, reason=reason, actor=request.user),
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Reject recommendations",
            "opts": self.model._meta,
            "form": form,
            "recommendations": queryset.exclude(status=RecommendationStatus.REJECTED),
            # The rows acted on, not the checked boxes: with "select all N" the queryset is every match.
            "selected": list(queryset.values_list("pk", flat=True)),
        }
        return TemplateResponse(request, "admin/recommendations/recommendation/reject.html", context)


@admin.register(ModelTier)
class ModelTierAdmin(admin.ModelAdmin):
    list_display = ["model", "family", "note"]
    list_editable = ["family", "note"]
    list_filter = ["family"]
    search_fields = ["model", "family"]
