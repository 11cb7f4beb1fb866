"""Price changes, whoever makes them: the CLI records what a command changed (`changes_between`), and
the server records on start and on each config reload any change made by editing config.toml
(`record_edits`), so that no price ever changes silently. The rows: `store/sql/prices.py`."""

from __future__ import annotations

import time
from collections.abc import Mapping

from hubproxy.config import Model, price_settings
from hubproxy.config.catalog import FLAT
from hubproxy.store.sql import Connection, transaction
from hubproxy.store.sql.prices import PriceChange, latest_prices, record_price_changes

EDITED = "config.toml (edited, not through hubproxy)"


def now_text() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def settings_of(model: Model | None) -> dict | None:
    return None if model is None or not model.priced else price_settings(model)


def changes_between(
    before: Mapping[str, Model], after: Mapping[str, Model], actor: str, sources: Mapping[str, str], source: str
) -> list[PriceChange]:
    """Every model whose prices differ between two configs (added, removed, repriced), each with its
    source (`sources[model]`, else `source`)."""
    changes = []
    for name in sorted(before.keys() | after.keys()):
        old, new = settings_of(before.get(name)), settings_of(after.get(name))
        if old != new:
            model = after.get(name)
            price_id = model.price_id if model is not None else ""
            changes.append(PriceChange(name, price_id, actor, sources.get(name, source), old, new))
    return changes


def record_edits(conn: Connection, models: Mapping[str, Model]) -> int:
    """Record each served model whose prices are not the last recorded ones (config.toml edited by
    hand, or a model first seen); one transaction, so several starting workers record it once."""
    with transaction(conn):
        recorded = latest_prices(conn)
        changes = [
            PriceChange(
                name, model.price_id, "config.toml", EDITED, recorded.get(name, ("", None))[1], price_settings(model)
            )
            for name, model in sorted(models.items())
            if model.priced and recorded.get(name, ("", None))[0] != model.price_id
        ]
        if changes:
            record_price_changes(conn, changes, now_text())
    return len(changes)


def flatten(settings: dict) -> dict[str, str]:
    """A model's price settings on one level ("tiers[0].input_price": "2.5"), to compare line by line."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, list):
            for i, entry in enumerate(value):
                for inner, price in entry.items():
                    flat[f"{key}[{i}].{inner}"] = str(price)
        else:
            flat[key] = str(value)
    return flat


def change_lines(old: dict | None, new: dict | None) -> list[str]:
    """["input_price 0.27 → 0.28", "output_price 1.1 → 1.2"], or what was added or removed."""
    if old is None or new is None:
        if new is None:
            return ["removed or unpriced"]
        more = [f"{len(new[k])} {k}" for k in ("tiers", "hours") if k in new]
        more += [k.removesuffix("_price").replace("_", " ") for k in new if k not in ("tiers", "hours", *FLAT)]
        extra = f" (+ {', '.join(more)})" if more else ""
        return [f"priced {new['input_price']} in / {new['output_price']} out{extra}"]
    before, after = flatten(old), flatten(new)
    return [
        f"{k} {before.get(k, '-')} → {after.get(k, '-')}"
        for k in sorted(before.keys() | after.keys())
        if before.get(k) != after.get(k)
    ]


def change_text(old: dict | None, new: dict | None) -> str:
    """The change on one line: "input_price 0.27 → 0.28; output_price 1.1 → 1.2"."""
    return "; ".join(change_lines(old, new))
