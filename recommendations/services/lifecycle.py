"""An operator's verdict on a recommendation: accept, reject (with a reason), mark implemented.

Allowed moves (anything else is a 409 ``invalid_transition``; repeating the move a recommendation
already made is a no-op, so a retried API call is harmless):

    open -----> accepted -----> implemented
      |  \\          |
      |   `---------+-------> rejected (reason required)
      `---------------------> implemented
    expired --> accepted / rejected / implemented (the operator may still act on what they saw)
"""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from budgets.services.actors import actor_identity
from config.errors import Conflict, ValidationFailed
from recommendations.models import Recommendation, RecommendationStatus

S = RecommendationStatus
ALLOWED_FROM = {
    S.ACCEPTED: {S.OPEN, S.EXPIRED},
    S.REJECTED: {S.OPEN, S.ACCEPTED, S.EXPIRED},
    S.IMPLEMENTED: {S.OPEN, S.ACCEPTED, S.EXPIRED},
}


class InvalidTransition(Conflict):
    code = "invalid_transition"


@transaction.atomic
def _move(
    *,
    recommendation: Recommendation,
    to: str,
    actor,
    actor_label: str,
    now: datetime | None,
    reason: str = "",
    implemented_at: datetime | None = None,
) -> Recommendation:
    rec = Recommendation.objects.select_for_update().get(pk=recommendation.pk)
    if rec.status == to:
        return rec  # already done: a retried call changes nothing
    if rec.status not in ALLOWED_FROM[to]:
        raise InvalidTransition(
            f"A recommendation that is {rec.get_status_display().lower()} cannot be marked {S(to).label.lower()}.",
            extra={"status": rec.status},
        )
    now = now or timezone.now()
    user, label = actor_identity(actor, actor_label)
    fields = status_set(rec, status=to, reason=reason, now=now, user=user, label=label)
    if to == S.IMPLEMENTED:
        rec.implemented_at = implemented_at or now
    rec.save(update_fields=[*fields, "implemented_at"])
    return rec


STATUS_FIELDS = ("status", "status_reason", "status_changed_at", "status_changed_by", "status_changed_by_label")


def status_set(
    rec: Recommendation, *, status: str, reason: str, now: datetime, user=None, label: str
) -> tuple[str, ...]:
    """Move ``rec`` to ``status`` with who, when and why (not saved); returns the fields written.
    The operator's moves here and the generator's (reopen, expire) record a change the same way."""
    rec.status, rec.status_reason = status, reason
    rec.status_changed_at, rec.status_changed_by, rec.status_changed_by_label = now, user, label
    return STATUS_FIELDS


def recommendation_accept(
    *, recommendation: Recommendation, actor=None, actor_label: str = "", now: datetime | None = None
) -> Recommendation:
    """The operator means to act on it; regeneration keeps refreshing its figures."""
    return _move(recommendation=recommendation, to=S.ACCEPTED, actor=actor, actor_label=actor_label, now=now)


def recommendation_reject(
    *, recommendation: Recommendation, reason: str, actor=None, actor_label: str = "", now: datetime | None = None
) -> Recommendation:
    """Not wanted, and why; regeneration will not suggest the same opportunity again."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed(
            "Say why the recommendation is rejected.", fields={"reason": ["This field is required."]}
        )
    return _move(
        recommendation=recommendation, to=S.REJECTED, actor=actor, actor_label=actor_label, now=now, reason=reason
    )


def recommendation_implement(
    *,
    recommendation: Recommendation,
    actor=None,
    actor_label: str = "",
    implemented_at: datetime | None = None,
    now: datetime | None = None,
) -> Recommendation:
    """Done (at ``implemented_at``, default now): realized savings are measured from then on."""
    now = now or timezone.now()
    if implemented_at is not None and implemented_at > now:
        raise ValidationFailed(
            "implemented_at cannot be in the future.", fields={"implemented_at": ["Must not be in the future."]}
        )
    return _move(
        recommendation=recommendation,
        to=S.IMPLEMENTED,
        actor=actor,
        actor_label=actor_label,
        now=now,
        implemented_at=implemented_at,
    )
