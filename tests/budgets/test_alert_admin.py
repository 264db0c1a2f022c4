"""The alerts admin: listed with filters, acknowledged and resolved in bulk (audited), read-only."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from budgets.models import AuditAction, AuditEntry, BudgetAlert
from tests.budgets.test_alert_api import alerts  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(db) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_the_list_shows_alerts_and_filters_by_status(admin, alerts):  # noqa: F811
    page = admin.get(reverse("admin:budgets_budgetalert_changelist"))
    open_only = admin.get(reverse("admin:budgets_budgetalert_changelist") + "?status__exact=resolved")

    assert page.status_code == 200
    for alert in alerts.values():
        assert alert.message in page.content.decode()
    assert open_only.status_code == 200
    assert alerts["search"].message not in open_only.content.decode()


def test_bulk_acknowledge_then_resolve(admin, alerts):  # noqa: F811
    url = reverse("admin:budgets_budgetalert_changelist")
    chosen = [alerts["search"].pk, alerts["anomaly"].pk]

    acked = admin.post(url, {"action": "acknowledge", "_selected_action": chosen}, follow=True)
    resolved = admin.post(url, {"action": "resolve", "_selected_action": [alerts["search"].pk]}, follow=True)

    assert "Acknowledged 2 alert(s)." in acked.content.decode()
    assert "Resolved 1 alert(s)." in resolved.content.decode()
    states = dict(BudgetAlert.objects.values_list("pk", "status"))
    assert states[alerts["search"].pk] == "resolved"
    assert states[alerts["anomaly"].pk] == "acknowledged"
    assert states[alerts["support"].pk] == "open"
    search = BudgetAlert.objects.get(pk=alerts["search"].pk)
    assert (search.acknowledged_by.username, search.resolved_by.username) == ("root", "root")
    assert AuditEntry.objects.filter(action=AuditAction.ALERT_ACKNOWLEDGED).count() == 2
    assert AuditEntry.objects.filter(action=AuditAction.ALERT_RESOLVED).count() == 1
    # Still listed (acknowledged and resolved alerts are history).
    assert alerts["search"].message in admin.get(url).content.decode()


def test_an_alert_cannot_be_edited_or_added(admin, alerts):  # noqa: F811
    change = reverse("admin:budgets_budgetalert_change", args=[alerts["search"].pk])

    assert admin.get(change).status_code == 200
    assert admin.post(change, {"message": "edited"}).status_code == 403
    assert admin.get(reverse("admin:budgets_budgetalert_add")).status_code == 403
    assert BudgetAlert.objects.get(pk=alerts["search"].pk).message == alerts["search"].message
