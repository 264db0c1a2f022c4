"""Delivery of budget alerts by e-mail and to a Slack-compatible webhook (issue 5; ADR 0005).

Every channel of an alert is an :class:`~budgets.models.AlertDelivery` row, written in the alert's own
transaction (:func:`alert_deliveries_create`), so nothing that happens after the commit — a broker
that is down, a mail server that refuses, a worker that dies — can lose an alert: the first attempt is
queued after commit (:func:`alert_delivery_queue`) and the periodic job (:func:`deliveries_retry_due`)
sends whatever is still due, with exponential backoff.

Claiming: a worker takes one due row at a time with ``SELECT ... FOR UPDATE SKIP LOCKED`` in a short
transaction and, in that transaction, pushes its ``next_attempt_at`` forward by a *lease* (and counts
the attempt). It commits, then talks to the mail server or the webhook holding no lock and no open
transaction, then records the outcome. Holding the row lock through the network I/O would be simpler,
but it would keep a transaction (and a connection's snapshot) open for up to the SMTP / HTTP timeouts
per row; the lease gives the same "two workers never send one delivery twice" guarantee as long as a
send finishes within the lease, which is many times the configured timeouts.

At least once, not at most once: a process that dies after the mail server accepted a message but
before the outcome was recorded leaves the row due again when its lease runs out, and the retry job
sends it a second time. A duplicate e-mail is the price of never losing one; the stable Message-ID
lets mail clients fold the two. Because the claim counts the attempt, a delivery that kills its worker
every time still reaches ``gave_up`` after the configured number of attempts.
"""

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from budgets.models import (
    AlertDelivery,
    AlertKind,
    AnomalyWindow,
    BudgetAlert,
    DeliveryChannel,
    DeliveryStatus,
    nanos_usd_display,
)
from budgets.services.alerts import budget_node_label
from costs.models import split_email_list

logger = logging.getLogger(__name__)

DUE_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
# How long a claimed delivery stays invisible to other workers. A send is bounded by the socket
# timeouts (each SMTP command waits at most EMAIL_TIMEOUT), so the lease is a generous multiple of
# them; it only matters when a worker dies mid-send (the row is retried after it).
MIN_LEASE = timedelta(minutes=5)
LEASE_TIMEOUT_MULTIPLE = 20
ERROR_MAX_CHARS = 1000
WEBHOOK_BODY_IN_ERROR_CHARS = 200

WINDOW_LENGTHS = {AnomalyWindow.HOUR: timedelta(hours=1), AnomalyWindow.DAY: timedelta(days=1)}
WINDOW_PHRASES = {AnomalyWindow.HOUR: "in the last hour", AnomalyWindow.DAY: "in the last day"}


# --- recording and queueing (the alert's transaction) -----------------------------------------


def alert_recipients(alert: BudgetAlert) -> list[str]:
    """The budget's alert e-mails, then the organization's, each once (case-insensitively), in order.
    Alerts without a budget (anomalies, or a budget deleted since) go to the organization's."""
    lists = [alert.budget.alert_emails] if alert.budget is not None else []
    lists.append(alert.organization.alert_emails)
    seen: set[str] = set()
    recipients = []
    for address in (address for value in lists for address in split_email_list(value)):
        if address.lower() not in seen:
            seen.add(address.lower())
            recipients.append(address)
    return recipients


def alert_deliveries_create(*, alert: BudgetAlert) -> list[AlertDelivery]:
    """The pending deliveries of a just-recorded ``alert``, one per configured channel (an e-mail to
    :func:`alert_recipients` when there are any; the organization's webhook when it has one), due now.
    Call it inside the alert's transaction so the alert and its deliveries commit together."""
    organization = alert.organization
    now = timezone.now()
    targets = []
    recipients = alert_recipients(alert)
    if recipients:
        targets.append((DeliveryChannel.EMAIL, ", ".join(recipients)))
    if organization.alert_webhook_url:
        targets.append((DeliveryChannel.WEBHOOK, organization.alert_webhook_url))
    if not targets:
        logger.info("Alert %s has no delivery channel (no e-mails or webhook configured).", alert.pk)
        return []
    return AlertDelivery.objects.bulk_create(
        AlertDelivery(alert=alert, channel=channel, target=target, next_attempt_at=now) for channel, target in targets
    )


# Publishing gives up after about a second: the request that crossed the threshold waits for it.
QUEUE_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def alert_delivery_queue(*, alert_id: int) -> None:
    """Queue the first delivery attempt of ``alert_id`` (run it from ``transaction.on_commit``).

    Never raises: when the broker cannot take the task, the deliveries stay pending and the periodic
    retry job sends them, so a broker outage delays alerts and fails no request.
    """
    from budgets.tasks import deliver_alert

    try:
        deliver_alert.apply_async(args=(alert_id,), retry=True, retry_policy=QUEUE_RETRY_POLICY)
    except Exception:  # any broker or transport error: the retry job covers it
        logger.warning("Could not queue delivery of alert %s; the retry job will send it.", alert_id, exc_info=True)


# --- attempts ---------------------------------------------------------------------------------


def alert_deliver(*, alert_id: int, now: datetime | None = None) -> int:
    """Attempt the due deliveries of one alert; returns how many were sent. Failures are recorded on
    the deliveries (with their next attempt time), never raised."""
    return _attempt_due(now=now, limit=None, alert_id=alert_id)


def deliveries_retry_due(*, now: datetime | None = None, limit: int = 500) -> int:
    """Attempt up to ``limit`` due deliveries (pending or failed, ``next_attempt_at <= now``), oldest
    first; returns how many were sent. Safe to run concurrently: each delivery is claimed once."""
    return _attempt_due(now=now, limit=limit, alert_id=None)


def retry_delay(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: base x 2^(attempts - 1), capped."""
    base = settings.SPENDGUARD_ALERT_RETRY_BASE_SECONDS
    # The exponent is capped too: 2^attempts for a large max-attempts setting is a pointless bignum.
    seconds = min(base * 2 ** min(attempts - 1, 32), settings.SPENDGUARD_ALERT_RETRY_MAX_SECONDS)
    return timedelta(seconds=seconds)


def _attempt_due(*, now: datetime | None, limit: int | None, alert_id: int | None) -> int:
    sent = 0
    # One attempt per delivery per run, even if a zero backoff made a failed one due again at once.
    attempted: set[int] = set()
    while limit is None or len(attempted) < limit:
        claimed = _claim(now=now or timezone.now(), alert_id=alert_id, skip=attempted)
        if claimed is None:
            break
        delivery, lease_until = claimed
        attempted.add(delivery.pk)
        try:
            _send(delivery)
        except Exception as exc:  # every failure is recorded and retried; none may stop the others
            _record_failure(delivery, lease_until=lease_until, error=exc, now=now or timezone.now())
            if isinstance(exc, SoftTimeLimitExceeded):
                raise  # the task is out of time: the rest stay due for the next run
        else:
            _record_success(delivery, now=now or timezone.now())
            sent += 1
    return sent


def _lease() -> timedelta:
    timeout = max(settings.EMAIL_TIMEOUT or 0, settings.SPENDGUARD_ALERT_WEBHOOK_TIMEOUT_SECONDS)
    return max(MIN_LEASE, timedelta(seconds=timeout * LEASE_TIMEOUT_MULTIPLE))


def _claim(*, now: datetime, alert_id: int | None, skip: set[int]) -> tuple[AlertDelivery, datetime] | None:
    """Take the oldest due delivery no other worker holds: count the attempt and lease it (push
    ``next_attempt_at`` past the send), in one short transaction. None when nothing is due."""
    max_attempts = settings.SPENDGUARD_ALERT_DELIVERY_MAX_ATTEMPTS
    while True:
        with transaction.atomic():
            due = AlertDelivery.objects.select_for_update(skip_locked=True).filter(
                status__in=DUE_STATUSES, next_attempt_at__lte=now
            )
            if alert_id is not None:
                due = due.filter(alert_id=alert_id)
            if skip:
                due = due.exclude(pk__in=skip)
            delivery = due.order_by("next_attempt_at", "pk").first()
            if delivery is None:
                return None
            if delivery.attempts >= max_attempts:
                # Only a worker that died mid-attempt (or a lowered setting) leaves a row here:
                # failures at the last attempt give up when they are recorded.
                delivery.status = DeliveryStatus.GAVE_UP
                delivery.save(update_fields=["status", "updated_at"])
                logger.error(
                    "Gave up delivering alert %s by %s after %s attempts (the last did not finish).",
                    delivery.alert_id,
                    delivery.channel,
                    delivery.attempts,
                )
                continue
            lease_until = now + _lease()
            delivery.attempts += 1
            delivery.next_attempt_at = lease_until
            delivery.save(update_fields=["attempts", "next_attempt_at", "updated_at"])
            return delivery, lease_until


def _record_success(delivery: AlertDelivery, *, now: datetime) -> None:
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.SENT, sent_at=now, last_error="", updated_at=timezone.now()
    )
    logger.info("Delivered alert %s by %s (attempt %s).", delivery.alert_id, delivery.channel, delivery.attempts)


def _record_failure(delivery: AlertDelivery, *, lease_until: datetime, error: BaseException, now: datetime) -> None:
    text = f"{type(error).__name__}: {error}"[:ERROR_MAX_CHARS]
    gave_up = delivery.attempts >= settings.SPENDGUARD_ALERT_DELIVERY_MAX_ATTEMPTS
    fields = {"last_error": text, "updated_at": timezone.now()}
    if gave_up:
        fields["status"] = DeliveryStatus.GAVE_UP
    else:
        fields.update(status=DeliveryStatus.FAILED, next_attempt_at=now + retry_delay(delivery.attempts))
    # Only while the lease is ours: past it, another worker may have claimed the row again.
    recorded = AlertDelivery.objects.filter(
        pk=delivery.pk, status__in=DUE_STATUSES, next_attempt_at=lease_until
    ).update(**fields)
    if not recorded:
        logger.warning("Delivery %s failed after its lease ran out; not recorded: %s", delivery.pk, text)
    elif gave_up:
        logger.error(
            "Gave up delivering alert %s by %s after %s attempts: %s",
            delivery.alert_id,
            delivery.channel,
            delivery.attempts,
            text,
        )
    else:
        logger.warning(
            "Delivering alert %s by %s failed (attempt %s), retrying at %s: %s",
            delivery.alert_id,
            delivery.channel,
            delivery.attempts,
            fields["next_attempt_at"].isoformat(),
            text,
        )


def _send(delivery: AlertDelivery) -> None:
    alert = (
        BudgetAlert.objects.select_related(
            "organization",
            "budget__organization",
            "budget__project",
            "budget__sprint",
            "budget__agent",
            "project",
            "agent",
        )
    ).get(pk=delivery.alert_id)
    message = alert_message(alert)
    if delivery.channel == DeliveryChannel.EMAIL:
        _send_email(message, recipients=split_email_list(delivery.target), alert=alert)
    elif delivery.channel == DeliveryChannel.WEBHOOK:
        _send_webhook(message, url=delivery.target)
    else:
        raise ValueError(f"Unknown delivery channel {delivery.channel!r}.")


# --- content ----------------------------------------------------------------------------------


def alert_url(alert: BudgetAlert) -> str:
    """Where a person reads the alert: the report page of what it is about (the agent, sprint or
    project page, else the organization's overview), which lists the alert with a link to
    acknowledge it in the admin. The one place that decides the link (e-mail and webhook use it)."""
    org = alert.organization.slug
    budget = alert.budget
    agent = alert.agent or (budget.agent if budget is not None and budget.agent_id else None)
    sprint = budget.sprint if budget is not None and budget.sprint_id else None
    project = alert.project or (budget.project if budget is not None and budget.project_id else None)
    if agent is not None:
        path = reverse("reports:agent", args=[org, agent.project.slug, agent.name])
    elif sprint is not None:
        path = reverse("reports:sprint", args=[org, sprint.project.slug, sprint.slug])
    elif project is not None:
        path = reverse("reports:project", args=[org, project.slug])
    else:
        path = reverse("reports:overview") + f"?organization={org}"
    return settings.SPENDGUARD_BASE_URL.rstrip("/") + path


@dataclass(frozen=True)
class AlertMessage:
    subject: str
    text: str
    html: str
    summary: str  # one line for chat: the subject and the key figures
    url: str


def alert_message(alert: BudgetAlert) -> AlertMessage:
    """The alert rendered: subject (templates/budgets/email/alert_subject.txt), plain text
    (alert.txt), HTML (alert.html) and a one-line summary for the webhook."""
    context = _context(alert)
    # One line, whatever the names contain: a newline in a header is refused by Django's mail.
    subject = " ".join(render_to_string("budgets/email/alert_subject.txt", context).split())
    context["subject"] = subject
    figures = "; ".join(f"{label}: {value}" for label, value in context["facts"][:3])
    return AlertMessage(
        subject=subject,
        text=render_to_string("budgets/email/alert.txt", context),
        html=render_to_string("budgets/email/alert.html", context),
        summary=f"{subject}. {figures}.",
        url=context["url"],
    )


def _context(alert: BudgetAlert) -> dict:
    budget = alert.budget
    tz_name = budget.timezone if budget is not None else alert.organization.timezone
    context = {
        "alert": alert,
        "kind": alert.kind,
        "severity": alert.get_severity_display(),
        "url": alert_url(alert),
        "timezone": tz_name,
        "fired_at": _local(alert.fired_at, tz_name).strftime("%Y-%m-%d %H:%M"),
        "organization": alert.organization.name,
    }
    if alert.kind == AlertKind.ANOMALY:
        subject_node = alert.agent or alert.project
        context["node_label"] = f"{'Agent' if alert.agent_id else 'Project'} {subject_node.name}"
        context["spend"] = nanos_usd_display(alert.spend_nanos)
        context["window_phrase"] = WINDOW_PHRASES.get(alert.window, "")
        window_end = alert.window_start + WINDOW_LENGTHS.get(alert.window, timedelta(0))
        context["facts"] = [
            ("Spent", f"{nanos_usd_display(alert.spend_nanos)} {context['window_phrase']}".strip()),
            ("Usual (median)", nanos_usd_display(alert.baseline_nanos or 0)),
            ("Anomaly cutoff", nanos_usd_display(alert.cutoff_nanos or 0)),
            ("Window", _span(alert.window_start, window_end, tz_name)),
        ]
    else:
        context["node_label"] = budget_node_label(budget) if budget is not None else "A deleted budget"
        context["budget_name"] = budget.name if budget is not None else ""
        context["period_word"] = budget.period_word if budget is not None else ""
        context["threshold"] = alert.threshold_percent
        limit = alert.limit_nanos or 0
        remaining = limit - alert.spend_nanos
        facts = [
            ("Spent", nanos_usd_display(alert.spend_nanos)),
            ("Limit", nanos_usd_display(limit)),
            ("Used", f"{alert.spend_nanos * 100 // limit}%" if limit else "—"),
            (
                "Remaining",
                nanos_usd_display(remaining) if remaining >= 0 else f"$0.00 (over by {nanos_usd_display(-remaining)})",
            ),
        ]
        if alert.kind == AlertKind.FORECAST:
            exhaustion = alert.projected_exhaustion_at
            context["exhaustion_date"] = _local(exhaustion, tz_name).date().isoformat() if exhaustion else ""
            facts[2:2] = [("Forecast at the period's end", nanos_usd_display(alert.projected_nanos or 0))]
            if exhaustion:
                facts.append(("Limit reached on (forecast)", context["exhaustion_date"]))
        facts.append(("Period", _span(alert.period_start, alert.period_end, tz_name)))
        context["facts"] = facts
    context["facts"].append(("Severity", context["severity"]))
    context["facts"].append(("Fired at", f"{context['fired_at']} ({tz_name})"))
    return context


def _local(moment: datetime, tz_name: str) -> datetime:
    return moment.astimezone(zoneinfo.ZoneInfo(tz_name))


def _span(start: datetime | None, end: datetime | None, tz_name: str) -> str:
    """A half-open range in ``tz_name``: whole days as inclusive dates ("2026-12-01 – 2026-12-31"),
    anything else as times ("2026-12-05 14:00 – 15:00")."""
    if start is None:
        return "—"
    first = _local(start, tz_name)
    if end is None:
        return f"since {first:%Y-%m-%d} (open-ended, {tz_name})"
    last = _local(end, tz_name)
    if first.time() == last.time() == datetime.min.time():
        return f"{first:%Y-%m-%d} – {(last - timedelta(days=1)):%Y-%m-%d} ({tz_name})"
    end_format = "%H:%M" if first.date() == last.date() else "%Y-%m-%d %H:%M"
    return f"{first:%Y-%m-%d %H:%M} – {last.strftime(end_format)} ({tz_name})"


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
