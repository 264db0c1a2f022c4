"""API keys: created with their secret shown once, stored hashed, revocable."""

from django.db import transaction
from django.utils import timezone

from config.errors import ValidationFailed
from costs.models import Agent, ApiKey, Organization, Project


@transaction.atomic
def api_key_create(
    *,
    organization: Organization,
    name: str,
    project: Project | None = None,
    agent: Agent | None = None,
    created_by=None,
) -> tuple[ApiKey, str]:
    """Create a key scoped to ``organization`` (narrowed to ``project``, or to ``agent`` of it).

    Returns the key and its secret. The secret is not stored and cannot be recovered: show it once.
    """
    if agent is not None:
        project = project or agent.project
        if agent.project_id != project.pk:
            raise ValidationFailed(fields={"agent": ["The agent does not belong to this project."]})
    if project is not None and project.organization_id != organization.pk:
        raise ValidationFailed(fields={"project": ["The project does not belong to this organization."]})
    secret = ApiKey.generate_secret()
    api_key = ApiKey.objects.create(
        organization=organization,
        project=project,
        agent=agent,
        name=name,
        prefix=secret[:10],
        key_hash=ApiKey.hash_secret(secret),
        created_by=created_by,
    )
    return api_key, secret


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key; revoking twice keeps the first revocation time."""
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key.refresh_from_db(fields=["revoked_at"])
    return api_key
