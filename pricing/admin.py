"""Operator admin for the price catalog.

Price rows are never edited in place once usage may point at them: saving a manual price goes
through ``pricing.services.price_set_manual`` (a new version effective now; the previous manual
version is closed). Synced (litellm) rows and closed versions are read-only; "Override" copies a
row into a new manual version for the operator to adjust.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from config.errors import ApplicationError
from pricing.calculator import format_usd
from pricing.models import ModelAlias, ModelPrice, PriceSource
from pricing.selectors import price_history
from pricing.services import MANUAL_FIELDS, price_override, price_retire_manual, price_set_manual

RATE_FIELDSET = (
    "input_usd_per_mtok",
    "output_usd_per_mtok",
    "cache_read_usd_per_mtok",
    "cache_write_usd_per_mtok",
    "reasoning_usd_per_mtok",
)
BATCH_FIELDSET = (
    "batch_input_usd_per_mtok",
    "batch_output_usd_per_mtok",
    "batch_cache_read_usd_per_mtok",
    "batch_cache_write_usd_per_mtok",
)
ALWAYS_READONLY = ("source", "effective_from", "effective_to", "created_at", "capabilities", "history_panel")


class CurrentFilter(admin.SimpleListFilter):
    title = "current"
    parameter_name = "current"

    def lookups(self, request, model_admin):
        return [("yes", "Current (open-ended)"), ("no", "Closed (history)")]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(effective_to__isnull=True)
        if self.value() == "no":
            return queryset.filter(effective_to__isnull=False)
        return queryset


def _rate(value) -> str:
    return "—" if value is None else format_usd(value)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    change_form_template = "admin/pricing/modelprice/change_form.html"
    list_display = [
        "model",
        "provider",
        "mode",
        "source",
        "input_per_mtok",
        "output_per_mtok",
        "cache_read_per_mtok",
        "effective_from",
        "effective_to",
        "is_current",
        "history_link",
    ]
    list_display_links = ["model"]
    search_fields = ["model"]
    list_filter = ["source", "mode", CurrentFilter, "provider"]
    ordering = ["model", "-effective_from", "-pk"]
    list_per_page = 100
    actions = ["override_selected", "retire_selected"]
    fieldsets = [
        (None, {"fields": ["model", "provider", "mode", "note"]}),
        ("Rates (USD per 1M tokens; empty = not published)", {"fields": list(RATE_FIELDSET)}),
        (
            "Batch rates (USD per 1M tokens; input and output together or neither)",
            {"fields": list(BATCH_FIELDSET)},
        ),
        (
            "Long-context tiers",
            {
                "fields": ["tiers"],
                "description": 'JSON list, e.g. [{"above_tokens": 200000, "input": "6", "output": "22.5"}]; '
                "rates are decimal strings in USD per 1M tokens, omitted ones fall back to the base rates.",
            },
        ),
        ("Model", {"fields": ["max_input_tokens", "max_output_tokens", "capabilities"]}),
        ("Validity", {"fields": ["source", "effective_from", "effective_to", "created_at"]}),
        ("Price history of this model", {"fields": ["history_panel"]}),
    ]

    # --- permissions: history is immutable ------------------------------------------------------

    def has_change_permission(self, request: HttpRequest, obj: ModelPrice | None = None) -> bool:
        if obj is not None and not (obj.source == PriceSource.MANUAL and obj.effective_to is None):
            return False  # synced rows follow the model map; closed versions are history
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: ModelPrice | None = None) -> bool:
        return False  # ledger rows point at prices; retire a manual price instead

    def get_readonly_fields(self, request: HttpRequest, obj: ModelPrice | None = None):
        if obj is None:
            return ALWAYS_READONLY
        return (*ALWAYS_READONLY, "model", "provider")

    # --- list columns ---------------------------------------------------------------------------

    @admin.display(description="input / 1M", ordering="input_usd_per_mtok")
    def input_per_mtok(self, obj: ModelPrice) -> str:
        return _rate(obj.input_usd_per_mtok)

    @admin.display(description="output / 1M", ordering="output_usd_per_mtok")
    def output_per_mtok(self, obj: ModelPrice) -> str:
        return _rate(obj.output_usd_per_mtok)

    @admin.display(description="cache read / 1M", ordering="cache_read_usd_per_mtok")
    def cache_read_per_mtok(self, obj: ModelPrice) -> str:
        return _rate(obj.cache_read_usd_per_mtok)

    @admin.display(description="current?", boolean=True, ordering="effective_to")
    def is_current(self, obj: ModelPrice) -> bool:
        return obj.effective_to is None

    @admin.display(description="history")
    def history_link(self, obj: ModelPrice) -> str:
        url = reverse("admin:pricing_modelprice_changelist")
        return format_html('<a href="{}?model__exact={}">history</a>', url, obj.model)

    @admin.display(description="versions")
    def history_panel(self, obj: ModelPrice | None) -> str:
        if obj is None or obj.pk is None:
            return "—"
        rows = format_html_join(
            "",
            '<tr{}><td><a href="{}">#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    mark_safe(' style="font-weight:bold"') if version.pk == obj.pk else "",  # the current row, bold
                    reverse("admin:pricing_modelprice_change", args=[version.pk]),
                    version.pk,
                    version.get_source_display(),
                    version.provider or "—",
                    f"{version.effective_from:%Y-%m-%d %H:%M}",
                    f"{version.effective_to:%Y-%m-%d %H:%M}" if version.effective_to else "current",
                    _rate(version.input_usd_per_mtok),
                    _rate(version.output_usd_per_mtok),
                    _rate(version.cache_read_usd_per_mtok),
                )
                for version in price_history(model=obj.model)
            ),
        )
        return format_html(
            "<table><thead><tr><th>price</th><th>source</th><th>provider</th><th>from</th><th>to</th>"
            "<th>input / 1M</th><th>output / 1M</th><th>cache read / 1M</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    # --- writes go through the services ---------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: ModelPrice, form, change: bool) -> None:
        if change and not form.has_changed():
            return
        created = price_set_manual(
            model=obj.model,
            provider=obj.provider,
            input_usd_per_mtok=obj.input_usd_per_mtok,
            output_usd_per_mtok=obj.output_usd_per_mtok,
            **{name: getattr(obj, name) for name in MANUAL_FIELDS if name not in RATE_FIELDSET[:2]},
        )
        # The admin redirects to / logs ``obj``: make it the new version, not the closed one.
        for model_field in ModelPrice._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(created, model_field.attname))
        obj._state.adding = False

    def get_urls(self):
        override = self.admin_site.admin_view(require_POST(self.override_view))
        return [
            path("<path:object_id>/override/", override, name="pricing_modelprice_override"),
            *super().get_urls(),
        ]

    def override_view(self, request: HttpRequest, object_id: str):
        if not self.has_add_permission(request):
            raise PermissionDenied
        price = get_object_or_404(ModelPrice, pk=object_id)
        try:
            created = price_override(price=price)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:pricing_modelprice_change", args=[price.pk]))
        self.message_user(
            request, f"Manual price #{created.pk} created from #{price.pk}; adjust it and save.", messages.SUCCESS
        )
        return HttpResponseRedirect(reverse("admin:pricing_modelprice_change", args=[created.pk]))

    @admin.action(description="Override: copy into a new manual price", permissions=["add"])
    def override_selected(self, request: HttpRequest, queryset: QuerySet):
        created = [price_override(price=price) for price in queryset.order_by("model", "pk")]
        self.message_user(request, f"Created {len(created)} manual price(s).", messages.SUCCESS)
        if len(created) == 1:
            return HttpResponseRedirect(reverse("admin:pricing_modelprice_change", args=[created[0].pk]))
        return None

    @admin.action(description="End the selected manual prices now (synced prices apply again)", permissions=["add"])
    def retire_selected(self, request: HttpRequest, queryset: QuerySet):
        manual = queryset.filter(source=PriceSource.MANUAL, effective_to__isnull=True)
        for price in manual:
            price_retire_manual(price=price)
        skipped = queryset.count() - len(manual)
        message = f"Ended {len(manual)} manual price(s)."
        if skipped:
            message += f" Skipped {skipped} that are not current manual prices."
        self.message_user(request, message, messages.SUCCESS if not skipped else messages.WARNING)


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    list_display = ["alias", "model", "created_at"]
    search_fields = ["alias", "model"]
    readonly_fields = ["created_at"]
