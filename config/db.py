"""Database plumbing for the hot paths (ingest, budget checks, authentication).

Compiling an ORM query costs several times running it on loopback (~0.4-1 ms against ~0.1-0.3 ms);
on a 4 ms single-record budget that is most of the latency. Hot-path lookups therefore use plain,
portable SQL and still hand back model instances, identical to ORM-loaded ones. Everything that
depends only on the model (column lists, value converters) is worked out once per process.
"""

from dataclasses import dataclass
from functools import cache

from django.db import connection
from django.db.models import Model


@dataclass(frozen=True)
class RowShape:
    """How to select ``fields`` of ``model`` and turn the values back into an instance."""

    model: type[Model]
    fields: tuple
    names: tuple[str, ...]
    converters: tuple  # (index, col, (func, ...)) for the columns that need converting

    def select(self, table_alias: str = "") -> str:
        quote = connection.ops.quote_name
        prefix = f"{table_alias}." if table_alias else ""
        return ", ".join(prefix + quote(f.column) for f in self.fields)

    @property
    def table(self) -> str:
        return connection.ops.quote_name(self.model._meta.db_table)

    def instance(self, row) -> Model:
        if self.converters:
            row = list(row)
            for index, col, funcs in self.converters:
                value = row[index]
                for func in funcs:
                    value = func(value, col, connection)
                row[index] = value
        return self.model.from_db(connection.alias, self.names, row)

    def instances(self, rows) -> list:
        return [self.instance(row) for row in rows]


@cache
def _shape(model: type[Model], attnames: tuple[str, ...] | None, vendor: str) -> RowShape:
    # Concrete fields in model order, as from_db wants.
    fields = tuple(f for f in model._meta.concrete_fields if attnames is None or f.attname in attnames)
    converters = []
    for index, field in enumerate(fields):
        col = field.get_col(model._meta.db_table)
        # The same converters the ORM applies: the backend's (e.g. SQLite's text dates and decimals)
        # and the field's own (e.g. JSONField).
        funcs = tuple(connection.ops.get_db_converters(col) + field.get_db_converters(connection))
        if funcs:
            converters.append((index, col, funcs))
    return RowShape(model, fields, tuple(f.attname for f in fields), tuple(converters))


def row_shape(model: type[Model], attnames: tuple[str, ...] | None = None) -> RowShape:
    """The (cached) :class:`RowShape` of ``model``, all concrete fields or only ``attnames``."""
    return _shape(model, attnames, connection.vendor)


def fetch_instances(model: type[Model], attnames: tuple[str, ...] | None, where: str, params: list) -> list:
    """Instances of ``model`` (only ``attnames`` loaded, or all) matching a plain SQL ``where`` with
    ``%s`` placeholders (see :func:`in_list`)."""
    shape = row_shape(model, attnames)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {shape.select()} FROM {shape.table} WHERE {where}", params)
        rows = cursor.fetchall()
    return shape.instances(rows)


def in_list(values: list) -> str:
    """``(%s, %s, ...)`` for an ``IN`` list of ``values`` (which must not be empty)."""
    return "(" + ", ".join(["%s"] * len(values)) + ")"
