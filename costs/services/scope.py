"""Tenancy has one door: what an API key may read and write.

Every API view turns its caller into a :class:`KeyScope` (``costs.api.authentication.request_scope``)
and every read or write of tenant data goes through it: the ingest service attributes records with
:meth:`KeyScope.project_allowed` / :meth:`KeyScope.agent_allowed`, and the ledger selectors filter
with :meth:`KeyScope.usage_filter`.

A key is scoped to an organization, optionally narrowed to one project, optionally to one agent of it:

============  ===========================================  =============================================
key scope     project of a record                          agent of a record
============  ===========================================  =============================================
organization  required; any project of the organization    required; unknown names are registered
project       the key's (naming another is out of scope)   required; unknown names are registered
agent         the key's (naming another is out of scope)   the key's (naming another is out of scope)
============  ===========================================  =============================================
"""

from dataclasses import dataclass

from config.errors import NotAuthenticated
from costs.models import Agent, ApiKey, Organization, Project


@dataclass(frozen=True, slots=True)
class KeyScope:
    api_key: ApiKey
    organization: Organization
    project: Project | None
    agent: Agent | None

    @property
    def level(self) -> str:
        """``"organization"``, ``"project"`` or ``"agent"``."""
        return self.api_key.scope

    def project_allowed(self, slug: str) -> bool:
        """May this key write to the project ``slug`` of its organization?"""
        return self.project is None or self.project.slug == slug

    def agent_allowed(self, name: str) -> bool:
        """May this key write as the agent ``name`` (within an allowed project)?"""
        return self.agent is None or self.agent.name == name

    def usage_filter(self) -> dict[str, int]:
        """ORM filter kwargs restricting the usage ledger to what this key may read."""
        if self.agent is not None:
            return {"organization_id": self.organization.pk, "agent_id": self.agent.pk}
        if self.project is not None:
            return {"organization_id": self.organization.pk, "project_id": self.project.pk}
        return {"organization_id": self.organization.pk}

    def owns(self, *, organization_id: int, project_id: int, agent_id: int) -> bool:
        """Is a row attributed to these ids inside this key's scope?"""
        return (
            organization_id == self.organization.pk
            and (self.project is None or project_id == self.project.pk)
            and (self.agent is None or agent_id == self.agent.pk)
        )


def scope_for_key(api_key: ApiKey) -> KeyScope:
    """The scope of ``api_key``. A revoked key has none (401 ``api_key_revoked``)."""
    if api_key.revoked_at is not None:
        raise NotAuthenticated("This API key has been revoked.", code="api_key_revoked")
    return KeyScope(api_key=api_key, organization=api_key.organization, project=api_key.project, agent=api_key.agent)
