"""config.toml changed in place: what a CLI command or the dashboard changes is written into the
user's own file, so that its comments, order and layout stay (tomlkit keeps them); a value that did
not change is not touched at all. A new file is written whole (`Config.save`, tomli-w)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import Table


def edited(text: str, data: Mapping[str, Any]) -> str:
    """`text` (a config.toml) changed to hold exactly `data`, everything else in it kept."""
    document = tomlkit.parse(text)
    merge(document, data)
    return tomlkit.dumps(document)


def merge(into: Container | Table, data: Mapping[str, Any]) -> None:
    """Make the table `into` hold `data`: keys gone are removed, tables merged key by key, other values
    replaced only where they differ (an array of tables, such as a model's tiers, as a whole)."""
    for key in [k for k in into if k not in data]:
        del into[key]
    for key, value in data.items():
        current = into.get(key)
        if isinstance(value, Mapping) and isinstance(current, Table | Container):
            merge(current, value)
        elif isinstance(value, Mapping) and current is None:
            into[key] = table(value)
        elif current is None or unwrapped(current) != value:
            into[key] = value


def table(data: Mapping[str, Any]) -> Table:
    """A new table, set off from what follows by a blank line as tomli-w writes them."""
    new = tomlkit.table()
    for key, value in data.items():
        new[key] = table(value) if isinstance(value, Mapping) else value
    new.add(tomlkit.nl())
    return new


def unwrapped(item: Any) -> Any:
    """A tomlkit value as plain Python, for comparing with what hubproxy would write."""
    return item.unwrap() if hasattr(item, "unwrap") else item
