"""An org's name variations: generated once, reused by every batch until its names change.

The stored rows carry a fingerprint of what they were made from (name, aliases, and which
analyst made them), so a renamed org, new aliases, or a switch from the simulated analyst to a
model all lead to one new generation, and anything else to none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid

from sqlalchemy import delete, select

from app.analysis.base import AnalysisError, Analyst, VariationResult
from app.db.models import Org, OrgNameVariation
from app.db.session import SessionFactory
from app.db.types import utcnow
from app.db.upsert import insert_ignoring_conflicts

logger = logging.getLogger(__name__)

_SOURCE_WIDTH = 64


def names_fingerprint(name: str, aliases: list[str], source: str) -> str:
    names = {
        "name": " ".join(name.split()),
        "aliases": sorted(" ".join(alias.split()) for alias in aliases),
        "source": source,
    }
    return hashlib.sha256(json.dumps(names, sort_keys=True).encode()).hexdigest()


async def load_variations(
    sessions: SessionFactory, analyst: Analyst, org: Org, *, reads: SessionFactory | None = None
) -> tuple[str, ...]:
    """The org's variations: cached ones when still current, else freshly generated and stored.
    `reads`, sessions whose statements are their own transactions (the cheapest), for the
    cache's one read and for the first variations of an org.

    A failed generation is logged and leaves matching to the name and aliases; the next batch
    tries again, since nothing was stored.
    """
    fingerprint = names_fingerprint(org.name, org.aliases, analyst.source)
    reads = reads or sessions
    async with reads() as session:
        rows = (
            await session.execute(
                select(OrgNameVariation.variation, OrgNameVariation.names_fingerprint).where(
                    OrgNameVariation.org_id == org.id
                )
            )
        ).all()
    cached = [variation for variation, made_from in rows if made_from == fingerprint]
    if cached:
        return tuple(cached)
    try:
        result = await analyst.name_variations(org.name, org.aliases)
    except AnalysisError as exc:
        logger.warning("name variations not generated", extra={"error": str(exc)})
        return ()
    logger.info(
        "name variations generated",
        extra={
            "variations": len(result.names),
            "source": result.source,
            "model": result.model,
            "cost": str(result.cost),
        },
    )
    # Rows of older names are replaced in a transaction; an org with none (its first batch)
    # needs only the insert, a statement of its own.
    writes = sessions if rows else reads
    return await _replace(writes, org, fingerprint, result, stale=bool(rows))


async def _replace(
    sessions: SessionFactory,
    org: Org,
    fingerprint: str,
    result: VariationResult,
    *,
    stale: bool,
) -> tuple[str, ...]:
    # The name itself is stored too, so an org with no other spelling still has a row that
    # says its variations were made and need not be asked for again.
    stored = sorted({org.name, *result.names})
    now = utcnow()
    async with sessions() as session:
        if stale:
            await session.execute(
                delete(OrgNameVariation).where(
                    OrgNameVariation.org_id == org.id,
                    OrgNameVariation.names_fingerprint != fingerprint,
                )
            )
        # Two workers may generate at once: the unique (org_id, variation) keeps one row per
        # spelling, and sorted rows make both lock them in the same order.
        await session.execute(
            insert_ignoring_conflicts(session, OrgNameVariation, ["org_id", "variation"]),
            [
                {
                    "id": uuid.uuid4(),
                    "org_id": org.id,
                    "variation": variation,
                    "source": result.source[:_SOURCE_WIDTH],
                    "names_fingerprint": fingerprint,
                    "created_at": now,
                }
                for variation in stored
            ],
        )
        await session.commit()
    return tuple(stored)
