"""Recording an alert's deliveries in its transaction, queueing the first attempt, and the
attempts themselves: claiming a due delivery under a lease, sending it, recording the outcome (see
the package docstring)."""

import logging
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from budgets.models import (
    AlertDelivery,
    BudgetAlert,
    DeliveryChannel,
    DeliveryStatus,
)
from budgets.services.delivery.channels import _send_email, _send_webhook
from budgets.services.delivery.content import alert_message
from costs.models import split_email_list

logger = logging.getLogger("budgets.services.delivery")  # one logger for the package, as before the split

DUE_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
# How long a claimed delivery stays invisible to other workers. A send is bounded by the socket
# timeouts (each SMTP command waits at most EMAIL_TIMEOUT), so the lease is a generous multiple of
# them; it only matters when a worker dies mid-send (the row is retried after it).
MIN_LEASE = timedelta(minutes=5)
LEASE_TIMEOUT_MULTIPLE = 20
ERROR_MAX_CHARS = 1000


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
