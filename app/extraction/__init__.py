"""Deterministic answer extraction: mentions, list position and citations of an org."""

from app.extraction.citations import Citation
from app.extraction.domains import registrable_domain
from app.extraction.extract import Extraction, OrgProfile, extract
from app.extraction.matching import BrandMatch, match_brand

__all__ = [
    "BrandMatch",
    "Citation",
    "Extraction",
    "OrgProfile",
    "extract",
    "match_brand",
    "registrable_domain",
]
