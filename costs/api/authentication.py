"""``Authorization: Bearer <api key>`` for agents, and the one door every API view goes through to
learn what its caller may touch (:func:`request_scope`)."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission

from config.errors import NotAuthenticated, OutOfScope
from costs.models import ApiKey
from costs.selectors import api_key_get_by_secret
from costs.services.scope import KeyScope, scope_for_key


class ApiKeyAuthentication(BaseAuthentication):
    """Sets ``request.auth`` to the :class:`ApiKey` (``request.user`` stays None for agents).

    A header that is not ``Bearer sg_...`` is left to the next authenticator; a ``sg_`` key that is
    unknown or revoked is a 401 at once.
    """

    keyword = b"bearer"

    def authenticate(self, request):
        parts = bearer_parts(request)
        if parts is None:
            return None
        if len(parts) != 2:
            raise NotAuthenticated("Malformed Authorization header; expected 'Bearer <api key>'.")
        secret = parts[1].decode("latin-1")
        api_key = self.lookup(request, secret)
        if api_key is None:
            raise NotAuthenticated("Unknown API key.", code="invalid_api_key")
        if api_key.revoked_at is not None:
            raise NotAuthenticated("This API key has been revoked.", code="api_key_revoked")
        _touch(api_key)
        return (None, api_key)

    def lookup(self, request, secret: str) -> ApiKey | None:
        """The key of ``secret`` (revoked ones too), or None. A hook for views with their own cache."""
        return api_key_get_by_secret(secret=secret)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


def bearer_parts(request) -> list[bytes] | None:
    """The ``Authorization`` header split as :class:`ApiKeyAuthentication` reads it, when its
    scheme is Bearer (then that class answers the request: a key, or a 401); else None (the next
    authenticator, e.g. a session, is asked). Works on Django and DRF requests alike."""
    parts = get_authorization_header(request).split()
    if not parts or parts[0].lower() != ApiKeyAuthentication.keyword:
        return None
    return parts


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes :class:`ApiKeyAuthentication` in the OpenAPI schema."""

    target_class = ApiKeyAuthentication
    match_subclasses = True  # e.g. the budget check's cached variant
    name = "ApiKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (sg_...) created in the admin, scoped to an organization, project or agent.",
        }


def _touch(api_key: ApiKey) -> None:
    """Record last use, at most once per SPENDGUARD_API_KEY_TOUCH_SECONDS, with a guarded update so
    concurrent requests of one key don't all write the same row."""
    now = timezone.now()
    threshold = now - timedelta(seconds=settings.SPENDGUARD_API_KEY_TOUCH_SECONDS)
    if api_key.last_used_at is None or api_key.last_used_at < threshold:
        ApiKey.objects.filter(pk=api_key.pk).exclude(last_used_at__gte=threshold).update(last_used_at=now)
        api_key.last_used_at = now


class HasApiKey(BasePermission):
    """Only API-key callers. No credentials -> 401; a session login (operators, staff) -> 403
    ``api_key_required``: tenant data is read and written through a key's scope, never a user's."""

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        if request.user is not None and request.user.is_authenticated:
            raise OutOfScope(
                "This endpoint needs an API key (Authorization: Bearer sg_...); session logins may not use it.",
                code="api_key_required",
            )
        return False  # DRF answers 401 not_authenticated


def request_scope(request) -> KeyScope:
    """What the caller of ``request`` may read and write. Every API view that touches tenant data
    calls this (with :class:`HasApiKey` as its permission)."""
    if not isinstance(request.auth, ApiKey):
        raise OutOfScope("This endpoint needs an API key.", code="api_key_required")
    return scope_for_key(request.auth)
