"""LLM-assisted analysis: name variations per org, and one structured call per answer."""

from app.analysis.base import (
    AnalysisError,
    Analyst,
    AnswerAnalysis,
    Sentiment,
    VariationResult,
)
from app.analysis.factory import analysis_provider, create_analyst
from app.analysis.simulated import SimulatedAnalyst

__all__ = [
    "AnalysisError",
    "Analyst",
    "AnswerAnalysis",
    "Sentiment",
    "SimulatedAnalyst",
    "VariationResult",
    "analysis_provider",
    "create_analyst",
]
