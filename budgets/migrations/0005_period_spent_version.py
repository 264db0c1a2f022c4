"""``BudgetPeriod.spent_version`` for the Redis live store (ADR 0008), and period limits in the
check context version.

A trigger bumps ``spent_version`` whenever ``spent_nanos`` changes — settlement, reconciliation, a
reset, a plain SQL update — so the store can copy ``(spent, version)`` pairs in any order and keep
the newest. The check context trigger on period rows also watches ``limit_nanos`` and
``ceiling_nanos`` now: the Redis store takes a period's ceiling from the cached context rather than
reading it in the reservation. PostgreSQL only (SQLite runs the PostgreSQL-free store only).
"""

from django.db import migrations, models

CREATE = """
CREATE OR REPLACE FUNCTION budgets_period_spent_version_bump() RETURNS trigger AS $$
BEGIN
    NEW.spent_version := OLD.spent_version + 1;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER budgets_budgetperiod_spent_version BEFORE UPDATE ON budgets_budgetperiod FOR EACH ROW
WHEN (OLD.spent_nanos IS DISTINCT FROM NEW.spent_nanos) EXECUTE FUNCTION budgets_period_spent_version_bump();
DROP TRIGGER IF EXISTS budgets_budgetperiod_check_context_update ON budgets_budgetperiod;
CREATE TRIGGER budgets_budgetperiod_check_context_update AFTER UPDATE ON budgets_budgetperiod FOR EACH ROW
WHEN ((OLD.budget_id, OLD.starts_at, OLD.ends_at, OLD.limit_nanos, OLD.ceiling_nanos)
      IS DISTINCT FROM (NEW.budget_id, NEW.starts_at, NEW.ends_at, NEW.limit_nanos, NEW.ceiling_nanos))
EXECUTE FUNCTION budgets_check_context_bump('budget_id');
"""

DROP = """
DROP TRIGGER IF EXISTS budgets_budgetperiod_spent_version ON budgets_budgetperiod;
DROP FUNCTION IF EXISTS budgets_period_spent_version_bump();
DROP TRIGGER IF EXISTS budgets_budgetperiod_check_context_update ON budgets_budgetperiod;
CREATE TRIGGER budgets_budgetperiod_check_context_update AFTER UPDATE ON budgets_budgetperiod FOR EACH ROW
WHEN ((OLD.budget_id, OLD.starts_at, OLD.ends_at) IS DISTINCT FROM (NEW.budget_id, NEW.starts_at, NEW.ends_at))
EXECUTE FUNCTION budgets_check_context_bump('budget_id');
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("budgets", "0004_alerts")]

    operations = [
        migrations.AddField(
            model_name="budgetperiod", name="spent_version", field=models.BigIntegerField(default=0, db_default=0, editable=False)
        ),
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
