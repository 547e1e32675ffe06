"""Deterministic answer extraction: mentions, list position and citations of an org."""

from app.extraction.citations import Citation
from app.extraction.domains import registrable_domain
from app.extraction.extract import Extraction, OrgProfile, extract
from app.extraction.matching import BrandMatch, match_brand

# The version of these rules (docs/extraction.md). Each run records the version it was scored
# with; raise it whenever a change to the rules can change a stored fact, and re-score.
EXTRACTION_VERSION = 1

__all__ = [
    "EXTRACTION_VERSION",
    "BrandMatch",
    "Citation",
    "Extraction",
    "OrgProfile",
    "extract",
    "match_brand",
    "registrable_domain",
]
