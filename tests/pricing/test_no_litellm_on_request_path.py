"""Web processes never import litellm (seconds and hundreds of MB): only sync_prices and tests do.

A fresh interpreter sets Django up the way a web worker does, imports the URLconf, the WSGI app,
the admin and every app's request-path modules, answers a quote request against the test
database, and must end without ``litellm`` in ``sys.modules``.
"""

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal as D
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from pricing.models import ModelPrice

PROBE = r"""
import importlib, importlib.util, json, os, sys, types

import django

django.setup()

from django.apps import apps
from django.contrib import admin

admin.autodiscover()
import config.urls  # noqa: F401
import config.wsgi  # noqa: F401

imported = []
for app in apps.get_app_configs():
    if app.name not in ("pricing", "costs", "budgets", "recommendations"):
        continue
    for sub in ("admin", "api.urls", "api.views", "urls", "views", "selectors", "services", "tasks"):
        name = f"{app.name}.{sub}"
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            importlib.import_module(name)
            imported.append(name)

from django.urls import resolve
from rest_framework.test import APIRequestFactory, force_authenticate

match = resolve("/api/v1/pricing/quote/")
quote = None
if os.environ.get("PROBE_DATABASE") == "1":
    body = {"model": "probe-model", "prompt_tokens": 1000, "completion_tokens": 10}
    request = APIRequestFactory().post("/api/v1/pricing/quote/", body, format="json")
    force_authenticate(request, user=types.SimpleNamespace(is_authenticated=True))
    response = match.func(request)
    response.render()
    quote = json.loads(response.content)
else:
    from pricing.calculator import Rates, Usage, cost_of
    from decimal import Decimal

    quote = {"cost_usd": str(cost_of(Rates(input=Decimal(2), output=Decimal(8)), Usage(1000, 10)).total_usd)}
print(json.dumps({
    "litellm": sorted(m for m in sys.modules if m == "litellm" or m.startswith("litellm.")),
    "imported": imported,
    "view": match.func.view_class.__name__,
    "quote": quote,
}))
"""


@pytest.mark.django_db(transaction=True)
def test_request_path_never_imports_litellm() -> None:
    price = ModelPrice.objects.create(
        model="probe-model",
        input_usd_per_mtok=D(2),
        output_usd_per_mtok=D(8),
        effective_from=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "PROBE_DATABASE": "0"}
    env.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
    db = connection.settings_dict
    if connection.vendor == "postgresql":  # the probe talks to this test database
        password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        env["PROBE_DATABASE"] = "1"
    elif settings.SPENDGUARD_REQUIRE_SERVICES:
        pytest.fail("CI runs this against PostgreSQL")

    completed = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120
    )

    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["litellm"] == []
    assert {"pricing.admin", "pricing.api.views", "pricing.selectors", "pricing.services", "costs.api.views"} <= set(
        result["imported"]
    )
    assert result["view"] == "QuoteApi"
    # 1,000 x 2 + 10 x 8 per 1M tokens
    if env["PROBE_DATABASE"] == "1":
        assert result["quote"] == {
            "model": "probe-model",
            "price_id": price.pk,
            "cost_usd": "0.00208",
            "input_cost_usd": "0.002",
            "cached_input_cost_usd": "0",
            "cache_creation_cost_usd": "0",
            "output_cost_usd": "0.00008",
            "priced": True,
        }
    else:
        assert result["quote"] == {"cost_usd": "0.00208"}
