"""Writes to the price catalog: the litellm sync and manual (operator) prices.

A price row is never edited once usage may point at it. A new price closes the current version
(``effective_to = now``) and opens a new one (``effective_from = now``), so ledger rows keep the
exact price they were costed with.
"""

import datetime as dt
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import ValidationFailed
from pricing.calculator import tiers_from_json
from pricing.model_map import price_fields
from pricing.models import RATE_FIELDS, ModelPrice, PriceSource

logger = logging.getLogger(__name__)

# The first sync (and a model new to the catalog) is effective from here, so that usage backfilled
# from before the sync is priced; later price changes take effect at the moment of the sync.
INITIAL_EFFECTIVE_FROM = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_BULK_SIZE = 500
# What makes a new version: the rates and tiers. Mode, limits and capabilities are descriptive and
# are refreshed in place on the current version.
_PRICE_FIELDS = (*RATE_FIELDS, "provider", "tiers")
_METADATA_FIELDS = ("mode", "max_input_tokens", "max_output_tokens", "capabilities")


@dataclass
class SyncReport:
    """What one ``prices_sync`` run did (counts are map entries)."""

    created: int = 0  # models new to the catalog
    changed: int = 0  # models whose price changed: old version closed, new one opened
    unchanged: int = 0
    skipped: int = 0  # entries not priced per token (per image, per second, ...)
    metadata_updated: int = 0  # unchanged price, refreshed mode / limits / capabilities
    changed_models: list[str] = field(default_factory=list)
    effective_from: dt.datetime | None = None  # of the versions opened for changed models

    @property
    def total(self) -> int:
        return self.created + self.changed + self.unchanged + self.skipped


def load_litellm_model_map() -> Mapping[str, Mapping[str, Any]]:
    """litellm's bundled model map, read offline (never fetched from the network)."""
    # Must be set before litellm is imported, and must be the word True.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    # Imported here: it costs seconds and a lot of memory, which only the sync may pay (never a request).
    import litellm

    return litellm.model_cost


def prices_sync(*, now: dt.datetime | None = None, model_map: Mapping[str, Mapping] | None = None) -> SyncReport:
    """Bring the litellm rows of the catalog in line with litellm's bundled model map.

    New models get a row effective from ``INITIAL_EFFECTIVE_FROM``; a changed price closes the
    current litellm row at ``now`` and opens a new one from ``now``; unchanged prices write nothing.
    Models that left the map keep their rows. Manual rows are never touched. Safe to run twice (the
    second run finds nothing to do) and concurrently (the loser of a race retries once and then
    finds the winner's rows). ``model_map`` defaults to litellm's map (tests pass a small one).
    """
    now = now or timezone.now()
    if model_map is None:
        model_map = load_litellm_model_map()
    converted: dict[str, dict[str, Any]] = {}
    skipped = 0
    for model, entry in model_map.items():
        fields = price_fields(model, entry) if isinstance(entry, Mapping) else None
        if fields is None:
            skipped += 1
        else:
            converted[model] = fields
    try:
        return _apply(converted, skipped=skipped, now=now)
    except IntegrityError:
        # Another sync committed the same versions first: look again (now there is nothing to do).
        logger.warning("prices_sync raced another sync; retrying once")
        return _apply(converted, skipped=skipped, now=now)


@transaction.atomic
def _apply(converted: dict[str, dict[str, Any]], *, skipped: int, now: dt.datetime) -> SyncReport:
    report = SyncReport(skipped=skipped, effective_from=now)
    current: dict[str, list[ModelPrice]] = {}
    for row in ModelPrice.objects.filter(source=PriceSource.LITELLM, effective_to__isnull=True):
        current.setdefault(row.model, []).append(row)

    to_close: list[int] = []
    to_create: list[ModelPrice] = []
    to_refresh: list[ModelPrice] = []
    for model in sorted(converted):
        fields = converted[model]
        rows = current.get(model, [])
        same = [row for row in rows if _same_price(row, fields)]
        if rows and len(same) == len(rows) == 1:
            report.unchanged += 1
            row = rows[0]
            if any(getattr(row, name) != fields[name] for name in _METADATA_FIELDS):
                for name in _METADATA_FIELDS:
                    setattr(row, name, fields[name])
                to_refresh.append(row)
            continue
        if rows:
            if any(row.effective_from >= now for row in rows):
                raise ValueError(f"{model}: the current price starts at or after {now.isoformat()}")
            to_close.extend(row.pk for row in rows)
            report.changed += 1
            report.changed_models.append(model)
            effective_from = now
        else:
            report.created += 1
            effective_from = INITIAL_EFFECTIVE_FROM
        to_create.append(ModelPrice(**fields, source=PriceSource.LITELLM, effective_from=effective_from))

    for chunk in _chunks(to_close):
        ModelPrice.objects.filter(pk__in=chunk, effective_to__isnull=True).update(effective_to=now)
    ModelPrice.objects.bulk_create(to_create, batch_size=_BULK_SIZE)
    ModelPrice.objects.bulk_update(to_refresh, list(_METADATA_FIELDS), batch_size=_BULK_SIZE)
    report.metadata_updated = len(to_refresh)
    return report


def _same_price(row: ModelPrice, fields: Mapping[str, Any]) -> bool:
    for name in _PRICE_FIELDS:
        if name == "tiers":
            if tiers_from_json(row.tiers) != tiers_from_json(fields["tiers"]):
                return False
        elif getattr(row, name) != fields[name]:
            return False
    return True


def _chunks(items: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(items), _BULK_SIZE):
        yield items[start : start + _BULK_SIZE]


MANUAL_FIELDS = (
    "mode",
    *RATE_FIELDS,
    "tiers",
    "max_input_tokens",
    "max_output_tokens",
    "capabilities",
    "note",
)


@transaction.atomic
def price_set_manual(
    *,
    model: str,
    provider: str = "",
    input_usd_per_mtok: Decimal,
    output_usd_per_mtok: Decimal,
    now: dt.datetime | None = None,
    **values: Any,
) -> ModelPrice:
    """Make a new manual price for ``model`` (and ``provider``) effective ``now``.

    The current manual version of the same model and provider, if any, is closed at ``now``; it is
    never edited, since ledger rows may point at it. Manual prices win over synced ones. ``values``
    takes the other ModelPrice rate / tier / descriptive fields (``MANUAL_FIELDS``); omitted ones
    are empty. Raises ValidationFailed (field errors) for invalid values, writing nothing.
    """
    unknown = set(values) - set(MANUAL_FIELDS)
    if unknown:
        raise TypeError(f"unknown price fields: {', '.join(sorted(unknown))}")
    now = now or timezone.now()
    model = model.strip()
    provider = provider.strip()
    price = ModelPrice(
        model=model,
        provider=provider,
        source=PriceSource.MANUAL,
        input_usd_per_mtok=input_usd_per_mtok,
        output_usd_per_mtok=output_usd_per_mtok,
        effective_from=now,
        **values,
    )
    try:
        # The "one current version" constraint is checked after the old version is closed.
        price.full_clean(validate_constraints=False)
    except DjangoValidationError as exc:
        raise ValidationFailed(fields=exc.message_dict) from exc

    previous = list(
        ModelPrice.objects.select_for_update().filter(
            model=model, provider=provider, source=PriceSource.MANUAL, effective_to__isnull=True
        )
    )
    for row in previous:
        if row.effective_from >= now:
            raise ValidationFailed(
                f"The current manual price of {model} starts at {row.effective_from.isoformat()}; "
                "a new version must start after it.",
                fields={"effective_from": ["Must be after the start of the current manual price."]},
            )
    ModelPrice.objects.filter(pk__in=[row.pk for row in previous]).update(effective_to=now)
    try:
        price.validate_constraints()
    except DjangoValidationError as exc:
        raise ValidationFailed(fields=exc.message_dict) from exc
    price.save()
    return price


def price_override(*, price: ModelPrice, now: dt.datetime | None = None) -> ModelPrice:
    """Copy ``price`` (typically a synced litellm row) into a new manual version effective ``now``,
    for an operator to adjust. The copied row itself is left as it is."""
    values = {name: getattr(price, name) for name in MANUAL_FIELDS if name not in RATE_FIELDS[:2]}
    values["note"] = f"Copied from {price.get_source_display()} price #{price.pk}"[:255]
    return price_set_manual(
        model=price.model,
        provider=price.provider,
        input_usd_per_mtok=price.input_usd_per_mtok,
        output_usd_per_mtok=price.output_usd_per_mtok,
        now=now,
        **values,
    )


@transaction.atomic
def price_retire_manual(*, price: ModelPrice, now: dt.datetime | None = None) -> ModelPrice:
    """End a current manual price at ``now`` (the synced price applies again). Idempotent."""
    now = now or timezone.now()
    price = ModelPrice.objects.select_for_update().get(pk=price.pk)
    if price.source != PriceSource.MANUAL:
        raise ValidationFailed("Only manual prices can be retired; synced prices follow the model map.")
    if price.effective_to is None:
        if price.effective_from >= now:
            raise ValidationFailed("This price has not started yet.")
        price.effective_to = now
        price.save(update_fields=["effective_to"])
    return price
