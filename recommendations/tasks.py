"""Celery tasks of the recommendations app (scheduled in config/beat.py). Generation and
verification are idempotent (ADR 0007), so a re-run after a worker crash is harmless."""

from celery import shared_task


@shared_task(acks_late=True, soft_time_limit=1500, time_limit=1800)
def generate_recommendations(
    organization_id: int | None = None, *, project_id: int | None = None, agent_id: int | None = None
) -> dict:
    """Regenerate the recommendations of one organization (optionally one project or agent); without
    an organization (the nightly run), queue one task per organization, so each has its own time limit
    and a worker crash repeats only its own. Returns counts per organization slug."""
    from costs.models import Agent, Organization, Project
    from recommendations.services.generate import recommendations_generate

    if organization_id is None:
        for pk in Organization.objects.order_by("pk").values_list("pk", flat=True):
            generate_recommendations.delay(pk)
        return {}
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return {}  # deleted since it was queued
    project = Project.objects.filter(pk=project_id).first() if project_id else None
    agent = Agent.objects.filter(pk=agent_id).first() if agent_id else None
    report = recommendations_generate(organization=organization, project=project, agent=agent)
    return {
        organization.slug: {
            "created": len(report.created),
            "refreshed": len(report.refreshed),
            "reopened": len(report.reopened),
            "expired": len(report.expired),
        }
    }


@shared_task(acks_late=True, soft_time_limit=540, time_limit=600)
def verify_implemented_recommendations() -> int:
    """Re-measure the realized savings of implemented recommendations; returns how many."""
    from recommendations.services.realized import implemented_verify_all

    return implemented_verify_all()
