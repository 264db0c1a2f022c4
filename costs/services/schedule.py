"""Mirror the beat schedule defined in code (``config/beat.py``) into django-celery-beat's tables, so
operators see every job under *Periodic tasks* in the admin — and can pause one — from the first
deploy on, before any beat process has started.

Code owns *what* runs and *when*: the task path, schedule, arguments and options are written from
``BEAT_SCHEDULE`` on every sync. The operator owns ``enabled``: a job paused in the admin stays
paused across deploys. A job removed from code is disabled (kept, with its run history), never
deleted.

How this agrees with beat itself: at start, ``DatabaseScheduler.setup_schedule`` also writes
``CELERY_BEAT_SCHEDULE`` into the same rows (``update_or_create`` by name). Its field values are the
ones computed here (same schedule models, same JSON for args / kwargs / headers), and it leaves
``enabled`` alone too, so beat starting after a sync changes nothing and never un-pauses a job
(``tests/costs/test_beat_schedule.py`` proves both). What only this sync does: show the jobs before
beat runs, and disable jobs that left the code (beat would keep running them from the database).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import schedules
from django.db import transaction
from django.db.models import Q
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry
from kombu.utils.json import dumps

# Our jobs are named "<app>-<job>"; a periodic task with one of these prefixes that is no longer in
# code is ours to disable. Other rows (celery.backend_cleanup, an operator's own jobs) are left alone.
OWNED_PREFIXES = ("budgets-", "costs-", "pricing-", "recommendations-")
_SCHEDULE_FIELDS = tuple(model_field for _, _, model_field in ModelEntry.model_schedules)


@dataclass
class ScheduleSyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@transaction.atomic
def beat_schedule_sync(*, schedule: Mapping[str, Mapping[str, Any]] | None = None) -> ScheduleSyncReport:
    """Create or update one ``PeriodicTask`` per entry of ``schedule`` (default: ``BEAT_SCHEDULE``),
    by name, and disable our tasks that are not in it. Idempotent: a second run writes nothing.
    An entry whose name has none of :data:`OWNED_PREFIXES` raises ``ValueError`` (once removed from
    code, it could not be recognised as ours and disabled)."""
    if schedule is None:
        from config.beat import BEAT_SCHEDULE

        schedule = BEAT_SCHEDULE
    report = ScheduleSyncReport()
    for name, entry in schedule.items():
        if not name.startswith(OWNED_PREFIXES):
            raise ValueError(f"Beat entry {name!r} must be named with one of the prefixes {', '.join(OWNED_PREFIXES)}")
        wanted = _task_fields(entry)
        # get_or_create: two deploy hosts syncing at once end with one row (the loser reads it back).
        task, created = PeriodicTask.objects.get_or_create(name=name, defaults=wanted)
        if created:
            report.created.append(name)
            continue
        changed = [attname for attname, value in _comparable(wanted).items() if getattr(task, attname) != value]
        if not changed:
            report.unchanged.append(name)
            continue
        for attname, value in wanted.items():
            setattr(task, attname, value)
        task.save()  # save(), not update(): its signal tells a running beat to reload the schedule
        report.updated.append(name)

    ours = Q()
    for prefix in OWNED_PREFIXES:
        ours |= Q(name__startswith=prefix)
    for task in PeriodicTask.objects.filter(ours, enabled=True).exclude(name__in=list(schedule)).order_by("name"):
        task.enabled = False
        task.save()
        report.disabled.append(task.name)
    return report


def _task_fields(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The PeriodicTask fields of one beat entry, as django-celery-beat's own ``ModelEntry`` sets them
    at beat start (``_unpack_fields``), so the two writers agree to the byte. The schedule row is
    reused when an equal one exists; a new one is saved only when needed (a sync that changes nothing
    writes nothing)."""
    options = dict(entry.get("options") or {})
    fields: dict[str, Any] = dict.fromkeys(_SCHEDULE_FIELDS)
    model_field, row = _schedule_row(entry["schedule"])
    fields[model_field] = row
    fields.update(
        task=entry["task"],
        args=dumps(list(entry.get("args") or [])),
        kwargs=dumps(dict(entry.get("kwargs") or {})),
        queue=options.get("queue"),
        exchange=options.get("exchange"),
        routing_key=options.get("routing_key"),
        priority=options.get("priority"),
        headers=dumps(options.get("headers") or {}),
        expire_seconds=options.get("expire_seconds"),
    )
    return fields


def _schedule_row(schedule: Any) -> tuple[str, Any]:
    """(field name, schedule row): an existing equal row, else a new one, saved."""
    schedule = schedules.maybe_schedule(schedule)  # a number or timedelta means an interval, as in beat
    for schedule_type, model_type, model_field in ModelEntry.model_schedules:
        if isinstance(schedule, schedule_type):
            row = model_type.from_schedule(schedule)
            if row.pk is None:
                row.save()
            return model_field, row
    raise ValueError(f"Cannot store beat schedule {schedule!r} in django-celery-beat")


def _comparable(wanted: dict[str, Any]) -> dict[str, Any]:
    """Foreign keys compared by id (the instance on a loaded task is a different object)."""
    return {
        (f"{name}_id" if name in _SCHEDULE_FIELDS else name): (
            (value.pk if value is not None else None) if name in _SCHEDULE_FIELDS else value
        )
        for name, value in wanted.items()
    }
