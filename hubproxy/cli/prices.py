"""`hubproxy prices …`: compare the served prices with the genai-prices catalog, take the catalog's,
and show every price change ever made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer
from rich.markup import escape

from hubproxy.billing.history import change_lines, flatten
from hubproxy.cli.context import CliError, WholeTable, console, database, load_config, print_json, save_config
from hubproxy.cli.models import catalog_price
from hubproxy.config import Config, ConfigError, price_settings
from hubproxy.config.listprices import ListPrice, catalog_version
from hubproxy.store.sql.prices import price_history
from hubproxy.upstream.presets import load_presets

app = typer.Typer(help="Prices against the genai-prices catalog, and their history.", no_args_is_help=True)


@dataclass
class Comparison:
    differences: list[dict] = field(default_factory=list)  # model, price, configured, catalog
    catalog: dict[str, ListPrice] = field(default_factory=dict)  # the catalog's price of each model that differs
    unknown: list[dict] = field(default_factory=list)  # model, why: what the catalog cannot price


def compare(config: Config, names: list[str]) -> Comparison:
    """Each served model's prices against the catalog's for its provider and upstream model."""
    result = Comparison()
    for name in names or sorted(config.models):
        model = config.models.get(name)
        if model is None:
            raise CliError(f"no model {name!r}; see `hubproxy models list`")
        try:
            found = catalog_price(config.providers[model.provider], model.upstream_model)
        except (CliError, ConfigError) as exc:
            result.unknown.append({"model": name, "why": str(exc)})
            continue
        served = flatten(price_settings(model)) if model.priced else {}
        catalog = flatten(price_settings(found.model(name, model.provider, model.upstream_model)))
        for key in sorted(served.keys() | catalog.keys()):
            if served.get(key) != catalog.get(key):
                result.differences.append(
                    {"model": name, "price": key, "configured": served.get(key), "catalog": catalog.get(key)}
                )
                result.catalog[name] = found
    return result


def show(result: Comparison) -> None:
    version = catalog_version()
    if result.differences:
        table = WholeTable("model", "price ($/1M)", "configured", f"genai-prices {version}", whole=("model",))
        for d in result.differences:
            table.add_row(d["model"], d["price"], d["configured"] or "-", d["catalog"] or "-")
        console.print(table, crop=False)
    else:
        console.print(f"every model the catalog knows is at genai-prices {version}'s price")
    for item in result.unknown:
        console.print(f"  {item['model']}: not checked: {item['why']}")


@app.command("check")
def check(
    ctx: typer.Context,
    model: list[str] = typer.Argument(None, metavar="[MODEL]...", help="Models to check (default: all)."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Compare each served model's prices with the genai-prices catalog; exit 1 when any differs."""
    result = compare(load_config(ctx), model or [])
    if json:
        print_json(
            {"catalog_version": catalog_version(), "differences": result.differences, "not_checked": result.unknown}
        )
    else:
        show(result)
    if result.differences:
        raise typer.Exit(1)


@app.command("apply")
def apply(
    ctx: typer.Context,
    model: list[str] = typer.Argument(None, metavar="[MODEL]...", help="Models to reprice (default: all)."),
    yes: bool = typer.Option(False, "--yes", help="Apply without asking."),
) -> None:
    """Take the catalog's prices for the models that differ, after showing the differences."""
    config = load_config(ctx)
    result = compare(config, model or [])
    show(result)
    if not result.differences:
        return
    if not yes and not typer.confirm(f"apply the catalog's prices to {len(result.catalog)} model(s)?"):
        raise CliError("nothing changed")
    for name, found in result.catalog.items():
        old = config.models[name]
        config.models[name] = found.model(
            name, old.provider, old.upstream_model, deployments=old.deployments, max_output_tokens=old.max_output_tokens
        )
    save_config(ctx, config, sources={name: found.origin for name, found in result.catalog.items()})
    console.print(f"repriced {', '.join(result.catalog)} from genai-prices {catalog_version()}")


CATALOG_COLUMNS = (
    ("input_price", "in"),
    ("output_price", "out"),
    ("cached_input_price", "cache read"),
    ("cache_write_price", "cache write"),
    ("cache_write_1h_price", "1h write"),
)


def catalog_rows(presets: list[str]) -> list[dict]:
    """The catalog's price of every model the named presets (default: all) add, as `providers add` would."""
    known = load_presets()
    rows: list[dict[str, Any]] = []
    for name in presets or list(known):
        preset = known.get(name)
        if preset is None:
            raise CliError(f"no preset {name!r}; see `hubproxy providers presets`")
        for model_id in preset.models:
            found = preset.price_of(model_id)
            if found is None:
                rows.append(
                    {"preset": name, "model": model_id, "prices": None, "more": [], "source": "not in the catalog"}
                )
                continue
            settings = price_settings(found.model(model_id, name, model_id))
            more = [
                f"over {t['above_prompt_tokens']:,} prompt tokens: {t['input_price']} / {t['output_price']}"
                for t in settings.get("tiers", [])
            ]
            more += [
                f"{h['from']}-{h['to']} UTC: {h['input_price']} / {h['output_price']}"
                for h in settings.get("hours", [])
            ]
            rows.append({"preset": name, "model": model_id, "prices": settings, "more": more, "source": found.source})
    return rows


@app.command("catalog")
def catalog(
    preset: list[str] = typer.Argument(None, metavar="[PRESET]...", help="Presets to show (default: all)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (the README's)."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The installed catalog's prices (USD per 1M tokens) of the models each preset adds."""
    rows = catalog_rows(preset or [])
    if json:
        print_json({"catalog_version": catalog_version(), "models": rows})
        return
    heads = ["preset", "model", *(title for _, title in CATALOG_COLUMNS), "also", "source"]
    cells = [
        [
            r["preset"],
            r["model"],
            *((r["prices"] or {}).get(key, "-") for key, _ in CATALOG_COLUMNS),
            ", ".join(r["more"]) or "-",
            r["source"],
        ]
        for r in rows
    ]
    if markdown:
        print(f"| {' | '.join(heads)} |\n|{' --- |' * len(heads)}")
        for row in cells:
            print(f"| {' | '.join(row)} |")
        return
    table = WholeTable(*heads, whole=("model",))
    for row in cells:
        table.add_row(*row)
    console.print(table, crop=False)
    console.print(f"from genai-prices {catalog_version()}")


@app.command("history")
def history(
    ctx: typer.Context,
    model: str = typer.Argument(None, metavar="[MODEL]", help="One model's changes (default: all)."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="The newest N changes."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every price change: when, which model, who, from where, before and after."""
    with database(ctx) as store:
        rows = store.run(price_history, model, limit)
    if json:
        print_json(rows)
        return
    if not rows:
        console.print("no price changes recorded" + (f" for {model!r}" if model else ""))
    for row in rows:  # a block per change: a table's columns would wrap a source or a change past reading
        when = row["at"][:19].replace("T", " ")
        console.print(f"[bold]{when}[/bold]  {escape(row['model'])}  by {escape(row['actor'])}", highlight=False)
        console.print(f"  from {row['source']}", highlight=False, markup=False)
        for line in change_lines(row["old"], row["new"]):
            console.print(f"    {line}", highlight=False, markup=False)
