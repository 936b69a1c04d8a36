"""Autellix: a serving engine for LLM agents, scheduling programs instead of calls."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # the SDK imports openai; load it only when asked for
    if name in ("Program", "AsyncProgram"):
        from autellix import client

        return getattr(client, name)
    raise AttributeError(name)
