"""Make the usage ledger append-only in the database itself (PostgreSQL).

The ORM already refuses updates and deletes; this trigger also stops raw SQL and other clients.
TRUNCATE (test teardown, deliberate resets) is not affected. SQLite, the embedded demo default,
relies on the ORM guard only.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION costs_usagerecord_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'costs_usagerecord is append-only: % is not allowed; record a correction as a new row', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER costs_usagerecord_append_only
    BEFORE UPDATE OR DELETE ON costs_usagerecord
    FOR EACH ROW EXECUTE FUNCTION costs_usagerecord_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS costs_usagerecord_append_only ON costs_usagerecord;
DROP FUNCTION IF EXISTS costs_usagerecord_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("costs", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards)]
