"""SQL statements written out whole, and their parameters bound by column name.

Every statement a handler runs is a literal string in that handler's module, so the text that
PostgreSQL executes is the text a reader finds. A set-based statement takes its rows as
parallel arrays, ``unnest($1::uuid[], $2::text[], ...) AS v(id, name, ...)``; :class:`Unnest`
reads the column names and types from that clause of the statement itself, and builds the
arrays from rows by name, so the order of the arrays is the statement's own and two columns
can never be swapped by a caller::

    UPSERT = Unnest('''
        INSERT INTO t (id, name)
        SELECT v.id, v.name
        FROM unnest($1::uuid[], $2::text[]) AS v(id, name)
        ON CONFLICT (id) DO UPDATE SET name = excluded.name
    ''')
    await conn.execute(UPSERT.sql, *UPSERT.args(rows))    # rows: mappings or objects

Statements without row arrays are :class:`Sql`. Both register themselves in ``STATEMENTS``,
which the test suite prepares against the migrated database, so a statement that does not
parse or names a missing column fails a test, not a batch.

The ordering rule (contract section 4.2) is one SQL function, ``omnisink.newer(at, id,
held_at, held_id)`` (migration 018): true when the event ``(at, id)`` is newer than the one
that last moved a value, or when nothing moved it yet (``held_at`` NULL).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STATEMENTS: list[Sql] = []

# unnest($1::uuid[], $2::text[], ...) AS v(a, b, ...): the row arrays and their names.
_UNNEST = re.compile(
    r"unnest\s*\((?P<params>[^()]*)\)\s+AS\s+(?P<alias>\w+)\s*\((?P<names>[^()]*)\)",
    re.IGNORECASE,
)
_PARAM = re.compile(r"^\$(?P<n>\d+)::(?P<type>[\w. ]+(?:\(\d+(?:,\s*\d+)?\))?)\[\]$")


@dataclass(frozen=True)
class Sql:
    """A statement written out whole; ``name`` says where it is used (for test reports)."""

    sql: str
    name: str = ""

    def __post_init__(self) -> None:
        STATEMENTS.append(self)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    position: int


@dataclass(frozen=True)
class Unnest(Sql):
    """A statement whose row arrays are bound by column name (see the module docstring)."""

    columns: tuple[Column, ...] = field(init=False)
    # Parameters after the row arrays ($N+1, ...), passed to args() by name as scalars.
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        matches = list(_UNNEST.finditer(self.sql))
        if len(matches) != 1:
            raise ValueError(f"{self.name or 'statement'}: expected one unnest(...) AS v(...)")
        m = matches[0]
        params = [p.strip() for p in m["params"].split(",")]
        names = [n.strip() for n in m["names"].split(",")]
        if len(params) != len(names):
            raise ValueError(
                f"{self.name or 'statement'}: unnest has {len(params)} arrays, "
                f"{m['alias']}(...) names {len(names)}"
            )
        columns = []
        for index, (param, name) in enumerate(zip(params, names, strict=True)):
            p = _PARAM.match(param)
            if p is None or int(p["n"]) != index + 1:
                raise ValueError(f"{self.name or 'statement'}: ${index + 1} must be {param!r}")
            columns.append(Column(name, p["type"], index + 1))
        object.__setattr__(self, "columns", tuple(columns))
        super().__post_init__()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def args(self, rows: Sequence[Mapping[str, Any] | object], **extra: Any) -> list[Any]:
        """The statement's parameters: one array per column, from each row's value of that
        name (a mapping's key or an object's attribute), then the ``extra`` scalars."""
        names = self.names
        expected = frozenset(names)
        arrays: list[list[Any]] = [[] for _ in names]
        for row in rows:
            if isinstance(row, Mapping):
                if len(row) != len(expected) or not expected.issuperset(row.keys()):
                    raise KeyError(
                        f"{self.name}: row lacks {sorted(expected - row.keys())}, "
                        f"has unknown {sorted(row.keys() - expected)}"
                    )
                values = [row[n] for n in names]
            else:
                values = [getattr(row, n) for n in names]
            for array, value in zip(arrays, values, strict=True):
                array.append(value)
        if extra.keys() != set(self.extra):
            raise KeyError(f"{self.name}: extra parameters are {self.extra}, got {set(extra)}")
        return [*arrays, *(extra[n] for n in self.extra)]
