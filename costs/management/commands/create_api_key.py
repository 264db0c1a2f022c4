"""Create an API key from scripts, CI and deployment automation.

stdout carries only the key (one line) so a script can capture it:
``KEY=$(python manage.py create_api_key --organization acme --project search --create)``;
everything meant for people goes to stderr.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from config.errors import ValidationFailed
from costs.models import Agent, Organization, Project
from costs.services.api_keys import api_key_create
from costs.services.hierarchy import agent_get_or_create, organization_get_or_create, project_get_or_create


class Command(BaseCommand):
    help = "Create an API key scoped to an organization, a project or one agent, and print it once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--organization", required=True, metavar="SLUG", help="Organization slug.")
        parser.add_argument("--project", metavar="SLUG", help="Narrow the key to this project of the organization.")
        parser.add_argument("--agent", metavar="NAME", help="Narrow the key to this agent (needs --project).")
        parser.add_argument("--name", help="Label shown in the admin (default: 'create_api_key <UTC time>').")
        parser.add_argument(
            "--create",
            action="store_true",
            help="Create the organization, project or agent when missing instead of failing.",
        )

    def handle(self, *args, **options) -> None:
        if options["agent"] and not options["project"]:
            raise CommandError("--agent needs --project (agent names are unique within a project).")
        name = options["name"] or f"create_api_key {timezone.now():%Y-%m-%d %H:%M:%S} UTC"
        try:
            # One transaction: a failure after --create made the organization leaves nothing behind.
            with transaction.atomic():
                organization, project, agent, created = self._scope(options)
                api_key, secret = api_key_create(organization=organization, project=project, agent=agent, name=name)
        except ValidationFailed as exc:
            problems = "; ".join(f"{field}: {' '.join(map(str, errors))}" for field, errors in exc.fields.items())
            raise CommandError(f"{exc.message} {problems}".strip()) from exc

        for what in created:
            self.stderr.write(f"Created {what}.")
        self.stderr.write(
            f"Created {api_key.scope}-scoped API key {api_key.name!r} ({api_key.prefix}…) for "
            f"{agent or project or organization.slug}. It is stored hashed and will not be shown again:"
        )
        self.stdout.write(secret)

    def _scope(self, options) -> tuple[Organization, Project | None, Agent | None, list[str]]:
        create, created = options["create"], []
        organization = Organization.objects.filter(slug=options["organization"]).first()
        if organization is None:
            if not create:
                raise CommandError(f"Organization {options['organization']!r} does not exist (--create makes it).")
            organization, _ = organization_get_or_create(slug=options["organization"])
            created.append(f"organization {organization.slug!r}")
        project = agent = None
        if options["project"]:
            project = Project.objects.filter(organization=organization, slug=options["project"]).first()
            if project is None:
                if not create:
                    raise CommandError(
                        f"Project {options['project']!r} does not exist in {organization.slug!r} (--create makes it)."
                    )
                project, _ = project_get_or_create(organization=organization, slug=options["project"])
                created.append(f"project {project}")
        if options["agent"]:
            agent = Agent.objects.filter(project=project, name=options["agent"]).first()
            if agent is None:
                if not create:
                    raise CommandError(f"Agent {options['agent']!r} does not exist in {project} (--create makes it).")
                agent, _ = agent_get_or_create(project=project, name=options["agent"])
                created.append(f"agent {agent}")
        return organization, project, agent, created
