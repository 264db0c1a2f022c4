"""Who did something, as audit rows, alerts and recommendations record it."""

from typing import Any


def actor_identity(actor, actor_label: str = "") -> tuple[Any, str]:
    """The user to link (None for an anonymous or absent one) and a label that outlives the user
    row: ``actor_label`` when given ("api-key:<prefix>", "generator"), else the username, else
    "system"."""
    user = actor if actor is not None and actor.is_authenticated else None
    return user, actor_label or (user.get_username() if user is not None else "system")
