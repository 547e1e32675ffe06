"""Which list item, if any, each line of an answer belongs to.

Indentation decides structure, more leniently than CommonMark because generated answers nest
inconsistently: an item indented at least two columns past the current item's marker opens a
nested list, one within a column of it is a sibling. A non-item line belongs to the innermost
item whose marker it is indented past; an unindented one (paragraph, heading, table row) ends
every open list. Blank lines end nothing by themselves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.extraction.markdown import Fence, Line

_ITEM_RE = re.compile(
    r"^(?P<indent>[ \t]*)(?:(?P<bullet>[-*+])|\d{1,9}(?P<delimiter>[.)]))(?:[ \t]|$)"
)
_THEMATIC_BREAK_RE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_TAB_WIDTH = 4
_SIBLING_TOLERANCE = 1


@dataclass(slots=True)
class _OpenList:
    marker_indent: int
    kind: str  # bullet character or ordered delimiter: a change of either starts a new list
    items: int = 1


def item_positions(lines: Sequence[Line]) -> list[int | None]:
    """For each line, the 1-based position of the item owning it among its siblings, or None."""
    open_lists: list[_OpenList] = []
    positions: list[int | None] = []
    for line in lines:
        if line.fence is Fence.INSIDE:
            positions.append(positions[-1] if positions else None)
            continue
        if line.is_blank:
            positions.append(None)
            continue
        item = _ITEM_RE.match(line.text)
        if item and not _THEMATIC_BREAK_RE.match(line.text):
            kind = item["bullet"] or item["delimiter"]
            _add_item(open_lists, _indent_width(item["indent"]), kind)
        else:
            _close_lists_not_containing(open_lists, _indent_width(_leading_space(line.text)))
        positions.append(open_lists[-1].items if open_lists else None)
    return positions


def _add_item(open_lists: list[_OpenList], indent: int, kind: str) -> None:
    while open_lists and indent < open_lists[-1].marker_indent - _SIBLING_TOLERANCE:
        open_lists.pop()
    if not open_lists or indent > open_lists[-1].marker_indent + _SIBLING_TOLERANCE:
        open_lists.append(_OpenList(indent, kind))
    elif open_lists[-1].kind == kind:
        open_lists[-1].items += 1
    else:
        open_lists[-1] = _OpenList(indent, kind)


def _close_lists_not_containing(open_lists: list[_OpenList], indent: int) -> None:
    while open_lists and indent <= open_lists[-1].marker_indent:
        open_lists.pop()


def _leading_space(text: str) -> str:
    return text[: len(text) - len(text.lstrip(" \t"))]


def _indent_width(whitespace: str) -> int:
    return len(whitespace.expandtabs(_TAB_WIDTH))
