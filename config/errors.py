"""Domain errors shared by every app's services.

Services raise these; they never import DRF. ``config.api.exception_handler`` turns them into
``{"error": {"code", "message", "fields"}}`` responses with the status given here, so the HTTP
contract (status + stable ``code``) is decided in one place.
"""

from typing import Any


class ApplicationError(Exception):
    """Base for errors a caller can act on. ``code`` is part of the public API: never rename one."""

    status_code = 400
    code = "invalid"
    default_message = "The request is invalid."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        fields: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if code:
            self.code = code
        self.fields = fields or {}
        # Extra top-level members of the error object (e.g. the budgets at fault).
        self.extra = extra or {}
        super().__init__(self.message)


class ValidationFailed(ApplicationError):
    status_code = 400
    code = "validation_error"
    default_message = "Some fields are invalid."


class NotAuthenticated(ApplicationError):
    status_code = 401
    code = "not_authenticated"
    default_message = "Authentication credentials were not provided or are invalid."


class OutOfScope(ApplicationError):
    status_code = 403
    code = "out_of_scope"
    default_message = "This API key may not act on that organization, project or agent."


class NotFound(ApplicationError):
    status_code = 404
    code = "not_found"
    default_message = "Not found."


class Conflict(ApplicationError):
    status_code = 409
    code = "conflict"
    default_message = "The request conflicts with the current state of the resource."
