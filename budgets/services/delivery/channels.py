"""The channels: e-mail (with a stable Message-ID) and a Slack-compatible webhook."""

import json
import logging
import urllib.error
import urllib.parse
import urllib.request

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from budgets.models import (
    BudgetAlert,
)
from budgets.services.delivery.content import AlertMessage

logger = logging.getLogger("budgets.services.delivery")  # one logger for the package, as before the split

WEBHOOK_BODY_IN_ERROR_CHARS = 200


# --- channels ---------------------------------------------------------------------------------


def _message_id(alert: BudgetAlert) -> str:
    # The same id on every attempt, so a re-send after a crash folds into one message in most clients.
    host = urllib.parse.urlsplit(settings.SPENDGUARD_BASE_URL).hostname or "spendguard.invalid"
    return f"<spendguard-alert-{alert.pk}@{host}>"


def _send_email(message: AlertMessage, *, recipients: list[str], alert: BudgetAlert) -> None:
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
        headers={"Message-ID": _message_id(alert), "X-Spendguard-Alert": str(alert.pk)},
        # EMAIL_BACKEND decides: console (demo), SMTP (production), locmem (tests).
        connection=get_connection(fail_silently=False),
    )
    email.attach_alternative(message.html, "text/html")
    email.send(fail_silently=False)


class WebhookRejected(Exception):
    """The webhook answered with a status other than 2xx."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would follow a 301/302 to a POST with a body-less GET and call the 200 a delivery.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _slack_escape(text: str) -> str:
    # Slack's message format reserves these three (https://api.slack.com/reference/surfaces/formatting).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _send_webhook(message: AlertMessage, *, url: str) -> None:
    # The URL is a secret (Slack's carries its token): it goes into no error text and no log line.
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("The alert webhook URL must be http or https.")
    body = json.dumps({"text": f"{_slack_escape(message.summary)} {message.url}"}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "Spendguard alerts"},
    )
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=settings.SPENDGUARD_ALERT_WEBHOOK_TIMEOUT_SECONDS) as response:
            status, reason = response.status, response.reason
            answer = response.read(WEBHOOK_BODY_IN_ERROR_CHARS)
    except urllib.error.HTTPError as exc:  # 4xx, 5xx and (unfollowed) redirects
        status, reason = exc.code, exc.reason
        answer = exc.read(WEBHOOK_BODY_IN_ERROR_CHARS) if exc.fp is not None else b""
    if not 200 <= status < 300:
        detail = answer.decode("utf-8", "replace").strip()
        raise WebhookRejected(f"HTTP {status} {reason}" + (f": {detail}" if detail else ""))
