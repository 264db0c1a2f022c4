"""The OpenAPI schema generates cleanly: drf-spectacular warnings mean a wrong or ambiguous schema
(e.g. two classes under one security component, enum names that depend on import order)."""

from io import StringIO

from django.core.management import call_command


def test_the_schema_generates_without_warnings(tmp_path):
    out, err = StringIO(), StringIO()

    call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"), stdout=out, stderr=err)

    assert (tmp_path / "schema.yml").read_text().startswith("openapi: 3")
    assert "Warning" not in err.getvalue()
