"""Writes on the attribution hierarchy (Organization › Project › Sprint › Agent) used by operator
commands, the demo seeder and admin actions.

The ``*_get_or_create`` services are safe under concurrency (they lean on the unique constraints
through Django's ``get_or_create``) and validate what they create with the model's own rules, so a
bad slug or time zone is a :class:`~config.errors.ValidationFailed` with field errors, never a row.
"""

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import transaction

from config.errors import ValidationFailed
from costs.models import Agent, AgentStatus, Organization, Project, Sprint


def _validated(instance) -> None:
    """Run model validation (fields, ``clean``) on an unsaved instance; raise ValidationFailed."""
    try:
        instance.full_clean()
    except ValidationError as exc:
        raise ValidationFailed(fields=exc.message_dict) from exc


def _get_or_create(model, *, lookup: dict, defaults: dict):
    existing = model.objects.filter(**lookup).first()
    if existing is not None:
        return existing, False
    _validated(model(**lookup, **defaults))
    return model.objects.get_or_create(**lookup, defaults=defaults)


@transaction.atomic
def organization_get_or_create(*, slug: str, name: str = "", timezone: str = "UTC") -> tuple[Organization, bool]:
    """The organization with ``slug``, created with ``name`` (default: from the slug) and
    ``timezone`` when missing. An existing organization is returned unchanged."""
    return _get_or_create(
        Organization, lookup={"slug": slug}, defaults={"name": name or _title(slug), "timezone": timezone}
    )


@transaction.atomic
def project_get_or_create(*, organization: Organization, slug: str, name: str = "") -> tuple[Project, bool]:
    """The project ``slug`` of ``organization``, created (named ``name`` or after the slug) when missing."""
    return _get_or_create(
        Project, lookup={"organization": organization, "slug": slug}, defaults={"name": name or _title(slug)}
    )


@transaction.atomic
def agent_get_or_create(
    *, project: Project, name: str, model_override: str = "", description: str = ""
) -> tuple[Agent, bool]:
    """The agent ``name`` of ``project``, registered (active) when missing. An existing agent keeps
    its status and settings."""
    return _get_or_create(
        Agent,
        lookup={"project": project, "name": name},
        defaults={"model_override": model_override, "description": description},
    )


@transaction.atomic
def sprint_get_or_create(
    *, project: Project, slug: str, start_date: dt.date, end_date: dt.date, name: str = ""
) -> tuple[Sprint, bool]:
    """The sprint ``slug`` of ``project``, created over ``[start_date, end_date]`` (both included)
    when missing. Refuses (ValidationFailed) a new sprint that overlaps another sprint of the project.
    An existing sprint is returned as it is, even if its dates differ."""
    return _get_or_create(
        Sprint,
        lookup={"project": project, "slug": slug},
        defaults={"name": name or _title(slug), "start_date": start_date, "end_date": end_date},
    )


def agent_set_status(*, agent: Agent, status: str) -> bool:
    """Pause or resume ``agent`` (``status`` is an :class:`AgentStatus` value).

    Returns True when the status changed, False when the agent already had it. Guarded update, so
    concurrent pauses of one agent write once.
    """
    if status not in AgentStatus.values:
        raise ValidationFailed(fields={"status": [f"Must be one of {', '.join(AgentStatus.values)}."]})
    changed = Agent.objects.filter(pk=agent.pk).exclude(status=status).update(status=status) == 1
    agent.status = status
    return changed


def agent_set_model_override(*, agent: Agent, model: str) -> bool:
    """Make ``agent``'s budget checks answer ``model`` instead of the one asked for ("" clears it).

    Returns True when the override changed. Guarded update, so concurrent callers write once.
    """
    changed = Agent.objects.filter(pk=agent.pk).exclude(model_override=model).update(model_override=model) == 1
    agent.model_override = model
    return changed


def _title(slug: str) -> str:
    return slug.replace("-", " ").replace("_", " ").strip().title() or slug
