"""The check context version (ADR 0003, "Check context cache"): a counter per organization that
PostgreSQL triggers bump whenever a row a budget check reads about that organization changes.

Triggers rather than calls in services: the admin, shells and other clients change these tables
too, and a change that forgets to bump would let a process keep checking against a stale picture
(an agent paused in the admin still allowed). Only the columns a check reads count: spend counters,
``last_used_at`` and other bookkeeping updates do not bump. SQLite, the embedded default, has no
triggers and the check does not cache there.
"""

from django.db import migrations, models

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
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""

# (table, how to find the organization, the columns whose change matters on UPDATE (None: any),
# whether inserts and deletes matter)
WATCHED = [
    ("costs_organization", "id", "timezone, slug", False),
    ("costs_project", "organization_id", "organization_id, slug", True),
    ("costs_sprint", "project_id", None, True),
    ("costs_agent", "project_id", None, True),
    ("costs_apikey", "organization_id", "revoked_at, organization_id, project_id, agent_id", True),
    ("budgets_budget", "organization_id", None, True),
    # Counters and limits are read fresh by the reservation statement itself.
    ("budgets_budgetperiod", "budget_id", "budget_id, starts_at, ends_at", True),
]


def _triggers(table: str, path: str, columns: str | None, inserts_and_deletes: bool) -> str:
    if columns is None:
        changed = "OLD.* IS DISTINCT FROM NEW.*"
    else:
        cols = [c.strip() for c in columns.split(",")]
        changed = f"({', '.join('OLD.' + c for c in cols)}) IS DISTINCT FROM ({', '.join('NEW.' + c for c in cols)})"
    sql = (
        f"CREATE TRIGGER {table}_check_context_update AFTER UPDATE ON {table} FOR EACH ROW "
        f"WHEN ({changed}) EXECUTE FUNCTION budgets_check_context_bump('{path}');\n"
    )
    if inserts_and_deletes:
        sql += (
            f"CREATE TRIGGER {table}_check_context_insert_delete AFTER INSERT OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION budgets_check_context_bump('{path}');\n"
        )
    return sql


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE + "".join(_triggers(*watched) for watched in WATCHED), params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        drops = "".join(
            f"DROP TRIGGER IF EXISTS {table}_check_context_update ON {table};\n"
            f"DROP TRIGGER IF EXISTS {table}_check_context_insert_delete ON {table};\n"
            for table, *_ in WATCHED
        )
        schema_editor.execute(drops + "DROP FUNCTION IF EXISTS budgets_check_context_bump();", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0002_reservation_project_agent_optional"),
        ("costs", "0003_usage_drop_redundant_fk_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="CheckContextVersion",
            fields=[
                ("organization_id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("version", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(forwards, backwards),
    ]
