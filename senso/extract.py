"""`senso extract`: the deterministic extraction over JSON lines, stdin to stdout."""

from __future__ import annotations

import json
from typing import TextIO

from pydantic import BaseModel, Field, ValidationError

from app.extraction import OrgProfile, extract


class _Org(BaseModel):
    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=list)


class ExtractionInput(BaseModel):
    org: _Org
    answer: str
    citations: list[str] = Field(default_factory=list)


def extract_lines(source: TextIO, sink: TextIO) -> int:
    """Exit status 1 when any line could not be read; every line still gets an output line."""
    status = 0
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            item = ExtractionInput.model_validate_json(line)
        except ValidationError as exc:
            status = 1
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "line"
            sink.write(json.dumps({"error": f"line {number}: {where}: {first['msg']}"}) + "\n")
            continue
        profile = OrgProfile(
            name=item.org.name, aliases=tuple(item.org.aliases), domains=tuple(item.org.domains)
        )
        sink.write(json.dumps(extract(profile, item.answer, item.citations).facts()) + "\n")
        sink.flush()
    return status
