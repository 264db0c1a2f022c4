"""``Authorization: Bearer <api key>`` for agents."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from config.errors import NotAuthenticated
from costs.models import ApiKey


class ApiKeyAuthentication(BaseAuthentication):
    """Sets ``request.auth`` to the :class:`ApiKey` (``request.user`` stays None for agents).

    A header that is not ``Bearer sg_...`` is left to the next authenticator; a ``sg_`` key that is
    unknown or revoked is a 401 at once.
    """

    keyword = b"bearer"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise NotAuthenticated("Malformed Authorization header; expected 'Bearer <api key>'.")
        secret = parts[1].decode("latin-1")
        api_key = (
            ApiKey.objects.select_related("organization", "project", "agent")
            .filter(key_hash=ApiKey.hash_secret(secret))
            .first()
        )
        if api_key is None:
            raise NotAuthenticated("Unknown API key.", code="invalid_api_key")
        if api_key.revoked_at is not None:
            raise NotAuthenticated("This API key has been revoked.", code="api_key_revoked")
        _touch(api_key)
        return (None, api_key)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


def _touch(api_key: ApiKey) -> None:
    """Record last use, at most once per SPENDGUARD_API_KEY_TOUCH_SECONDS, with a guarded update so
    concurrent requests of one key don't all write the same row."""
    now = timezone.now()
    threshold = now - timedelta(seconds=settings.SPENDGUARD_API_KEY_TOUCH_SECONDS)
    if api_key.last_used_at is None or api_key.last_used_at < threshold:
        ApiKey.objects.filter(pk=api_key.pk).exclude(last_used_at__gte=threshold).update(last_used_at=now)
        api_key.last_used_at = now
