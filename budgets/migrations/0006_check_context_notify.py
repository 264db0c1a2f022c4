"""The check context triggers also ``NOTIFY spendguard_check_context, '<organization id>'``: web
processes listening for it forget what they cached for that organization as soon as a change commits
(``budgets.services.context_listener``, ADR 0008). PostgreSQL only, like migration 0003."""

import importlib

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION budgets_check_context_bump() RETURNS trigger AS $$
DECLARE
    rec jsonb;
    org bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        rec := to_jsonb(OLD);
    ELSE
        rec := to_jsonb(NEW);
    END IF;
    -- TG_ARGV[0]: how this table's rows lead to their organization.
    IF TG_ARGV[0] = 'id' THEN
        org := (rec ->> 'id')::bigint;
    ELSIF TG_ARGV[0] = 'organization_id' THEN
        org := (rec ->> 'organization_id')::bigint;
    ELSIF TG_ARGV[0] = 'project_id' THEN
        SELECT organization_id INTO org FROM costs_project WHERE id = (rec ->> 'project_id')::bigint;
    ELSIF TG_ARGV[0] = 'budget_id' THEN
        SELECT organization_id INTO org FROM budgets_budget WHERE id = (rec ->> 'budget_id')::bigint;
    END IF;
    IF org IS NOT NULL THEN
        INSERT INTO budgets_checkcontextversion (organization_id, version) VALUES (org, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = budgets_checkcontextversion.version + 1;
        -- Delivered at commit; several in one transaction with the same payload arrive once.
        PERFORM pg_notify('spendguard_check_context', org::text);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        previous = importlib.import_module("budgets.migrations.0003_check_context_version")
        schema_editor.execute(previous.CREATE, params=None)


class Migration(migrations.Migration):
    dependencies = [("budgets", "0005_period_spent_version")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
