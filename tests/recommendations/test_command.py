"""``manage.py generate_recommendations``: runs generation for one organization (or all) and prints
what changed; an unknown slug is an error."""

import io

import pytest
from django.core.management import CommandError, call_command

from recommendations.models import Recommendation, RecommendationStatus
from tests.factories import OrganizationFactory
from tests.recommendations.factories import RecommendationFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("generate_recommendations", *args, stdout=out)
    return out.getvalue()


def test_one_organization_with_an_empty_ledger(org):
    OrganizationFactory(slug="globex")

    output = run("--organization", "acme")

    assert output == "acme: 0 new, 0 refreshed, 0 reopened, 0 expired; 0 open worth $0.00 a month.\n"
    assert not Recommendation.objects.exists()


def test_every_organization_by_default(org):
    OrganizationFactory(slug="globex")

    assert run() == (
        "acme: 0 new, 0 refreshed, 0 reopened, 0 expired; 0 open worth $0.00 a month.\n"
        "globex: 0 new, 0 refreshed, 0 reopened, 0 expired; 0 open worth $0.00 a month.\n"
    )


def test_what_is_no_longer_found_expires_and_decided_rows_stay(org, agent):
    gone = RecommendationFactory(agent=agent)
    accepted = RecommendationFactory(agent=agent, status=RecommendationStatus.ACCEPTED)

    output = run("--organization", "acme")

    assert output == "acme: 0 new, 0 refreshed, 0 reopened, 1 expired; 0 open worth $0.00 a month.\n"
    gone.refresh_from_db()
    accepted.refresh_from_db()
    assert (gone.status, gone.status_changed_by_label) == ("expired", "generator")
    assert gone.status_reason.startswith("Not found in the 30 days up to ")
    assert accepted.status == "accepted"


def test_an_unknown_organization_is_an_error(org):
    with pytest.raises(CommandError) as error:
        run("--organization", "nope")

    assert str(error.value) == "No organization with slug 'nope'."
