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

Layout: :mod:`.attempts` (recording, queueing, claiming and sending), :mod:`.content` (the message
and its link) and :mod:`.channels` (e-mail, webhook). The public names are re-exported here.
"""

from budgets.services.delivery.attempts import (
    DUE_STATUSES,
    alert_deliver,
    alert_deliveries_create,
    alert_delivery_queue,
    alert_recipients,
    deliveries_retry_due,
    retry_delay,
)
from budgets.services.delivery.channels import WebhookRejected
from budgets.services.delivery.content import AlertMessage, alert_message, alert_url

__all__ = [
    "DUE_STATUSES",
    "AlertMessage",
    "WebhookRejected",
    "alert_deliver",
    "alert_deliveries_create",
    "alert_delivery_queue",
    "alert_message",
    "alert_recipients",
    "alert_url",
    "deliveries_retry_due",
    "retry_delay",
]
