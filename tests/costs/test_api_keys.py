import pytest

from config.errors import ValidationFailed
from costs.models import ApiKey
from costs.services.api_keys import api_key_create, api_key_revoke
from tests.factories import AgentFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def test_key_is_stored_hashed_and_shown_once(organization):
    _, secret = api_key_create(organization=organization, name="ci")

    stored = ApiKey.objects.get()
    assert secret.startswith("sg_") and len(secret) > 40
    assert stored.key_hash == ApiKey.hash_secret(secret) != secret
    assert stored.prefix == secret[:10]
    assert secret not in str(ApiKey.objects.values().get())
    assert stored.scope == "organization"


def test_agent_key_takes_the_agent_project(organization, agent):
    api_key, _ = api_key_create(organization=organization, agent=agent, name="agent key")

    assert (api_key.project, api_key.agent, api_key.scope) == (agent.project, agent, "agent")


def test_key_for_another_organizations_project_is_refused(organization):
    foreign = ProjectFactory()

    with pytest.raises(ValidationFailed) as excinfo:
        api_key_create(organization=organization, project=foreign, name="bad")

    assert excinfo.value.fields == {"project": ["The project does not belong to this organization."]}
    assert not ApiKey.objects.exists()


def test_agent_outside_project_is_refused(organization, project):
    other_agent = AgentFactory(project=ProjectFactory(organization=organization))

    with pytest.raises(ValidationFailed):
        api_key_create(organization=organization, project=project, agent=other_agent, name="bad")


def test_revoke_is_idempotent(organization):
    api_key, _ = api_key_create(organization=organization, name="ci")

    first = api_key_revoke(api_key=api_key).revoked_at
    second = api_key_revoke(api_key=api_key).revoked_at

    assert first is not None and first == second
