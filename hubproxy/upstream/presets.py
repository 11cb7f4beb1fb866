"""Provider presets, kept as data in presets.toml beside this module."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

from hubproxy.config import ConfigError


@dataclass(frozen=True)
class Preset:
    name: str
    base_url: str
    source: str
    api_key_env: str | None = None


def load_presets() -> dict[str, Preset]:
    text = resources.files("hubproxy.upstream").joinpath("presets.toml").read_text(encoding="utf-8")
    return {name: Preset(name=name, **entry) for name, entry in tomllib.loads(text).items()}


def get_preset(name: str) -> Preset:
    presets = load_presets()
    if name not in presets:
        raise ConfigError(f"no preset {name!r}; see `hubproxy providers presets`")
    return presets[name]
