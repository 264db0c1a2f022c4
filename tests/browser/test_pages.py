"""Every page of the demo in a real browser: ``make demo``'s data (the real seed commands), a staff
login through the admin's form, then each report page, two admin changelists and the API docs. Each
page must render with data, log no console error, load every resource from the live server (other
hosts do not resolve, see conftest) without an error status, and leaves a full-page screenshot under
``var/test-artifacts/browser/``.

One test with a subtest per page: the live server needs committed data, which pytest-django flushes
after each test, and seeding the demo takes seconds.
"""

from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from budgets.models import Budget, BudgetAlert
from costs.models import Organization, UsageRecord
from recommendations.models import Recommendation, RecommendationKind

pytestmark = pytest.mark.browser

USERNAME, PASSWORD = "browser", "browser-test-password"
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}


@dataclass
class Demo:
    url: dict[str, str]  # page name -> path
    title: dict[str, str]  # page name -> its <h1>
    budgets: int  # active: the overview's "Budgets by health"
    all_budgets: int  # the admin's changelist
    alerts: int
    recommendations: int
    open_kinds: set[str]  # kinds of the open / accepted recommendations: the savings page lists them


@pytest.fixture
def demo(live_server) -> Demo:
    """The demo organization with 30 days of usage and its budgets, as ``make demo`` seeds it (~3 s)."""
    quiet = {"stdout": StringIO(), "stderr": StringIO()}
    call_command("sync_prices", **quiet)
    call_command("seed_demo", "--base-url", live_server.url, **quiet)
    call_command("seed_demo_recommendations", **quiet)
    call_command("seed_demo_budgets", **quiet)
    get_user_model().objects.create_superuser(USERNAME, "browser@example.com", PASSWORD)

    organization = Organization.objects.get(slug="acme")
    usage = UsageRecord.objects.filter(organization=organization)
    project = organization.projects.get(pk=_busiest(usage, "project"))
    agent = project.agents.get(pk=_busiest(usage.filter(project=project), "agent"))
    # The last finished sprint: two full weeks of spend, whatever the hour the test runs.
    today = timezone.now().astimezone(organization.tzinfo).date()
    sprint = project.sprints.filter(end_date__lt=today).order_by("-start_date").first()
    return Demo(
        url={
            "overview": reverse("reports:overview"),
            "project": reverse("reports:project", args=[organization.slug, project.slug]),
            "sprint": reverse("reports:sprint", args=[organization.slug, project.slug, sprint.slug]),
            "agent": reverse("reports:agent", args=[organization.slug, project.slug, agent.name]),
            "admin-budgets": reverse("admin:budgets_budget_changelist"),
            "admin-alerts": reverse("admin:budgets_budgetalert_changelist"),
            "api-docs": reverse("v1:docs"),
            "savings": reverse("recommendations:report"),
            "admin-recommendations": reverse("admin:recommendations_recommendation_changelist"),
        },
        title={
            "overview": organization.name,
            "project": f"Project {project.name}",
            "sprint": sprint.name,  # the demo names sprints "Sprint 16 Nov – 29 Nov 2026"
            "agent": f"Agent {agent.name}",
            "admin-budgets": "Select budget to change",
            "admin-alerts": "Select budget alert to change",
            "savings": f"Savings opportunities · {organization.name}",
            "admin-recommendations": "Select recommendation to change",
        },
        budgets=Budget.objects.filter(organization=organization, is_active=True).count(),
        all_budgets=Budget.objects.count(),
        alerts=BudgetAlert.objects.count(),
        recommendations=Recommendation.objects.count(),
        open_kinds=set(Recommendation.objects.filter(status__in=["open", "accepted"]).values_list("kind", flat=True)),
    )


def _busiest(usage, field: str) -> int:
    return usage.values(field).annotate(n=Count("id")).order_by("-n")[0][field]


# --- what each page must show -----------------------------------------------------------------


def _texts(driver, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, css)]


def _chart_bars(driver) -> list[float]:
    return driver.execute_script(
        "return [...document.querySelectorAll('svg.chart rect.bar')].map(r => r.getBBox().height)"
    )


def _table_rows(driver, heading: str) -> int:
    """Rows of the table under the <h2> that starts with ``heading`` (its empty-state row excluded)."""
    return driver.execute_script(
        """
        const h2 = [...document.querySelectorAll('h2')].find(h => h.textContent.trim().startsWith(arguments[0]));
        if (!h2) return -1;
        let node = h2.nextElementSibling;
        while (node && !node.querySelector('table')) node = node.nextElementSibling;
        return node ? [...node.querySelectorAll('tbody tr')].filter(tr => !tr.querySelector('td[colspan]')).length : -1;
        """,
        heading,
    )


def check_report(name: str, tables: dict[str, int | str]) -> Callable:
    """The page's heading, a chart with bars, money in the cards and in the tables, and at least so
    many rows in the tables under these headings."""

    def check(driver, demo: Demo) -> None:
        assert _texts(driver, "h1") == [demo.title[name]]
        assert _texts(driver, "header.top .who") == [USERNAME]
        bars = _chart_bars(driver)
        assert len(bars) >= 7 and sum(height > 0 for height in bars) >= 7, bars
        assert _texts(driver, ".card .value")[0].startswith("$"), _texts(driver, ".card")
        for heading, minimum in tables.items():
            if minimum == "budgets":  # every active budget, on the overview
                assert _table_rows(driver, heading) == demo.budgets, heading
            else:
                assert _table_rows(driver, heading) >= minimum, heading
        # Money is rendered as money in every table of figures.
        assert any(cell.startswith("$") for cell in _texts(driver, "td.num")), "no dollar amounts in the tables"

    return check


def check_changelist(name: str, rows: Callable[[Demo], int]) -> Callable:
    def check(driver, demo: Demo) -> None:
        assert _texts(driver, "#content h1") == [demo.title[name]]
        assert len(_texts(driver, "#result_list tbody tr")) == rows(demo) > 0

    return check


def check_api_docs(driver, demo: Demo) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    # Swagger UI builds the page from /api/v1/schema/ after load.
    WebDriverWait(driver, 15).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    assert _texts(driver, ".swagger-ui .info .title")[0].startswith("Spendguard API")
    paths = {
        element.get_attribute("data-path") for element in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert {"/api/v1/usage/", "/api/v1/budget-checks/"} <= paths, paths
    assert not driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .errors-wrapper")


def check_savings(driver, demo: Demo) -> None:
    """The top opportunities: at least four kinds, each row with a saving in dollars and a link to
    the ledger rows it was computed from."""
    assert _texts(driver, "h1") == [demo.title["savings"]]
    assert len(demo.open_kinds) >= 4, demo.open_kinds
    rows = _texts(driver, "table.recommendations tbody tr td:first-child")
    assert set(rows) == {RecommendationKind(kind).label for kind in demo.open_kinds}, rows
    assert all(cell.startswith("$") for cell in _texts(driver, "table.recommendations tbody tr td.num:nth-child(3)"))
    links = _texts(driver, "table.recommendations a[href*='/admin/costs/usagerecord/']")
    assert len(links) == len(rows) and all(link.startswith("Ledger rows (") for link in links), links


PAGES: list[tuple[str, Callable]] = [
    (
        "overview",
        check_report(
            "overview",
            {"Budgets by health": "budgets", "Recent alerts": 1, "Top projects": 4, "Top agents": 10, "Top models": 10},
        ),
    ),
    ("project", check_report("project", {"Budgets": 1, "By agent": 3, "By model": 3})),
    ("sprint", check_report("sprint", {"Budgets": 1, "By agent": 3, "By model": 3})),
    ("agent", check_report("agent", {"Budgets": 1, "By model": 1})),
    ("admin-budgets", check_changelist("admin-budgets", lambda demo: demo.all_budgets)),
    ("admin-alerts", check_changelist("admin-alerts", lambda demo: demo.alerts)),
    ("api-docs", check_api_docs),
    ("savings", check_savings),
    ("admin-recommendations", check_changelist("admin-recommendations", lambda demo: demo.recommendations)),
]


# --- what every page must not do ------------------------------------------------------------------


def console_errors(driver, *, admin: bool = False) -> list[str]:
    """The console's errors since the last call (reading the log empties it). Django's admin declares
    no icon, so on its pages the browser's request for /favicon.ico 404s: not a fault of the page."""
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return [e for e in errors if not (admin and "/favicon.ico - Failed to load resource" in e)]


def resource_problems(driver, base_url: str) -> list[str]:
    """Resources this page loaded from elsewhere than the live server, or that answered >= 400."""
    entries = driver.execute_script(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
        ".map(e => [e.name, e.responseStatus || 0])"
    )
    here = urlsplit(base_url).netloc
    return [
        f"{status} {url}"
        for url, status in entries
        if urlsplit(url).scheme != "data"
        and (urlsplit(url).netloc != here or status >= 400)
        and urlsplit(url).path != "/favicon.ico"  # the admin's, see console_errors()
    ]


def login(driver, base_url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}{reverse('admin:login')}?next={reverse('reports:overview')}")
    driver.find_element(By.ID, "id_username").send_keys(USERNAME)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    assert urlsplit(driver.current_url).path == reverse("reports:overview"), driver.current_url


# --- the test -------------------------------------------------------------------------------------


def test_demo_pages_render_with_data_and_without_errors(live_server, demo, chrome, screenshot, subtests):
    login(chrome, live_server.url)
    assert console_errors(chrome, admin=True) == []

    for name, check in PAGES:
        with subtests.test(page=name):
            chrome.get(f"{live_server.url}{demo.url[name]}")
            try:
                check(chrome, demo)
            finally:  # also when a check fails: the screenshot shows why
                shot = screenshot(chrome, name)
            assert console_errors(chrome, admin=name.startswith("admin")) == [], f"console errors on {name} ({shot})"
            assert resource_problems(chrome, live_server.url) == []

    with subtests.test(page="overview on a phone"):
        chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
        try:
            chrome.get(f"{live_server.url}{demo.url['overview']}")
            shot = screenshot(chrome, "overview-phone")
            # Not window.innerWidth: in mobile emulation Chromium zooms out to fit content that overflows,
            # and innerWidth grows with it. clientWidth stays the device's width.
            page, viewport = chrome.execute_script(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert viewport == PHONE["width"]
            assert page <= viewport + 1, f"the page scrolls sideways at {viewport} px: {page} px wide ({shot})"
            assert console_errors(chrome) == []
        finally:
            chrome.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
