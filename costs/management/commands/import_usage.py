"""Backfill the ledger from usage exported elsewhere: ``manage.py import_usage FILE --organization SLUG``."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from costs.models import Organization, Project
from costs.services.usage_import import usage_file_rows, usage_import

_SHOWN_INVALID = 100


class Command(BaseCommand):
    help = (
        "Import usage from a JSONL or CSV file (- for standard input) into an organization's ledger, through the "
        "same validation, pricing, budget settlement and request-id idempotency as POST /api/v1/usage/: running "
        "it twice writes nothing the second time. Lines are usage objects (CSV: a header row of usage-object "
        "fields) or, in JSONL, litellm's standard logging payload. The import writes as an organization-scoped "
        "API key would, without creating one: every record must name its project and agent, or take them from "
        "--project / --agent. Prints written / replayed / invalid counts; invalid lines are listed with their "
        "errors on stderr, skipped, and make the command exit with status 1."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", metavar="FILE", help="JSONL or CSV file; - reads standard input (JSONL).")
        parser.add_argument("--organization", required=True, metavar="SLUG", help="Organization the usage belongs to.")
        parser.add_argument("--project", metavar="SLUG", help="Project for records that name none (must exist).")
        parser.add_argument(
            "--agent", metavar="NAME", help="Agent for records that name none (registered if new, as over the API)."
        )
        parser.add_argument(
            "--format", choices=["auto", "jsonl", "csv"], default="auto", help="Default: by extension, else sniffed."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=settings.SPENDGUARD_INGEST_MAX_BATCH,
            help="Records per transaction (default and maximum: SPENDGUARD_INGEST_MAX_BATCH).",
        )

    def handle(self, *args, **options) -> None:
        organization = Organization.objects.filter(slug=options["organization"]).first()
        if organization is None:
            raise CommandError(f"Organization {options['organization']!r} does not exist.")
        if (
            options["project"]
            and not Project.objects.filter(organization=organization, slug=options["project"]).exists()
        ):
            raise CommandError(f"Project {options['project']!r} does not exist in {organization.slug!r}.")
        batch_size = options["batch_size"]
        if not 1 <= batch_size <= settings.SPENDGUARD_INGEST_MAX_BATCH:
            raise CommandError(f"--batch-size must be between 1 and {settings.SPENDGUARD_INGEST_MAX_BATCH}.")
        try:
            report = usage_import(
                organization=organization,
                rows=usage_file_rows(options["file"], file_format=options["format"]),
                project=options["project"],
                agent=options["agent"],
                batch_size=batch_size,
            )
        except OSError as exc:
            raise CommandError(f"Cannot read {options['file']}: {exc.strerror or exc}.") from exc

        for line, errors in report.invalid[:_SHOWN_INVALID]:
            problems = "; ".join(f"{name}: {' '.join(map(str, messages))}" for name, messages in errors.items())
            self.stderr.write(f"line {line}: {problems}")
        if len(report.invalid) > _SHOWN_INVALID:
            self.stderr.write(f"... and {len(report.invalid) - _SHOWN_INVALID} more invalid lines.")
        self.stdout.write(
            f"{options['file']}: {report.lines} lines: {report.written} written, {report.replayed} replayed, "
            f"{len(report.invalid)} invalid."
        )
        if report.invalid:
            raise CommandError(f"{len(report.invalid)} invalid line(s) were not imported; the other lines were.")
