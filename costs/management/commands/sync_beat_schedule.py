"""Mirror the beat schedule in code (config/beat.py) into django-celery-beat's periodic tasks.

    python manage.py sync_beat_schedule      # on every deploy, after migrate; safe to repeat

Creates or updates one periodic task per entry (a job an operator paused in the admin stays paused)
and disables our tasks that left the code. See costs.services.schedule.
"""

from django.core.management.base import BaseCommand

from costs.services.schedule import beat_schedule_sync


class Command(BaseCommand):
    help = "Create / update the admin's periodic tasks from config/beat.py (keeps pauses; disables removed jobs)."

    def handle(self, *args, **options) -> None:
        report = beat_schedule_sync()
        for label, names in (("created", report.created), ("updated", report.updated), ("disabled", report.disabled)):
            for name in names:
                self.stdout.write(f"{label}: {name}")
        self.stdout.write(
            f"{len(report.created)} created, {len(report.updated)} updated, {len(report.disabled)} disabled, "
            f"{len(report.unchanged)} unchanged."
        )
