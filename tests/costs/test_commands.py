"""``manage.py create_api_key``: the key on stdout, people's text on stderr, scope as asked."""

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import RequestFactory

from config.errors import ValidationFailed
from costs.api.authentication import ApiKeyAuthentication
from costs.models import Agent, ApiKey, Organization, Project, Sprint
from costs.services.hierarchy import agent_set_status, organization_get_or_create, sprint_get_or_create
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def authenticate(secret: str) -> ApiKey:
    request = RequestFactory().post("/api/v1/usage/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    user, api_key = ApiKeyAuthentication().authenticate(request)
    assert user is None
    return api_key


def test_organization_key_is_printed_alone_on_stdout_and_authenticates(organization):
    out, err = run("--organization", "acme", "--name", "ci")

    assert out.endswith("\n") and out.count("\n") == 1
    secret = out.strip()
    api_key = authenticate(secret)
    assert (api_key.name, api_key.organization, api_key.project, api_key.agent) == ("ci", organization, None, None)
    assert api_key.key_hash == ApiKey.hash_secret(secret)
    assert api_key.scope == "organization"
    assert secret not in err
    assert "organization-scoped API key 'ci'" in err and "will not be shown again" in err


def test_project_key(organization, project):
    out, _ = run("--organization", "acme", "--project", "search")

    api_key = authenticate(out.strip())
    assert (api_key.scope, api_key.project, api_key.agent) == ("project", project, None)
    assert api_key.name.startswith("create_api_key ")


def test_agent_key(organization, agent):
    out, _ = run("--organization", "acme", "--project", "search", "--agent", "planner")

    api_key = authenticate(out.strip())
    assert (api_key.scope, api_key.project, api_key.agent) == ("agent", agent.project, agent)


def test_each_run_makes_a_new_key(organization):
    first, _ = run("--organization", "acme")
    second, _ = run("--organization", "acme")

    assert first != second
    assert ApiKey.objects.count() == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--organization", "nope"], "Organization 'nope' does not exist (--create makes it)."),
        (["--organization", "acme", "--project", "nope"], "Project 'nope' does not exist in 'acme'"),
        (["--organization", "acme", "--project", "search", "--agent", "ghost"], "Agent 'ghost' does not exist"),
        (["--organization", "acme", "--agent", "planner"], "--agent needs --project"),
    ],
)
def test_missing_parts_are_a_clear_error_without_create(agent, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(*args)

    assert not ApiKey.objects.exists()
    assert list(Agent.objects.values_list("name", flat=True)) == ["planner"]


def test_create_makes_missing_organization_project_and_agent(db):
    out, err = run("--organization", "globex", "--project", "billing-bot", "--agent", "summarizer", "--create")

    api_key = authenticate(out.strip())
    organization = Organization.objects.get(slug="globex")
    project = Project.objects.get(organization=organization, slug="billing-bot")
    assert (organization.name, organization.timezone, project.name) == ("Globex", "UTC", "Billing Bot")
    assert (api_key.organization, api_key.project, api_key.agent.name, api_key.scope) == (
        organization,
        project,
        "summarizer",
        "agent",
    )
    assert "Created organization 'globex'." in err and "Created project globex/billing-bot." in err


def test_create_reuses_what_exists(organization, project):
    run("--organization", "acme", "--project", "search", "--create")

    assert Organization.objects.count() == 1 and Project.objects.count() == 1


def test_invalid_slug_with_create_writes_nothing(db):
    with pytest.raises(CommandError, match="slug"):
        run("--organization", "good-org", "--project", "not a slug!", "--create")

    assert not Organization.objects.exists()
    assert not Project.objects.exists()
    assert not ApiKey.objects.exists()


def test_project_of_another_organization_is_not_found(db):
    OrganizationFactory(slug="acme")
    ProjectFactory(organization=OrganizationFactory(slug="other"), slug="shared-name")
    AgentFactory(project=Project.objects.get(slug="shared-name"), name="x")

    with pytest.raises(CommandError, match="Project 'shared-name' does not exist in 'acme'"):
        run("--organization", "acme", "--project", "shared-name")


# --- the hierarchy services behind the commands and the admin ---------------------------------------


def test_organization_get_or_create_validates_what_it_creates(db):
    with pytest.raises(ValidationFailed) as excinfo:
        organization_get_or_create(slug="globex", timezone="Mars/Olympus")

    assert list(excinfo.value.fields) == ["timezone"]
    assert not Organization.objects.exists()
    created, was_created = organization_get_or_create(slug="globex", timezone="Asia/Tokyo")
    again, created_again = organization_get_or_create(slug="globex", name="Ignored", timezone="UTC")
    assert (was_created, created_again, again) == (True, False, created)
    assert (again.name, again.timezone) == ("Globex", "Asia/Tokyo")


def test_sprint_get_or_create_refuses_overlaps(project):
    first, _ = sprint_get_or_create(
        project=project, slug="s1", start_date=dt.date(2026, 1, 5), end_date=dt.date(2026, 1, 18)
    )

    with pytest.raises(ValidationFailed) as excinfo:
        sprint_get_or_create(project=project, slug="s2", start_date=dt.date(2026, 1, 18), end_date=dt.date(2026, 1, 31))

    assert "Overlaps sprint 's1'" in str(excinfo.value.fields)
    same, created = sprint_get_or_create(
        project=project, slug="s1", start_date=dt.date(2027, 1, 1), end_date=dt.date(2027, 1, 2)
    )
    assert (same, created) == (first, False)
    assert list(Sprint.objects.values_list("slug", flat=True)) == ["s1"]


def test_agent_set_status(agent):
    assert agent_set_status(agent=agent, status="paused") is True
    assert agent_set_status(agent=agent, status="paused") is False
    with pytest.raises(ValidationFailed):
        agent_set_status(agent=agent, status="sleeping")

    agent.refresh_from_db()
    assert agent.status == "paused"
