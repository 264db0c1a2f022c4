"""Alert delivery: e-mail through a real SMTP server on loopback (aiosmtpd), a Slack-compatible
webhook against a real HTTP server on loopback, retries with backoff when either is down, an
unreachable Celery broker, and (marked ``postgres``) retry jobs racing in real threads on PostgreSQL."""

import asyncio
import datetime as dt
import email
import email.policy
import json
import logging
import socket
import threading
import time
import zoneinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone

from budgets.models import (
    AlertDelivery,
    AlertKind,
    AlertSeverity,
    BudgetAlert,
    BudgetPeriod,
    DeliveryChannel,
    DeliveryStatus,
    nanos_usd_display,
)
from budgets.services.alerts import alert_record, threshold_alert_record
from budgets.services.delivery import alert_delivery_queue, deliveries_retry_due
from budgets.services.periods import period_bounds
from tests.budgets.conftest import make_budget
from tests.concurrency import run_together
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory

pytestmark = pytest.mark.django_db

BASE_URL = "https://spendguard.example.com"
USD = 1_000_000_000  # nano-dollars
# 2026-12-10 12:00 UTC: inside December 2026 in Europe/Berlin (2026-11-30 23:00 – 2026-12-31 23:00 UTC).
IN_DECEMBER = dt.datetime(2026, 12, 10, 12, tzinfo=dt.UTC)


# --- servers on loopback ------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (until a test starts a server there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpRecorder:
    """aiosmtpd handler keeping every message it accepted (parsed), with its envelope recipients."""

    def __init__(self, delay: float = 0) -> None:
        self.delay = delay
        self.received: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.received.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self, port: int, delay: float = 0) -> None:
        self.port = port
        self.handler = SmtpRecorder(delay)
        self._controller: Controller | None = None

    @property
    def received(self):
        return self.handler.received

    def start(self) -> None:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp(settings):
    """An SMTP server on a free loopback port, *not started*: ``smtp.start()`` brings it up, until
    then the port refuses connections (a mail server outage). Django's SMTP backend points at it."""
    server = SmtpServer(free_port())
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 2
    settings.DEFAULT_FROM_EMAIL = "spendguard@example.com"
    yield server
    server.stop()


class WebhookServer:
    """http.server in a thread on loopback: records each request, answers with ``status``; while
    ``hold`` is set it keeps the request waiting until ``release`` is set."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        self.answer = b"ok"
        self.hold = False
        self.arrived = threading.Event()
        self.release = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                recorder.arrived.set()
                if recorder.hold and len(recorder.requests) == 1:
                    recorder.release.wait(timeout=10)
                self.send_response(recorder.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(recorder.answer)))
                self.end_headers()
                self.wfile.write(recorder.answer)

            def log_message(self, format, *args) -> None:  # keep the test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks/T000/B000/secret"

    def __enter__(self) -> "WebhookServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def webhook():
    with WebhookServer() as server:
        yield server


# --- data ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _delivery_settings(settings):
    settings.SPENDGUARD_BASE_URL = BASE_URL
    settings.SPENDGUARD_ALERT_RETRY_BASE_SECONDS = 60
    settings.SPENDGUARD_ALERT_RETRY_MAX_SECONDS = 200
    settings.SPENDGUARD_ALERT_DELIVERY_MAX_ATTEMPTS = 5
    settings.SPENDGUARD_ALERT_WEBHOOK_TIMEOUT_SECONDS = 2


def make_org(*, emails: str = "ops@example.com, Finance@Example.com", webhook_url: str = ""):
    return OrganizationFactory(
        slug="acme", name="Acme & Co", timezone="UTC", alert_emails=emails, alert_webhook_url=webhook_url
    )


def december_budget(organization, *, emails: str = "lead@example.com, OPS@example.com", **fields):
    """A monthly $1,000 budget on the project "Support Bot", in Berlin time, with its December period."""
    project = ProjectFactory(organization=organization, name="Support Bot", slug="support-bot")
    budget = make_budget(
        project=project,
        name="Bots & <tools>",
        limit_usd="1000",
        timezone="Europe/Berlin",
        alert_emails=emails,
        **fields,
    )
    bounds = period_bounds(budget, IN_DECEMBER)
    period = BudgetPeriod.objects.create(
        budget=budget,
        starts_at=bounds.starts_at,
        ends_at=bounds.ends_at,
        limit_nanos=budget.limit_nanos,
        ceiling_nanos=budget.ceiling_nanos,
        spent_nanos=913_204 * USD // 1000,
    )
    return budget, period


def cross_90(budget, period) -> BudgetAlert:
    """The booking transaction that carried the period past 90 %: the alert, its deliveries, and
    (on commit) the first delivery attempt."""
    with transaction.atomic():
        return threshold_alert_record(
            budget=budget, period=period, threshold=90, spent_nanos=period.spent_nanos, limit_nanos=period.limit_nanos
        )


# The report page of the alerts' project (budget alerts) and agent (the anomaly), where people read them.
PROJECT_REPORT = BASE_URL + "/reports/acme/projects/support-bot/"
AGENT_REPORT = BASE_URL + "/reports/acme/projects/support-bot/agents/triage/"


# --- (a) e-mail through a real SMTP server --------------------------------------------------------


def test_threshold_alert_email_arrives_with_subject_recipients_numbers_period_and_link(
    smtp, django_capture_on_commit_callbacks
) -> None:
    smtp.start()
    organization = make_org()
    budget, period = december_budget(organization)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        alert = cross_90(budget, period)
    assert len(callbacks) == 1

    # The budget's contacts first, then the organization's; OPS@ / ops@ are one person.
    recipients = ["lead@example.com", "OPS@example.com", "Finance@Example.com"]
    [delivery] = AlertDelivery.objects.filter(alert=alert)
    assert delivery.channel == DeliveryChannel.EMAIL
    assert delivery.target == ", ".join(recipients)
    assert (delivery.status, delivery.attempts, delivery.last_error) == (DeliveryStatus.SENT, 1, "")
    assert delivery.sent_at is not None

    [(envelope_to, message)] = smtp.received
    assert envelope_to == recipients
    assert message["Subject"] == "[Spendguard] Project Support Bot reached 90% of its monthly budget"
    assert message["From"] == "spendguard@example.com"
    assert [a.strip() for a in message["To"].split(",")] == recipients
    assert message["Message-ID"] == f"<spendguard-alert-{alert.pk}@spendguard.example.com>"
    assert message["X-Spendguard-Alert"] == str(alert.pk)

    link = PROJECT_REPORT
    assert link == "https://spendguard.example.com/reports/acme/projects/support-bot/"
    fired_text = alert.fired_at.astimezone(zoneinfo.ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M")
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert text.replace("\r\n", "\n") == (
        "[Spendguard] Project Support Bot reached 90% of its monthly budget\n"
        "\n"
        "Budget: Bots & <tools> (Project Support Bot)\n"
        "Organization: Acme & Co\n"
        "Spent: $913.20\n"
        "Limit: $1,000.00\n"
        "Used: 91%\n"
        "Remaining: $86.80\n"
        "Period: 2026-12-01 – 2026-12-31 (Europe/Berlin)\n"
        "Severity: Warning\n"
        f"Fired at: {fired_text} (Europe/Berlin)\n"
        "\n"
        f"Open the report: {link}\n"
        "\n"
        "--\n"
        "Spendguard sends this to the alert contacts of Acme & Co and of the budget Bots & <tools>.\n"
    )

    html = message.get_body(preferencelist=("html",)).get_content()
    assert "<h1" in html and "[Spendguard] Project Support Bot reached 90% of its monthly budget</h1>" in html
    # Everything from the database is escaped; nothing is fetched from elsewhere.
    assert "Bots &amp; &lt;tools&gt; (Project Support Bot)" in html
    assert "Acme &amp; Co" in html
    assert "<tools>" not in html
    for label, value in [
        ("Spent", "$913.20"),
        ("Limit", "$1,000.00"),
        ("Used", "91%"),
        ("Remaining", "$86.80"),
        ("Period", "2026-12-01 – 2026-12-31 (Europe/Berlin)"),
        ("Severity", "Warning"),
    ]:
        assert f'>{label}</th><td style="padding:4px 0;">{value}</td>' in html
    assert f'<a href="{link}"' in html
    assert "http://" not in html.replace(link, "") and "https://" not in html.replace(link, "")
    assert "<style" not in html and "<link" not in html


def test_forecast_alert_subject_and_body(django_capture_on_commit_callbacks) -> None:
    organization = make_org()
    budget, period = december_budget(organization)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        alert_record(
            organization_id=organization.pk,
            kind=AlertKind.FORECAST,
            severity=AlertSeverity.WARNING,
            message="forecast",
            spend_nanos=600 * USD,
            budget=budget,
            period=period,
            threshold_percent=100,
            limit_nanos=1000 * USD,
            projected_nanos=1_312_500_000_000,
            # 23:30 UTC on the 23rd is already the 24th in Berlin: the date is the budget's.
            projected_exhaustion_at=dt.datetime(2026, 12, 23, 23, 30, tzinfo=dt.UTC),
        )

    [message] = mail.outbox
    assert message.subject == "[Spendguard] Project Support Bot is forecast to exceed its monthly budget on 2026-12-24"
    assert message.to == ["lead@example.com", "OPS@example.com", "Finance@Example.com"]
    assert (
        "Spent: $600.00\n"
        "Limit: $1,000.00\n"
        "Forecast at the period's end: $1,312.50\n"
        "Used: 60%\n"
        "Remaining: $400.00\n"
        "Limit reached on (forecast): 2026-12-24\n"
        "Period: 2026-12-01 – 2026-12-31 (Europe/Berlin)\n"
    ) in message.body
    assert f"Open the report: {PROJECT_REPORT}\n" in message.body
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    assert '>Forecast at the period\'s end</th><td style="padding:4px 0;">$1,312.50</td>' in html.replace("&#x27;", "'")


def test_anomaly_alert_goes_to_the_organization_contacts(django_capture_on_commit_callbacks) -> None:
    organization = make_org(emails="oncall@example.com")
    project = ProjectFactory(organization=organization, name="Support Bot", slug="support-bot")
    agent = AgentFactory(project=project, name="triage")
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        alert_record(
            organization_id=organization.pk,
            kind=AlertKind.ANOMALY,
            severity=AlertSeverity.WARNING,
            message="anomaly",
            spend_nanos=12_400_000_000,
            agent=agent,
            window="hour",
            window_start=dt.datetime(2026, 12, 10, 14, tzinfo=dt.UTC),
            baseline_nanos=350_000_000,
            cutoff_nanos=2_100_000_000,
        )

    [message] = mail.outbox
    assert message.subject == "[Spendguard] Unusual spend: Agent triage spent $12.40 in the last hour"
    assert message.to == ["oncall@example.com"]
    assert (
        "Organization: Acme & Co\n"
        "Spent: $12.40 in the last hour\n"
        "Usual (median): $0.35\n"
        "Anomaly cutoff: $2.10\n"
        "Window: 2026-12-10 14:00 – 15:00 (UTC)\n"
        "Severity: Warning\n"
    ) in message.body
    assert "Budget:" not in message.body
    assert f"Open the report: {AGENT_REPORT}\n" in message.body


# --- (b) SMTP down: failed, retried with backoff, delivered once, or given up ----------------------


def test_smtp_outage_delays_the_alert_and_loses_nothing(smtp, django_capture_on_commit_callbacks) -> None:
    organization = make_org()
    budget, period = december_budget(organization)

    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        alert = cross_90(budget, period)  # the first attempt runs on commit and fails: nothing raised
    after = timezone.now()

    assert BudgetAlert.objects.filter(pk=alert.pk).exists()
    delivery = AlertDelivery.objects.get(alert=alert)
    assert (delivery.status, delivery.attempts, delivery.sent_at) == (DeliveryStatus.FAILED, 1, None)
    assert delivery.last_error.startswith("ConnectionRefusedError: [Errno 111]")
    # Backoff after attempt 1: the base (60 s).
    assert before + dt.timedelta(seconds=60) <= delivery.next_attempt_at <= after + dt.timedelta(seconds=60)

    # Not due yet: nothing attempted.
    assert deliveries_retry_due(now=delivery.next_attempt_at - dt.timedelta(seconds=1)) == 0
    assert AlertDelivery.objects.get(pk=delivery.pk).attempts == 1

    # Still down: 120 s after attempt 2, then capped at 200 s (not 240) after attempt 3.
    moment = delivery.next_attempt_at
    for attempts, wait in [(2, 120), (3, 200)]:
        assert deliveries_retry_due(now=moment) == 0
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, attempts)
        assert delivery.next_attempt_at == moment + dt.timedelta(seconds=wait)
        moment = delivery.next_attempt_at

    smtp.start()
    assert deliveries_retry_due(now=moment) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error, delivery.sent_at) == (
        DeliveryStatus.SENT,
        4,
        "",
        moment,
    )
    assert deliveries_retry_due(now=moment + dt.timedelta(days=1)) == 0
    [(_, message)] = smtp.received
    assert message["Subject"] == "[Spendguard] Project Support Bot reached 90% of its monthly budget"


def test_delivery_gives_up_after_the_maximum_attempts(
    smtp, settings, caplog, django_capture_on_commit_callbacks
) -> None:
    settings.SPENDGUARD_ALERT_DELIVERY_MAX_ATTEMPTS = 3
    budget, period = december_budget(make_org())
    with django_capture_on_commit_callbacks(execute=True):
        alert = cross_90(budget, period)

    moment = AlertDelivery.objects.get(alert=alert).next_attempt_at
    with caplog.at_level(logging.WARNING, logger="budgets.services.delivery"):
        assert deliveries_retry_due(now=moment) == 0  # attempt 2
        moment = AlertDelivery.objects.get(alert=alert).next_attempt_at
        assert deliveries_retry_due(now=moment) == 0  # attempt 3: the last

    delivery = AlertDelivery.objects.get(alert=alert)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.GAVE_UP, 3)
    assert delivery.last_error.startswith("ConnectionRefusedError: [Errno 111]")
    [gave_up] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert gave_up.getMessage().startswith(f"Gave up delivering alert {alert.pk} by email after 3 attempts:")

    smtp.start()
    assert deliveries_retry_due(now=moment + dt.timedelta(days=30)) == 0
    assert AlertDelivery.objects.get(pk=delivery.pk).attempts == 3
    assert smtp.received == []


# --- (c) the Slack-compatible webhook ------------------------------------------------------------


def test_webhook_receives_a_json_text_with_the_summary_and_link(webhook, django_capture_on_commit_callbacks) -> None:
    organization = make_org(emails="", webhook_url=webhook.url)
    budget, period = december_budget(organization, emails="")

    with django_capture_on_commit_callbacks(execute=True):
        alert = cross_90(budget, period)

    [delivery] = AlertDelivery.objects.filter(alert=alert)
    assert (delivery.channel, delivery.target) == (DeliveryChannel.WEBHOOK, webhook.url)
    assert (delivery.status, delivery.attempts, delivery.last_error) == (DeliveryStatus.SENT, 1, "")
    [request] = webhook.requests
    assert request["path"] == "/hooks/T000/B000/secret"
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"]) == {
        "text": "[Spendguard] Project Support Bot reached 90% of its monthly budget."
        " Spent: $913.20; Limit: $1,000.00; Used: 91%. " + PROJECT_REPORT
    }


def test_webhook_answering_500_is_a_failure_with_the_status(webhook, django_capture_on_commit_callbacks) -> None:
    webhook.status, webhook.answer = 500, b"no_service"
    organization = make_org(webhook_url=webhook.url)
    budget, period = december_budget(organization)

    with django_capture_on_commit_callbacks(execute=True):
        alert = cross_90(budget, period)

    # E-mail (locmem here) and webhook are separate deliveries: one failing does not hold the other.
    email_delivery = AlertDelivery.objects.get(alert=alert, channel=DeliveryChannel.EMAIL)
    webhook_delivery = AlertDelivery.objects.get(alert=alert, channel=DeliveryChannel.WEBHOOK)
    assert email_delivery.status == DeliveryStatus.SENT
    assert len(mail.outbox) == 1
    assert (webhook_delivery.status, webhook_delivery.attempts) == (DeliveryStatus.FAILED, 1)
    assert webhook_delivery.last_error == "WebhookRejected: HTTP 500 Internal Server Error: no_service"
    assert "secret" not in webhook_delivery.last_error

    webhook.status = 200
    assert deliveries_retry_due(now=webhook_delivery.next_attempt_at) == 1
    assert AlertDelivery.objects.get(pk=webhook_delivery.pk).status == DeliveryStatus.SENT
    assert len(webhook.requests) == 2
    assert len(mail.outbox) == 1  # the sent e-mail is not sent again


# --- (d) no channel ------------------------------------------------------------------------------


def test_alert_without_contacts_or_webhook_has_no_deliveries(caplog, django_capture_on_commit_callbacks) -> None:
    budget, period = december_budget(make_org(emails=""), emails="")
    with (
        caplog.at_level(logging.INFO, logger="budgets.services.delivery"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        alert = cross_90(budget, period)

    assert BudgetAlert.objects.filter(pk=alert.pk).exists()
    assert not AlertDelivery.objects.exists()
    assert f"Alert {alert.pk} has no delivery channel" in caplog.text
    assert mail.outbox == []


# --- (e) the broker is down ----------------------------------------------------------------------


@pytest.fixture
def unreachable_broker():
    """Make a Celery app that publishes for real (not eagerly) to a Redis port nothing listens on the
    current app for the test; ``budgets.tasks.deliver_alert`` (a shared task) resolves through it."""
    from celery import Celery
    from celery._state import get_current_app

    previous = get_current_app()
    app = Celery("unreachable-broker", set_as_current=False)
    app.conf.update(
        broker_url="redis://127.0.0.1:1/0",
        task_always_eager=False,
        broker_connection_timeout=1,
        broker_transport_options={"socket_connect_timeout": 1, "socket_timeout": 1},
    )
    app.set_current()
    yield app
    previous.set_current()
    app.close()


def test_unreachable_broker_leaves_the_delivery_pending_for_the_retry_job(
    caplog, django_capture_on_commit_callbacks, unreachable_broker
) -> None:
    budget, period = december_budget(make_org())
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="budgets.services.delivery"):
        with django_capture_on_commit_callbacks(execute=True):
            alert = cross_90(budget, period)  # on commit: alert_delivery_queue -> the broker refuses
        alert_delivery_queue(alert_id=alert.pk)  # and called directly: still nothing raised
    assert time.monotonic() - started < 5

    delivery = AlertDelivery.objects.get(alert=alert)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 0)
    assert mail.outbox == []
    assert caplog.text.count(f"Could not queue delivery of alert {alert.pk}; the retry job will send it.") == 2

    # The periodic job finds it.
    assert deliveries_retry_due() == 1
    assert AlertDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SENT
    assert mail.outbox[0].subject == "[Spendguard] Project Support Bot reached 90% of its monthly budget"


# --- (f) concurrency on real PostgreSQL ----------------------------------------------------------

ALERTS = 30


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retry_jobs_send_each_delivery_exactly_once(smtp) -> None:
    smtp.handler.delay = 0.01  # each message takes a moment: the two jobs overlap for sure
    budget, period = december_budget(make_org(emails=""), emails="lead@example.com")
    # The mail server is down while the alerts are recorded: every first attempt fails.
    for threshold in range(1, ALERTS + 1):
        cross_90_at(budget, period, threshold)
    assert AlertDelivery.objects.filter(status=DeliveryStatus.FAILED).count() == ALERTS

    smtp.start()
    later = timezone.now() + dt.timedelta(hours=1)
    first, second = run_together([lambda: deliveries_retry_due(now=later), lambda: deliveries_retry_due(now=later)])

    assert first + second == ALERTS
    assert first > 0 and second > 0  # both jobs did work: the race really happened
    subjects = sorted(message["Subject"] for _, message in smtp.received)
    assert len(subjects) == ALERTS
    assert len(set(subjects)) == ALERTS
    assert AlertDelivery.objects.filter(status=DeliveryStatus.SENT, attempts=2).count() == ALERTS


def cross_90_at(budget, period, threshold: int) -> None:
    with transaction.atomic():
        threshold_alert_record(
            budget=budget,
            period=period,
            threshold=threshold,
            spent_nanos=period.spent_nanos,
            limit_nanos=period.limit_nanos,
        )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_delivery_in_flight_is_not_claimed_again_until_its_lease_runs_out(webhook, unreachable_broker) -> None:
    """At least once: while one job is sending, the delivery is nobody else's; a send that outlives
    its lease (as when a worker dies mid-send) is sent again rather than lost."""
    webhook.hold = True  # the first request waits for ``release``; later ones are answered at once
    organization = make_org(emails="", webhook_url=webhook.url)
    budget, period = december_budget(organization, emails="")
    cross_90(budget, period)  # the broker is down: the delivery waits for the retry job
    delivery = AlertDelivery.objects.get()
    now = delivery.next_attempt_at

    results: list[int] = []

    def send() -> None:
        try:
            results.append(deliveries_retry_due(now=now))
        finally:
            connection.close()

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert webhook.arrived.wait(timeout=10)
        assert deliveries_retry_due(now=now) == 0  # leased: not claimed again
        assert len(webhook.requests) == 1
        in_flight = AlertDelivery.objects.get(pk=delivery.pk)
        assert (in_flight.status, in_flight.attempts) == (DeliveryStatus.PENDING, 1)
        assert in_flight.next_attempt_at == now + dt.timedelta(minutes=5)

        # The lease ran out (the first sender looks dead): the delivery is sent again.
        assert deliveries_retry_due(now=now + dt.timedelta(minutes=5)) == 1
        assert len(webhook.requests) == 2
    finally:
        webhook.release.set()
        sender.join(timeout=10)
    assert results == [1]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 2)


# --- money for people ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (1_234_564_999_999, "$1,234.56"),
        (1_234_565_000_000, "$1,234.57"),  # half-up to the cent
        (0, "$0.00"),
        (4_500_000, "$0.0045"),  # under a cent: not shown as $0.00
        (-86_796_000_000, "-$86.80"),
    ],
)
def test_nanos_usd_display(nanos, text) -> None:
    assert nanos_usd_display(nanos) == text
