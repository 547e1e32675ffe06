"""GET /engines: the engine catalogue, and which engines this deployment serves."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import Context, CurrentPrincipal
from app.engines.base import Surface
from app.engines.catalogue import CATALOGUE

router = APIRouter(prefix="/engines", tags=["engines"])


class EngineCountries(BaseModel):
    takes_country: bool = Field(
        description="False: the run's country is recorded but the provider is not told it"
    )
    served: list[str] | None = Field(description="The only countries it serves; null: any")
    not_served: list[str] = Field(description="Countries refused for it")


class EngineRead(BaseModel):
    id: str
    provider: str = Field(description="Whose API is called")
    assistant: str = Field(description="What the answers are of")
    surface: Surface
    countries: EngineCountries
    configured: bool = Field(
        description="Served by this deployment: enabled (ENABLED_ENGINES) with what it needs"
    )
    credentials: list[str] = Field(description="Settings a deployment sets to serve it")
    price_basis: str


@router.get("")
async def list_engines(context: Context, _principal: CurrentPrincipal) -> list[EngineRead]:
    """Every engine id an org can be given, in the order they are listed everywhere."""
    settings = context.settings
    return [
        EngineRead(
            id=spec.id,
            provider=spec.provider,
            assistant=spec.assistant,
            surface=spec.surface,
            countries=EngineCountries(
                takes_country=spec.takes_country,
                served=sorted(served) if (served := spec.served_countries()) is not None else None,
                not_served=sorted(spec.unserved_countries(settings)),
            ),
            configured=context.engines.serves(spec.id),
            credentials=list(spec.credentials),
            price_basis=spec.price_basis,
        )
        for spec in CATALOGUE.values()
    ]
