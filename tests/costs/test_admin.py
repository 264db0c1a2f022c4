"""The operator admin, driven through real admin requests as a logged-in superuser."""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from costs.models import Agent, AgentStatus, ApiKey, CostSource, Organization, Sprint, UsageRecord
from pricing.models import ModelPrice, PriceSource
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

pytestmark = pytest.mark.django_db

SECRET_RE = re.compile(r"sg_[A-Za-z0-9_\-]{40,}")


@pytest.fixture
def staff_client() -> Client:
    user = get_user_model().objects.create_superuser("operator", "operator@example.com", "unused-password")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def sprint(project):
    return SprintFactory(
        project=project, name="Sprint 1", slug="s1", start_date=dt.date(2026, 3, 2), end_date=dt.date(2026, 3, 15)
    )


@pytest.fixture
def price(db):
    return ModelPrice.objects.create(
        model="gpt-4o",
        provider="openai",
        source=PriceSource.LITELLM,
        input_usd_per_mtok=Decimal("2.5"),
        output_usd_per_mtok=Decimal("10"),
        cache_read_usd_per_mtok=Decimal("1.25"),
        effective_from=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    )


def _usage(*, agent, sprint=None, request_id, model="gpt-4o", price=None, cost=None, **extra) -> UsageRecord:
    return UsageRecord.objects.create(
        organization=agent.project.organization,
        project=agent.project,
        sprint=sprint,
        agent=agent,
        request_id=request_id,
        model=model,
        provider="openai",
        prompt_tokens=1200,
        completion_tokens=300,
        occurred_at=dt.datetime(2026, 3, 3, 10, 0, tzinfo=dt.UTC),
        cost_usd=cost,
        computed_cost_usd=cost,
        cost_source=CostSource.COMPUTED if cost is not None else CostSource.UNPRICED,
        price=price,
        **extra,
    )


@pytest.fixture
def ledger(agent, sprint, price):
    priced = _usage(
        agent=agent, sprint=sprint, request_id="req-priced-1", price=price, cost=Decimal("0.006"), end_user="u-42"
    )
    unpriced = _usage(agent=agent, sprint=sprint, request_id="req-unpriced-1", model="acme-finetune-v2")
    return priced, unpriced


# --- every admin renders ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_name", "expected"),
    [
        ("organization", "Europe/Berlin"),
        ("project", "search"),
        ("sprint", "Sprint 1"),
        ("agent", "planner"),
        ("apikey", "ci key"),
        ("usagerecord", "req-priced-1"),
    ],
)
def test_changelist_and_change_page_render_with_data(
    staff_client, organization, ledger, make_key, model_name, expected
):
    Organization.objects.filter(pk=organization.pk).update(timezone="Europe/Berlin")
    make_key(organization=organization, name="ci key")
    model = {
        "organization": Organization,
        "project": organization.projects.model,
        "sprint": Sprint,
        "agent": Agent,
        "apikey": ApiKey,
        "usagerecord": UsageRecord,
    }[model_name]
    obj = model.objects.order_by("pk").first()

    changelist = staff_client.get(reverse(f"admin:costs_{model_name}_changelist"))
    change = staff_client.get(reverse(f"admin:costs_{model_name}_change", args=[obj.pk]))

    assert changelist.status_code == 200
    assert expected in changelist.content.decode()
    assert change.status_code == 200


def test_ledger_change_page_shows_every_field_and_links_the_price(staff_client, ledger, price):
    priced, _ = ledger

    page = staff_client.get(reverse("admin:costs_usagerecord_change", args=[priced.pk])).content.decode()

    for label in ["Request id", "Cached tokens", "Reasoning tokens", "Computed cost usd", "Provider cost usd", "Tags"]:
        assert label in page
    assert "0.006" in page
    assert reverse("admin:pricing_modelprice_change", args=[price.pk]) in page
    # View-only: no save buttons, no form inputs for ledger fields.
    assert 'name="_save"' not in page
    assert 'name="request_id"' not in page


def test_ledger_lists_unpriced_rows_by_cost_source(staff_client, ledger):
    response = staff_client.get(reverse("admin:costs_usagerecord_changelist"), {"cost_source__exact": "unpriced"})

    page = response.content.decode()
    assert response.status_code == 200
    assert "req-unpriced-1" in page
    assert "req-priced-1" not in page
    assert "1 usage record" in page


def test_ledger_search_by_request_id_model_and_end_user(staff_client, ledger):
    url = reverse("admin:costs_usagerecord_changelist")

    by_user = staff_client.get(url, {"q": "u-42"}).content.decode()
    by_model = staff_client.get(url, {"q": "acme-finetune"}).content.decode()

    assert "req-priced-1" in by_user and "req-unpriced-1" not in by_user
    assert "req-unpriced-1" in by_model and "req-priced-1" not in by_model


# --- the ledger is read-only ----------------------------------------------------------------------


def test_ledger_rows_cannot_be_added_changed_or_deleted(staff_client, ledger):
    priced, _ = ledger
    add_url = reverse("admin:costs_usagerecord_add")
    change_url = reverse("admin:costs_usagerecord_change", args=[priced.pk])
    delete_url = reverse("admin:costs_usagerecord_delete", args=[priced.pk])

    assert staff_client.get(add_url).status_code == 403
    assert staff_client.post(add_url, {"request_id": "forged", "model": "gpt-4o"}).status_code == 403
    assert staff_client.post(change_url, {"request_id": "changed", "model": "x"}).status_code == 403
    assert staff_client.get(delete_url).status_code == 403
    assert staff_client.post(delete_url, {"post": "yes"}).status_code == 403
    bulk = staff_client.post(
        reverse("admin:costs_usagerecord_changelist"),
        {"action": "delete_selected", "_selected_action": [priced.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert sorted(UsageRecord.objects.values_list("request_id", "model")) == [
        ("req-priced-1", "gpt-4o"),
        ("req-unpriced-1", "acme-finetune-v2"),
    ]


def test_ledger_changelist_offers_no_add_or_delete(staff_client, ledger):
    page = staff_client.get(reverse("admin:costs_usagerecord_changelist")).content.decode()

    assert reverse("admin:costs_usagerecord_add") not in page
    assert "delete_selected" not in page


# --- API keys -------------------------------------------------------------------------------------


def test_key_created_in_admin_is_stored_hashed_and_shown_once(staff_client, organization, project):
    response = staff_client.post(
        reverse("admin:costs_apikey_add"),
        {"name": "deploy bot", "organization": organization.pk, "project": project.pk, "agent": ""},
        follow=True,
    )

    assert response.status_code == 200
    shown = SECRET_RE.findall(response.content.decode())
    assert len(shown) == 1
    secret = shown[0]
    key = ApiKey.objects.get()
    assert (key.name, key.organization, key.project, key.agent, key.scope) == (
        "deploy bot",
        organization,
        project,
        None,
        "project",
    )
    assert key.key_hash == ApiKey.hash_secret(secret)
    assert key.prefix == secret[:10]
    assert key.created_by.username == "operator"
    assert "will not be shown again" in response.content.decode()
    assert secret not in str(ApiKey.objects.values().get())
    # Never again: not on the list, not on the key's page.
    for url in (reverse("admin:costs_apikey_changelist"), reverse("admin:costs_apikey_change", args=[key.pk])):
        page = staff_client.get(url).content.decode()
        assert secret not in page
        assert key.prefix in page
        assert key.key_hash not in page


def test_agent_key_takes_its_project_in_the_add_form(staff_client, organization, agent):
    staff_client.post(
        reverse("admin:costs_apikey_add"),
        {"name": "agent key", "organization": organization.pk, "project": "", "agent": agent.pk},
    )

    key = ApiKey.objects.get()
    assert (key.project, key.agent, key.scope) == (agent.project, agent, "agent")


def test_key_add_form_refuses_a_foreign_project(staff_client, organization):
    foreign = ProjectFactory(organization=OrganizationFactory(slug="other"))

    response = staff_client.post(
        reverse("admin:costs_apikey_add"),
        {"name": "bad", "organization": organization.pk, "project": foreign.pk, "agent": ""},
    )

    assert response.status_code == 200
    assert "The project does not belong to this organization." in response.content.decode()
    assert not SECRET_RE.search(response.content.decode())
    assert not ApiKey.objects.exists()


def test_key_scope_and_secret_cannot_be_edited(staff_client, organization, project, make_key):
    key, _ = make_key(organization=organization, name="old name")
    original_hash = key.key_hash

    staff_client.post(
        reverse("admin:costs_apikey_change", args=[key.pk]),
        {"name": "new name", "organization": OrganizationFactory(slug="x").pk, "project": project.pk, "key_hash": "0"},
    )

    key.refresh_from_db()
    assert (key.name, key.organization, key.project, key.key_hash) == ("new name", organization, None, original_hash)


def test_revoke_action(staff_client, organization, make_key):
    revoked, _ = make_key(organization=organization, name="leaked")
    kept, _ = make_key(organization=organization, name="kept")

    response = staff_client.post(
        reverse("admin:costs_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [revoked.pk]},
        follow=True,
    )

    assert "Revoked 1 API key(s)." in response.content.decode()
    revoked.refresh_from_db()
    kept.refresh_from_db()
    assert revoked.revoked_at is not None
    assert kept.revoked_at is None
    listed = staff_client.get(reverse("admin:costs_apikey_changelist"), {"state": "revoked"}).content.decode()
    assert "leaked" in listed and "kept" not in listed


# --- agents ---------------------------------------------------------------------------------------


def test_pause_and_resume_actions(staff_client, project):
    first, second = AgentFactory(project=project, name="a1"), AgentFactory(project=project, name="a2")
    url = reverse("admin:costs_agent_changelist")

    paused = staff_client.post(url, {"action": "pause_agents", "_selected_action": [first.pk]}, follow=True)

    assert "Paused 1 agent(s)." in paused.content.decode()
    assert dict(Agent.objects.values_list("name", "status")) == {"a1": "paused", "a2": "active"}

    staff_client.post(url, {"action": "resume_agents", "_selected_action": [first.pk, second.pk]})

    assert set(Agent.objects.values_list("status", flat=True)) == {AgentStatus.ACTIVE}


def test_pause_button_on_the_change_page(staff_client, agent):
    change_url = reverse("admin:costs_agent_change", args=[agent.pk])
    pause_url = reverse("admin:costs_agent_pause", args=[agent.pk])
    assert pause_url in staff_client.get(change_url).content.decode()

    assert staff_client.get(pause_url).status_code == 405
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE

    response = staff_client.post(pause_url)

    assert response.status_code == 302 and response.url == change_url
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PAUSED
    assert reverse("admin:costs_agent_resume", args=[agent.pk]) in staff_client.get(change_url).content.decode()


def test_agent_status_is_not_a_raw_form_field(staff_client, agent):
    staff_client.post(
        reverse("admin:costs_agent_change", args=[agent.pk]),
        {"project": agent.project.pk, "name": "planner", "status": "paused", "model_override": "gpt-4o-mini"},
    )

    agent.refresh_from_db()
    assert (agent.status, agent.model_override) == (AgentStatus.ACTIVE, "gpt-4o-mini")


def test_agent_changelist_filters_by_status(staff_client, project):
    AgentFactory(project=project, name="busy-bee", status=AgentStatus.ACTIVE)
    AgentFactory(project=project, name="sleepy", status=AgentStatus.PAUSED)

    page = staff_client.get(reverse("admin:costs_agent_changelist"), {"status__exact": "paused"}).content.decode()

    assert "sleepy" in page and "busy-bee" not in page


# --- sprints: overlap is a form error, on every path ----------------------------------------------


def test_overlapping_sprint_is_a_form_error_in_the_sprint_admin(staff_client, sprint):
    response = staff_client.post(
        reverse("admin:costs_sprint_add"),
        {
            "project": sprint.project.pk,
            "name": "Sprint 2",
            "slug": "s2",
            "start_date": "2026-03-15",
            "end_date": "2026-03-28",
        },
    )

    assert response.status_code == 200
    assert "Overlaps sprint &#x27;s1&#x27; of the same project" in response.content.decode()
    assert list(Sprint.objects.values_list("slug", flat=True)) == ["s1"]


def _project_form(project, sprints: list[dict], initial_sprints: int = 0) -> dict:
    data = {
        "organization": project.organization.pk,
        "name": project.name,
        "slug": project.slug,
        "sprints-TOTAL_FORMS": len(sprints),
        "sprints-INITIAL_FORMS": initial_sprints,
        "agents-TOTAL_FORMS": 0,
        "agents-INITIAL_FORMS": 0,
    }
    for index, values in enumerate(sprints):
        data.update({f"sprints-{index}-{key}": value for key, value in values.items()})
        data[f"sprints-{index}-project"] = project.pk
    return data


def test_overlapping_sprint_is_a_form_error_in_the_project_inline(staff_client, sprint):
    project = sprint.project
    data = _project_form(
        project,
        [
            {"id": sprint.pk, "name": "Sprint 1", "slug": "s1", "start_date": "2026-03-02", "end_date": "2026-03-15"},
            {"name": "Sprint 2", "slug": "s2", "start_date": "2026-03-10", "end_date": "2026-03-23"},
        ],
        initial_sprints=1,
    )

    response = staff_client.post(reverse("admin:costs_project_change", args=[project.pk]), data)

    assert response.status_code == 200
    assert "Overlaps sprint &#x27;s1&#x27; of the same project" in response.content.decode()
    assert list(Sprint.objects.values_list("slug", flat=True)) == ["s1"]


def test_two_new_overlapping_sprints_in_one_submission_are_refused(staff_client, project):
    data = _project_form(
        project,
        [
            {"name": "Sprint A", "slug": "a", "start_date": "2026-04-01", "end_date": "2026-04-14"},
            {"name": "Sprint B", "slug": "b", "start_date": "2026-04-14", "end_date": "2026-04-27"},
        ],
    )

    response = staff_client.post(reverse("admin:costs_project_change", args=[project.pk]), data)

    assert response.status_code == 200
    assert "Sprints &#x27;a&#x27; and &#x27;b&#x27; overlap" in response.content.decode()
    assert not Sprint.objects.exists()


def test_adjacent_sprints_are_saved_through_the_inline(staff_client, project):
    data = _project_form(
        project,
        [
            {"name": "Sprint A", "slug": "a", "start_date": "2026-04-01", "end_date": "2026-04-14"},
            {"name": "Sprint B", "slug": "b", "start_date": "2026-04-15", "end_date": "2026-04-28"},
        ],
    )

    response = staff_client.post(reverse("admin:costs_project_change", args=[project.pk]), data)

    assert response.status_code == 302
    assert list(Sprint.objects.values_list("slug", "start_date")) == [
        ("a", dt.date(2026, 4, 1)),
        ("b", dt.date(2026, 4, 15)),
    ]


# --- organizations ----------------------------------------------------------------------------------


def test_organization_time_zone_is_chosen_from_real_zones(staff_client):
    url = reverse("admin:costs_organization_add")
    base = {"name": "Globex", "slug": "globex", "projects-TOTAL_FORMS": 0, "projects-INITIAL_FORMS": 0}

    bad = staff_client.post(url, {**base, "timezone": "Mars/Olympus"})
    good = staff_client.post(url, {**base, "timezone": "America/New_York"})

    assert bad.status_code == 200 and "Select a valid choice" in bad.content.decode()
    assert good.status_code == 302
    assert Organization.objects.get(slug="globex").timezone == "America/New_York"


def test_staff_without_permissions_cannot_see_the_ledger(db, ledger):
    user = get_user_model().objects.create_user("viewer", password="unused", is_staff=True)
    client = Client()
    client.force_login(user)

    assert client.get(reverse("admin:costs_usagerecord_changelist")).status_code == 403


@pytest.mark.postgres
def test_unfiltered_ledger_list_uses_the_planner_estimate_for_huge_tables(staff_client, ledger):
    from django.db import connection

    with connection.cursor() as cursor:  # rolled back with the test transaction
        cursor.execute("UPDATE pg_class SET reltuples = 2500000 WHERE oid = 'costs_usagerecord'::regclass")
    url = reverse("admin:costs_usagerecord_changelist")

    unfiltered = staff_client.get(url).content.decode()
    filtered = staff_client.get(url, {"status__exact": "success"}).content.decode()

    assert "2500000 usage records" in unfiltered
    assert "2 usage records" in filtered


def test_parents_are_fixed_once_created(staff_client, organization, project, agent, sprint):
    other_org = OrganizationFactory(slug="other")
    other_project = ProjectFactory(organization=organization, slug="elsewhere")
    no_inlines = {"sprints-TOTAL_FORMS": 0, "sprints-INITIAL_FORMS": 0, "agents-TOTAL_FORMS": 0}

    staff_client.post(
        reverse("admin:costs_project_change", args=[project.pk]),
        {"organization": other_org.pk, "name": "Renamed", "slug": "search", **no_inlines, "agents-INITIAL_FORMS": 0},
    )
    staff_client.post(
        reverse("admin:costs_agent_change", args=[agent.pk]),
        {"project": other_project.pk, "name": "planner", "model_override": "gpt-4o-mini"},
    )
    staff_client.post(
        reverse("admin:costs_sprint_change", args=[sprint.pk]),
        {
            "project": other_project.pk,
            "name": "Sprint One",
            "slug": "s1",
            "start_date": "2026-03-02",
            "end_date": "2026-03-15",
        },
    )

    project.refresh_from_db()
    agent.refresh_from_db()
    sprint.refresh_from_db()
    assert (project.name, project.organization) == ("Renamed", organization)
    assert (agent.model_override, agent.project) == ("gpt-4o-mini", project)
    assert (sprint.name, sprint.project) == ("Sprint One", project)
