"""Orgs and their evaluation matrix (questions × engines × locations)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    CompoundSelect,
    DateTime,
    Integer,
    String,
    Uuid,
    bindparam,
    cast,
    delete,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import BindParameter

from app.audit import record_audit
from app.auth import Principal
from app.clock import Clock
from app.db.models import EvaluationBatch, Org, OrgEngine, OrgLocation, OrgQuestion, Partner
from app.engines.registry import EngineRegistry
from app.errors import InvalidInputError, NotFoundError
from app.evaluations.lifecycle import LIVE, request_cancel
from app.orgs.schemas import (
    EnginesSet,
    LocationsSet,
    OrgCreate,
    OrgDetail,
    OrgRead,
    OrgUpdate,
    QuestionRead,
    QuestionsSet,
)
from app.pagination import Page, PageParams, paginate

ORG_DEACTIVATED = "org_deactivated"


class MatrixQuestion(Protocol):
    """What a batch's runs take of a question."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def text(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AskedQuestion:
    id: uuid.UUID
    text: str


@dataclass(frozen=True, slots=True)
class Matrix:
    questions: Sequence[MatrixQuestion]
    engines: Sequence[str]
    locations: Sequence[str]

    @property
    def cells(self) -> int:
        """(question, engine, country) cells: each is asked `samples` times per batch."""
        return len(self.questions) * len(self.engines) * len(self.locations)

    def missing_axes(self) -> list[str]:
        axes = {"questions": self.questions, "engines": self.engines, "locations": self.locations}
        return [name for name, values in axes.items() if not values]


async def get_org(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, *, for_update: bool = False
) -> Org:
    query = select(Org).where(Org.id == org_id)
    if for_update:
        query = query.with_for_update()
    org = await session.scalar(query)
    if org is None or not principal.can_access(org.partner_id):
        raise NotFoundError(f"org {org_id} not found")
    return org


async def get_orgs(
    session: AsyncSession, principal: Principal, org_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, Org]:
    """The orgs of `org_ids` the principal may see, by id: an unknown org and another
    partner's are alike absent, so a caller cannot tell them apart."""
    query = select(Org).where(Org.id.in_(list(org_ids)))
    if principal.partner_id is not None:
        query = query.where(Org.partner_id == principal.partner_id)
    return {org.id: org for org in await session.scalars(query)}


async def load_matrix(session: AsyncSession, org_id: uuid.UUID) -> Matrix:
    questions = await session.scalars(
        select(OrgQuestion)
        .where(OrgQuestion.org_id == org_id, OrgQuestion.active.is_(True))
        .order_by(OrgQuestion.position, OrgQuestion.created_at)
    )
    engines = await session.scalars(
        select(OrgEngine.engine_id).where(OrgEngine.org_id == org_id).order_by(OrgEngine.engine_id)
    )
    locations = await session.scalars(
        select(OrgLocation.country)
        .where(OrgLocation.org_id == org_id)
        .order_by(OrgLocation.country)
    )
    return Matrix(list(questions), list(engines), list(locations))


def _matrix_rows() -> CompoundSelect[Any]:
    """The three axes of the orgs bound to `org_ids` as one UNION ALL, a row per active
    question, engine or country, in `load_matrix`'s order."""
    ids: BindParameter[uuid.UUID] = bindparam("org_ids", expanding=True)
    questions = select(
        literal_column("'q'", String).label("axis"),
        OrgQuestion.org_id.label("org_id"),
        OrgQuestion.id.label("question_id"),
        OrgQuestion.text.label("value"),
        OrgQuestion.position.label("position"),
        OrgQuestion.created_at.label("created_at"),
    ).where(OrgQuestion.org_id.in_(ids), OrgQuestion.active.is_(True))
    engines = select(
        literal_column("'e'", String),
        OrgEngine.org_id,
        cast(null(), Uuid),
        OrgEngine.engine_id,
        literal_column("0", Integer),
        cast(null(), DateTime),
    ).where(OrgEngine.org_id.in_(ids))
    locations = select(
        literal_column("'l'", String),
        OrgLocation.org_id,
        cast(null(), Uuid),
        OrgLocation.country,
        literal_column("0", Integer),
        cast(null(), DateTime),
    ).where(OrgLocation.org_id.in_(ids))
    return union_all(questions, engines, locations).order_by(
        literal_column("axis"),
        literal_column("position"),
        literal_column("created_at"),
        literal_column("value"),
    )


# Built once: building it cost more CPU than running it (every trigger loads a matrix).
_MATRIX_ROWS = _matrix_rows()


async def load_matrices(
    session: AsyncSession, org_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, Matrix]:
    """The matrices of many orgs (each in `load_matrix`'s order) in one statement."""
    if not org_ids:
        return {}
    ids = list(org_ids)
    rows = await session.execute(_MATRIX_ROWS, {"org_ids": ids})
    axes: dict[uuid.UUID, tuple[list[MatrixQuestion], list[str], list[str]]] = {
        org_id: ([], [], []) for org_id in ids
    }
    for axis, org_id, question_id, value, _position, _created_at in rows:
        asked, engine_ids, countries = axes[org_id]
        if axis == "q":
            asked.append(AskedQuestion(question_id, value))
        elif axis == "e":
            engine_ids.append(value)
        else:
            countries.append(value)
    return {org_id: Matrix(*axis_values) for org_id, axis_values in axes.items()}


async def org_detail(session: AsyncSession, org: Org) -> OrgDetail:
    matrix = await load_matrix(session, org.id)
    return OrgDetail(
        **OrgRead.model_validate(org).model_dump(),
        questions=[QuestionRead.model_validate(q) for q in matrix.questions],
        engines=list(matrix.engines),
        locations=list(matrix.locations),
    )


async def create_org(session: AsyncSession, principal: Principal, data: OrgCreate) -> Org:
    partner_id = data.partner_id or principal.partner_id
    if partner_id is None:
        raise InvalidInputError("partner_id is required", code="partner_required")
    partner = await session.get(Partner, partner_id)
    if partner is None or not principal.can_access(partner_id):
        raise NotFoundError(f"partner {partner_id} not found")
    org = Org(
        partner_id=partner_id,
        name=data.name,
        aliases=data.aliases,
        domains=data.domains,
        competitors=data.competitors,
        active=data.active,
        samples=data.samples,
        max_samples=data.max_samples,
    )
    session.add(org)
    await session.flush()
    record_audit(
        session,
        actor=principal.actor,
        action="org.created",
        resource_type="org",
        resource_id=org.id,
        details=data.model_dump(mode="json"),
    )
    await session.commit()
    return org


async def list_orgs(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    partner_id: uuid.UUID | None,
    active: bool | None,
) -> Page[OrgRead]:
    query = select(Org)
    if principal.partner_id is not None:
        query = query.where(Org.partner_id == principal.partner_id)
    if partner_id is not None:
        query = query.where(Org.partner_id == partner_id)
    if active is not None:
        query = query.where(Org.active.is_(active))
    return await paginate(session, query, (Org.created_at, Org.id), page, OrgRead.model_validate)


async def update_org(
    session: AsyncSession, clock: Clock, principal: Principal, org_id: uuid.UUID, data: OrgUpdate
) -> Org:
    org = await get_org(session, principal, org_id, for_update=True)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "max_samples" in data.model_fields_set and data.max_samples is None:
        changes["max_samples"] = None  # an explicit null switches adaptive asks off
    samples = changes.get("samples", org.samples)
    max_samples = changes.get("max_samples", org.max_samples)
    if max_samples is not None and max_samples < samples:
        raise InvalidInputError(
            f"max_samples ({max_samples}) must be at least samples ({samples})",
            code="invalid_samples",
        )
    deactivated = org.active and changes.get("active") is False
    for field, value in changes.items():
        setattr(org, field, value)
    record_audit(
        session,
        actor=principal.actor,
        action="org.updated",
        resource_type="org",
        resource_id=org.id,
        details=changes,
    )
    if deactivated:
        # Its running batches stop: in-flight runs finish, nothing new is asked or charged.
        live = await session.scalars(
            select(EvaluationBatch).where(
                EvaluationBatch.org_id == org.id, EvaluationBatch.status.in_(LIVE)
            )
        )
        for batch in list(live):
            await request_cancel(
                session,
                batch,
                f"{ORG_DEACTIVATED}: the org was deactivated while the batch ran",
                actor=principal.actor,
                now=clock.now(),
            )
    await session.commit()
    return org


async def set_questions(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, data: QuestionsSet
) -> Org:
    """Keep a question's id when its text is kept, so past runs still point at it."""
    org = await get_org(session, principal, org_id, for_update=True)
    existing = {
        q.text: q
        for q in await session.scalars(select(OrgQuestion).where(OrgQuestion.org_id == org.id))
    }
    for question in existing.values():
        question.active = False
    for position, text in enumerate(data.questions):
        kept = existing.get(text)
        if kept is None:
            session.add(OrgQuestion(org_id=org.id, text=text, position=position))
        else:
            kept.active = True
            kept.position = position
    record_audit(
        session,
        actor=principal.actor,
        action="org.questions_set",
        resource_type="org",
        resource_id=org.id,
        details={"count": len(data.questions)},
    )
    await session.commit()
    return org


async def set_engines(
    session: AsyncSession,
    principal: Principal,
    org_id: uuid.UUID,
    data: EnginesSet,
    registry: EngineRegistry,
) -> Org:
    org = await get_org(session, principal, org_id, for_update=True)
    engine_ids = registry.validate(data.engines)
    countries = await session.scalars(
        select(OrgLocation.country).where(OrgLocation.org_id == org.id)
    )
    registry.check_countries(engine_ids, list(countries))
    await session.execute(delete(OrgEngine).where(OrgEngine.org_id == org.id))
    session.add_all(OrgEngine(org_id=org.id, engine_id=e) for e in engine_ids)
    record_audit(
        session,
        actor=principal.actor,
        action="org.engines_set",
        resource_type="org",
        resource_id=org.id,
        details={"engines": engine_ids},
    )
    await session.commit()
    return org


async def set_locations(
    session: AsyncSession,
    principal: Principal,
    org_id: uuid.UUID,
    data: LocationsSet,
    registry: EngineRegistry,
) -> Org:
    org = await get_org(session, principal, org_id, for_update=True)
    engines = await session.scalars(select(OrgEngine.engine_id).where(OrgEngine.org_id == org.id))
    registry.check_countries(list(engines), data.locations)
    await session.execute(delete(OrgLocation).where(OrgLocation.org_id == org.id))
    session.add_all(OrgLocation(org_id=org.id, country=c) for c in data.locations)
    record_audit(
        session,
        actor=principal.actor,
        action="org.locations_set",
        resource_type="org",
        resource_id=org.id,
        details={"locations": data.locations},
    )
    await session.commit()
    return org
