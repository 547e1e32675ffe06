"""A group of completed runs written to Postgres in one statement, its own transaction.

The runs' values and their mention, competitor and citation rows go in as JSON documents that
`json_to_recordset` turns back into typed rows: the runs are updated only where each is still
the writer's (the UPDATE locks each row and checks it again after any concurrent writer), and
the other rows are inserted only for the runs that UPDATE returned. One round trip, where a
transaction of its own took a BEGIN, a locking read, four writes and a COMMIT.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Dialect,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    column,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.sql.expression import TableValuedAlias
from sqlalchemy.types import TypeDecorator

from app.db.models import QuestionRun, RunCitation, RunCompetitor, RunMention, table_of


def _row_columns(model: type[Any]) -> tuple[str, ...]:
    """A result row's columns (`ResultRows`): all but the id, which is made here. A column the
    rows do not carry fails their document loudly instead of being left out."""
    return tuple(c.name for c in table_of(model).c if c.name != "id")


_MENTION_COLUMNS = _row_columns(RunMention)
_COMPETITOR_COLUMNS = _row_columns(RunCompetitor)
_CITATION_COLUMNS = _row_columns(RunCitation)


def store_results_statement(
    run_columns: tuple[str, ...], still_ours: ColumnElement[bool]
) -> Select[uuid.UUID]:
    """The statement for runs whose values have `run_columns`, stored where `still_ours`
    (conditions on the run's row, with bound parameters) holds; it returns the stored runs'
    ids. Its parameters: those `still_ours` names, and `store_parameters`."""
    runs = table_of(QuestionRun)
    values = _recordset("r_runs", runs, ("id", *run_columns))
    stored = (
        update(runs)
        .where(runs.c.id == values.c.id, still_ours)
        .values({name: values.c[name] for name in run_columns})
        .returning(runs.c.id)
        .cte("stored")
    )
    inserts = [
        _insert_for(stored, param, table_of(model), columns)
        for param, model, columns in (
            ("r_mentions", RunMention, _MENTION_COLUMNS),
            ("r_competitors", RunCompetitor, _COMPETITOR_COLUMNS),
            ("r_citations", RunCitation, _CITATION_COLUMNS),
        )
    ]
    return select(stored.c.id).add_cte(*inserts)


def store_parameters(
    dialect: Dialect,
    runs: Sequence[Mapping[str, Any]],
    *,
    mentions: Iterable[Mapping[str, Any]],
    competitors: Iterable[Mapping[str, Any]],
    citations: Iterable[Mapping[str, Any]],
) -> dict[str, str]:
    """`store_results_statement`'s documents: `runs`, each its id and values."""
    return {
        "r_runs": _as_json(dialect, QuestionRun, list(runs[0]), runs),
        "r_mentions": _as_json(dialect, RunMention, _MENTION_COLUMNS, mentions),
        "r_competitors": _as_json(dialect, RunCompetitor, _COMPETITOR_COLUMNS, competitors),
        "r_citations": _as_json(dialect, RunCitation, _CITATION_COLUMNS, citations),
    }


def _as_json(
    dialect: Dialect, model: type[Any], columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> str:
    """`rows` as the JSON document `store_results_statement` reads back: each value as its
    column's own type would have bound it (money quantised, times in UTC)."""
    table = table_of(model)
    types = [table.c[name].type for name in columns]
    return json.dumps(
        [
            {
                name: type_.process_bind_param(row[name], dialect)
                if isinstance(type_, TypeDecorator)
                else row[name]
                for name, type_ in zip(columns, types, strict=True)
            }
            for row in rows
        ],
        default=_plain,
    )


def _recordset(param: str, table: Table, columns: Sequence[str]) -> TableValuedAlias:
    """The rows of a JSON document bound as `param`, typed as `table`'s columns."""
    document = cast(bindparam(param, type_=Text), JSON)
    return (
        func.json_to_recordset(document)
        .table_valued(*(column(name, table.c[name].type) for name in columns))
        .render_derived(name=param, with_types=True)
    )


def _insert_for(stored: Any, param: str, table: Table, columns: Sequence[str]) -> Any:
    rows = _recordset(param, table, columns)
    return (
        insert(table)
        .from_select(
            ["id", *columns],
            select(func.gen_random_uuid(), *(rows.c[name] for name in columns)).where(
                rows.c.run_id.in_(select(stored.c.id))
            ),
            include_defaults=False,
        )
        .cte(f"{param}_written")
    )


def _plain(value: object) -> object:
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")
