"""Slatewise: diversity-aware slates composed by an LLM, with a pointwise fallback."""

__version__ = "0.1.0"
