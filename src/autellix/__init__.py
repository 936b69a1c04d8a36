"""Autellix: a serving engine for LLM agents, scheduling programs instead of calls."""

__version__ = "0.1.0"
