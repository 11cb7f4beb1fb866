"""hubproxy: an OpenAI-compatible API gateway with keys, balances and exact billing on SQLite."""

__version__ = "0.1.0"
