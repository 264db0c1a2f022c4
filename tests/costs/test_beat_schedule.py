"""``manage.py sync_beat_schedule``: the admin's periodic tasks mirror config/beat.py; pauses survive."""

import importlib
from io import StringIO

import pytest
from celery.schedules import crontab
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from config.beat import BEAT_SCHEDULE
from config.celery import app
from costs.services.schedule import beat_schedule_sync

pytestmark = pytest.mark.django_db


def sync() -> str:
    out = StringIO()
    call_command("sync_beat_schedule", stdout=out)
    return out.getvalue()


def tasks() -> dict[str, tuple]:
    return {
        t.name: (t.task, t.crontab.minute, t.crontab.hour, str(t.crontab.timezone), t.enabled, t.args, t.kwargs)
        for t in PeriodicTask.objects.select_related("crontab")
    }


def test_every_code_entry_becomes_an_enabled_periodic_task_and_a_second_run_changes_nothing():
    first = sync()

    assert tasks() == {
        name: (
            entry["task"],
            entry["schedule"]._orig_minute,
            entry["schedule"]._orig_hour,
            "UTC",
            True,
            "[]",
            "{}",
        )
        for name, entry in BEAT_SCHEDULE.items()
    }
    assert tasks()["costs-refresh-rollups"] == ("costs.tasks.refresh_rollups", "1-59/5", "*", "UTC", True, "[]", "{}")
    assert first.splitlines()[-1] == f"{len(BEAT_SCHEDULE)} created, 0 updated, 0 disabled, 0 unchanged."
    changed = {t.name: t.date_changed for t in PeriodicTask.objects.all()}
    crontabs = CrontabSchedule.objects.count()

    second = sync()

    assert second == f"0 created, 0 updated, 0 disabled, {len(BEAT_SCHEDULE)} unchanged.\n"
    assert {t.name: t.date_changed for t in PeriodicTask.objects.all()} == changed  # not even re-saved
    assert CrontabSchedule.objects.count() == crontabs


def test_every_entry_names_a_registered_task():
    for name, entry in BEAT_SCHEDULE.items():
        module, func = entry["task"].rsplit(".", 1)
        assert getattr(importlib.import_module(module), func).name == entry["task"], name


def test_a_task_paused_in_the_admin_stays_paused():
    sync()
    PeriodicTask.objects.filter(name="costs-refresh-rollups").update(enabled=False)

    report = beat_schedule_sync()

    assert report.updated == [] and report.created == []
    assert PeriodicTask.objects.get(name="costs-refresh-rollups").enabled is False


def test_a_changed_schedule_or_task_path_is_updated_and_a_pause_is_kept():
    sync()
    PeriodicTask.objects.filter(name="costs-refresh-rollups").update(enabled=False)
    schedule = dict(BEAT_SCHEDULE)
    schedule["costs-refresh-rollups"] = {"task": "costs.tasks.renamed", "schedule": crontab(minute="*/10", hour="3")}

    report = beat_schedule_sync(schedule=schedule)

    assert report.updated == ["costs-refresh-rollups"] and report.created == report.disabled == []
    assert tasks()["costs-refresh-rollups"] == ("costs.tasks.renamed", "*/10", "3", "UTC", False, "[]", "{}")
    assert beat_schedule_sync(schedule=schedule).updated == []


def test_a_task_removed_from_code_is_disabled_not_deleted_and_foreign_tasks_are_left_alone():
    sync()
    foreign = PeriodicTask.objects.create(
        name="celery.backend_cleanup", task="celery.backend_cleanup", crontab=CrontabSchedule.objects.first()
    )
    schedule = {name: entry for name, entry in BEAT_SCHEDULE.items() if name != "budgets-forecast-spend"}

    report = beat_schedule_sync(schedule=schedule)

    assert report.disabled == ["budgets-forecast-spend"]
    assert PeriodicTask.objects.get(name="budgets-forecast-spend").enabled is False
    foreign.refresh_from_db()
    assert foreign.enabled is True
    # Once disabled it is not reported again; putting it back in code does not un-pause it either.
    assert beat_schedule_sync(schedule=schedule).disabled == []
    assert beat_schedule_sync().updated == []
    assert PeriodicTask.objects.get(name="budgets-forecast-spend").enabled is False


def test_an_entry_without_one_of_our_prefixes_is_refused():
    with pytest.raises(ValueError, match="prefixes"):
        beat_schedule_sync(schedule={"nightly": {"task": "costs.tasks.refresh_rollups", "schedule": crontab()}})
    assert not PeriodicTask.objects.exists()


# Beat manages its own connection (closes and commits it), so this one runs outside a test transaction.
@pytest.mark.django_db(transaction=True)
def test_beat_starting_after_a_sync_agrees_with_it_and_never_unpauses_a_task():
    """django-celery-beat's DatabaseScheduler writes CELERY_BEAT_SCHEDULE into the same rows when beat
    starts: it must leave a paused task paused and write the values the sync wrote."""
    sync()
    PeriodicTask.objects.filter(name="costs-refresh-rollups").update(enabled=False)

    assert set(app.conf.beat_schedule) == set(BEAT_SCHEDULE)  # what beat writes at start
    scheduler = DatabaseScheduler(app=app, lazy=True)
    scheduler.setup_schedule()

    assert PeriodicTask.objects.get(name="costs-refresh-rollups").enabled is False
    assert "costs-refresh-rollups" not in scheduler.schedule  # beat will not run it
    assert "budgets-forecast-spend" in scheduler.schedule
    report = beat_schedule_sync()
    assert (report.created, report.updated, report.disabled) == ([], [], [])
