"""The recommendations admin: listed with their savings as money, accepted / marked implemented /
measured / rejected (with a reason, on an intermediate page) in bulk, never added by hand; and the
quality tiers, edited in the list."""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from freezegun import freeze_time

from recommendations.models import ModelTier, Recommendation, RecommendationStatus
from tests.recommendations.conftest import IN_WINDOW, NOW, ledger_row
from tests.recommendations.factories import RecommendationFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:recommendations_recommendation_changelist")


@pytest.fixture
def admin(db) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def recs(agent):
    return {
        "planner": RecommendationFactory(
            agent=agent,
            title="planner: gpt-4o → gpt-4o-mini",
            estimated_monthly_saving_usd=Decimal("1234.5"),
            priority_score=Decimal("1234.5"),
        ),
        "cache": RecommendationFactory(agent=agent, title="planner: cache repeated prompts"),
    }


def act(admin: Client, action: str, recs: list[Recommendation], **data):
    return admin.post(CHANGELIST, {"action": action, "_selected_action": [r.pk for r in recs], **data}, follow=True)


def states() -> dict[str, tuple]:
    return {rec.title: (rec.status, rec.status_reason) for rec in Recommendation.objects.all()}


def test_the_list_shows_recommendations_with_savings_as_money(admin, recs):
    page = admin.get(CHANGELIST)

    assert page.status_code == 200
    html = page.content.decode()
    assert "planner: gpt-4o → gpt-4o-mini" in html and "planner: cache repeated prompts" in html
    assert "$1,234.50" in html and "$10.00" in html
    assert "agent planner" in html
    # The highest priority first.
    assert html.index("gpt-4o → gpt-4o-mini") < html.index("cache repeated prompts")


def test_accept_in_bulk_and_again_changes_nothing(admin, recs):
    with freeze_time(NOW + dt.timedelta(hours=1)):
        accepted = act(admin, "accept", list(recs.values()))
    with freeze_time(NOW + dt.timedelta(hours=2)):
        again = act(admin, "accept", [recs["planner"]])

    assert "Accepted 2 recommendation(s)." in accepted.content.decode()
    assert "Accepted 1 recommendation(s)." in again.content.decode()
    planner = Recommendation.objects.get(pk=recs["planner"].pk)
    assert (planner.status, planner.status_changed_by.username, planner.status_changed_by_label) == (
        "accepted",
        "root",
        "root",
    )
    assert planner.status_changed_at == NOW + dt.timedelta(hours=1)
    assert Recommendation.objects.get(pk=recs["cache"].pk).status == "accepted"


def test_mark_implemented_then_measure_realized(admin, recs, agent):
    planner = recs["planner"]
    for _ in range(4):
        ledger_row(agent, cost="0.01", occurred_at=IN_WINDOW)
    for hours in (3, 30):
        ledger_row(agent, cost="0.004", model="gpt-4o-mini", occurred_at=NOW + dt.timedelta(hours=hours))
    with freeze_time(NOW):
        implemented = act(admin, "mark_implemented", [planner])
    with freeze_time(NOW + dt.timedelta(days=2)):
        measured = act(admin, "measure_realized", [planner])

    assert "Marked implemented 1 recommendation(s)." in implemented.content.decode()
    assert "Measured 1 recommendation(s)." in measured.content.decode()
    planner.refresh_from_db()
    assert (planner.status, planner.implemented_at) == ("implemented", NOW)
    # (0.01 - 0.004) x 2 requests x 30 / 2 days = $0.18 a month.
    assert planner.realized_monthly_saving_usd == Decimal("0.18")
    assert "$0.18" in measured.content.decode()


def test_measuring_what_is_not_implemented_warns_and_writes_nothing(admin, recs):
    response = act(admin, "measure_realized", [recs["planner"]])

    html = response.content.decode()
    assert f"{recs['planner'].pk}: Only an implemented recommendation has realized savings." in html
    assert 'class="warning"' in html
    assert "Measured " not in html
    assert Recommendation.objects.get(pk=recs["planner"].pk).realized_measured_at is None


def test_an_impossible_move_warns_per_recommendation(admin, recs):
    recs["cache"].status, recs["cache"].status_reason = RecommendationStatus.REJECTED, "Too risky."
    recs["cache"].save()

    html = act(admin, "accept", list(recs.values())).content.decode()

    assert "Accepted 1 recommendation(s)." in html
    assert f"{recs['cache'].pk}: A recommendation that is rejected cannot be marked accepted." in html
    assert states()["planner: cache repeated prompts"] == ("rejected", "Too risky.")


def test_reject_asks_for_a_reason_then_rejects(admin, recs):
    chosen = list(recs.values())

    asked = admin.post(CHANGELIST, {"action": "reject", "_selected_action": [r.pk for r in chosen]})
    blank = admin.post(
        CHANGELIST, {"action": "reject", "apply": "1", "reason": "", "_selected_action": [r.pk for r in chosen]}
    )

    assert asked.status_code == blank.status_code == 200
    html = asked.content.decode()
    assert "Say why these recommendations are rejected." in html
    assert "<li>planner: gpt-4o → gpt-4o-mini (Open)</li>" in html
    assert '<textarea name="reason"' in html
    for rec in chosen:
        assert f'<input type="hidden" name="_selected_action" value="{rec.pk}">' in html
    assert "This field is required." in blank.content.decode()
    assert set(states().values()) == {("open", "")}

    rejected = act(admin, "reject", chosen, apply="1", reason="The team keeps gpt-4o for quality.")

    assert rejected.redirect_chain == [(CHANGELIST, 302)]
    assert "Rejected 2 recommendation(s)." in rejected.content.decode()
    assert states() == {
        "planner: gpt-4o → gpt-4o-mini": ("rejected", "The team keeps gpt-4o for quality."),
        "planner: cache repeated prompts": ("rejected", "The team keeps gpt-4o for quality."),
    }
    assert Recommendation.objects.get(pk=recs["planner"].pk).status_changed_by.username == "root"


def test_reject_of_every_match_carries_every_match_to_the_reason_page(admin, recs):
    """ "Select all N" (``select_across``) checks only the page's boxes; the reason page must still
    reject every row it lists."""
    asked = admin.post(
        CHANGELIST, {"action": "reject", "select_across": "1", "_selected_action": [recs["planner"].pk]}
    ).content.decode()

    for rec in recs.values():
        assert f'<input type="hidden" name="_selected_action" value="{rec.pk}">' in asked
    act(admin, "reject", [recs["planner"], recs["cache"]], apply="1", reason="Not now.")
    assert set(states().values()) == {("rejected", "Not now.")}


def test_a_rejected_recommendation_cannot_lose_its_reason_in_the_change_form(admin, recs):
    rec = recs["planner"]
    act(admin, "reject", [rec], apply="1", reason="Quality.")
    change = reverse("admin:recommendations_recommendation_change", args=[rec.pk])

    blanked = admin.post(change, {"status_reason": ""})
    edited = admin.post(change, {"status_reason": "Quality drops on long plans."})

    assert blanked.status_code == 200  # the form again, with the error
    assert "A rejected recommendation needs a reason." in blanked.content.decode()
    assert edited.status_code == 302
    assert states()["planner: gpt-4o → gpt-4o-mini"] == ("rejected", "Quality drops on long plans.")


def test_recommendations_cannot_be_added_by_hand(admin, recs):
    assert admin.get(reverse("admin:recommendations_recommendation_add")).status_code == 403
    assert (
        admin.get(reverse("admin:recommendations_recommendation_change", args=[recs["planner"].pk])).status_code == 200
    )
    assert reverse("admin:recommendations_recommendation_add") not in admin.get(CHANGELIST).content.decode()


def test_model_tiers_are_listed_and_edited_in_the_list(admin):
    mini = ModelTier.objects.create(model="gpt-4o-mini", family="fast")
    haiku = ModelTier.objects.create(model="claude-haiku-4-5", family="fast", note="vetted on support")
    url = reverse("admin:recommendations_modeltier_changelist")

    page = admin.get(url)
    saved = admin.post(
        url,
        {
            "form-TOTAL_FORMS": "2",
            "form-INITIAL_FORMS": "2",
            "form-0-id": str(haiku.pk),
            "form-0-family": "fast",
            "form-0-note": "vetted on support",
            "form-1-id": str(mini.pk),
            "form-1-family": "small",
            "form-1-note": "cheap",
            "_save": "Save",
        },
    )

    assert page.status_code == 200
    html = page.content.decode()
    assert "gpt-4o-mini" in html and "claude-haiku-4-5" in html and "vetted on support" in html
    assert saved.status_code == 302
    assert list(ModelTier.objects.values_list("model", "family", "note")) == [
        ("claude-haiku-4-5", "fast", "vetted on support"),
        ("gpt-4o-mini", "small", "cheap"),
    ]
