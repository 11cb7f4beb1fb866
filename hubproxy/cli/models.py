"""`hubproxy models …`: public model ids, the provider and upstream name behind them, and prices."""

from __future__ import annotations

import typer

from hubproxy.cli.context import CliError, WholeTable, console, load_config, print_json, save_config
from hubproxy.cli.providers import upstream_models
from hubproxy.config import (
    ConfigError,
    Model,
    PriceTier,
    Provider,
    check_model_name,
    ordered_tiers,
    priced_model,
    tier_dict,
)
from hubproxy.config.catalog import SET_APART
from hubproxy.config.listprices import ListPrice, catalog_provider, catalog_version, list_price
from hubproxy.config.prices import clock, hours_dict
from hubproxy.money import format_price, parse_price
from hubproxy.tokens import EXTRA_CLASSES, PART_PRICES
from hubproxy.upstream.presets import load_presets

app = typer.Typer(help="Models served to clients, with prices in USD per 1M tokens.", no_args_is_help=True)


def price_text(micro: int | None) -> str | None:
    return None if micro is None else format_price(micro)


def model_json(m: Model) -> dict:
    return {
        "name": m.name,
        "provider": m.provider,
        "upstream_model": m.upstream_model,
        "input_price": price_text(m.input_price),
        "output_price": price_text(m.output_price),
        "cached_input_price": price_text(m.cached_input_price),
        "cache_write_price": price_text(m.cache_write_price),
        **{setting: price_text(price) for setting, price in sorted(m.rates.items())},
        "tiers": [tier_dict(t) for t in m.tiers],
        "hours": [hours_dict(h) for h in m.hours],
        "price_id": m.price_id or None,
        "max_output_tokens": m.max_output_tokens,
    }


RATE_SETTINGS = tuple(s for s in PART_PRICES if s not in SET_APART)  # the classes without a flag of their own


def parse_rate(text: str) -> tuple[str, int]:
    """ "cache_write_1h=6" → the price of a token class that has no flag of its own."""
    setting, _, usd = text.partition("=")
    setting = setting.strip().removesuffix("_price") + "_price"
    if setting not in RATE_SETTINGS or not usd:
        names = ", ".join(s.removesuffix("_price") for s in RATE_SETTINGS)
        raise CliError(f"--price wants CLASS=USD with CLASS one of: {names}; got {text!r}")
    return setting, parse_price(usd, what=f"--price {setting}")


def other_prices(m: Model) -> str:
    """The prices of the token classes priced apart ("cached 0.3, cache write 3.75, …"), as the table
    shows them."""
    table = m.price_table(0)
    return ", ".join(
        f"{c.label} {format_price(price)}"
        for c in EXTRA_CLASSES
        if c.price is not None and (price := table.get(c.price)) is not None
    )


def parse_tier(text: str) -> PriceTier:
    """ "200000:2.50:15[:0.25]" → prices for calls whose prompt is over 200,000 tokens."""
    parts = text.split(":")
    if len(parts) not in (3, 4) or not parts[0].isdigit() or int(parts[0]) < 1:
        raise CliError(f"--tier wants ABOVE_PROMPT_TOKENS:INPUT:OUTPUT[:CACHED_INPUT], got {text!r}")
    cached = parse_price(parts[3], what="--tier cached input price") if len(parts) == 4 else None
    return PriceTier(
        int(parts[0]),
        parse_price(parts[1], what="--tier input price"),
        parse_price(parts[2], what="--tier output price"),
        cached,
    )


@app.command("add")
def add(
    ctx: typer.Context,
    name: str,
    provider: str = typer.Option(..., "--provider", metavar="PROVIDER"),
    upstream_model: str = typer.Option(
        None, "--upstream-model", metavar="MODEL", help="Name upstream knows it by (default: NAME)."
    ),
    input_price: str = typer.Option(
        None, "--input-price", metavar="USD", help="USD per 1M prompt tokens (default: the catalog's)."
    ),
    output_price: str = typer.Option(
        None, "--output-price", metavar="USD", help="USD per 1M completion tokens (default: the catalog's)."
    ),
    cached_input_price: str = typer.Option(
        None, "--cached-input-price", metavar="USD", help="USD per 1M prompt tokens served from the provider's cache."
    ),
    cache_write_price: str = typer.Option(
        None, "--cache-write-price", metavar="USD", help="USD per 1M prompt tokens written to the provider's cache."
    ),
    price: list[str] = typer.Option(
        [],
        "--price",
        metavar="CLASS=USD",
        help="USD per 1M tokens of another token class (cache_write_1h: prompt tokens cached for an hour); repeatable.",
    ),
    tier: list[str] = typer.Option(
        [],
        "--tier",
        metavar="ABOVE:IN:OUT[:CACHED]",
        help="Prices over a prompt size, ABOVE_TOKENS:INPUT:OUTPUT[:CACHED]; repeatable.",
    ),
    max_output_tokens: int = typer.Option(
        None,
        "--max-output-tokens",
        metavar="N",
        min=1,
        max=10**9,
        help="The most output the model makes in one answer: held for a call that sets no limit, which then "
        "goes up unchanged (without it hubproxy sends \\[billing] default_max_tokens as the limit).",
    ),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing model of this name."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Serve a model (an alias when --upstream-model differs from NAME), at the genai-prices catalog's
    price for that provider and model unless prices are given (those given win)."""
    check_model_name(name)
    tiers = ordered_tiers((parse_tier(t) for t in tier), "--tier")
    config = load_config(ctx)
    if provider not in config.providers:
        raise CliError(f"no provider {provider!r}; add it with `hubproxy providers add`")
    if name in config.models and not replace:
        raise CliError(f"model {name!r} already exists (use --replace to overwrite)")
    if (input_price is None) != (output_price is None):
        raise CliError("give both --input-price and --output-price, or neither (the catalog's price)")
    upstream = upstream_model or name
    typed = {
        setting: parse_price(text, what=f"--{setting.replace('_', '-')}")
        for setting, text in (
            ("input_price", input_price),
            ("output_price", output_price),
            ("cached_input_price", cached_input_price),
            ("cache_write_price", cache_write_price),
        )
        if text is not None
    }
    typed.update(parse_rate(p) for p in price)
    listed = None if input_price is not None else catalog_price(config.providers[provider], upstream)
    more = {"max_output_tokens": max_output_tokens}
    if listed is None:
        model = priced_model(name, provider, upstream, typed, tiers=tiers, **more)
    else:
        model = listed.model(name, provider, upstream, **more)
        if typed or tiers:
            model = priced_model(
                name,
                provider,
                upstream,
                {**model.flat_prices(), **typed},
                tiers=tiers or model.tiers,
                hours=model.hours,
                **more,
            )
    config.models[name] = model
    origin = listed.origin if listed is not None and not typed and not tiers else None
    save_config(ctx, config, sources={name: origin} if origin else None)
    if json:
        print_json({**model_json(model), "price_source": origin or "typed"})
        return
    console.print(
        f"added model {name} → {provider}/{model.upstream_model} "
        f"(${format_price(model.input_price or 0)} in, ${format_price(model.output_price or 0)} out per 1M)"
    )
    if listed is not None:
        console.print(f"prices from {listed.origin}")
        others = other_prices(model)
        if others or model.tiers or model.hours:
            console.print(f"  other $/1M: {others or '-'}; {tier_text(model)}{hours_text(model)}")
        if listed.unbilled:
            console.print(f"  not billed: {', '.join(listed.unbilled)} (hubproxy does not meter these tools yet)")


def catalog_price(provider: Provider, upstream: str) -> ListPrice:
    """The catalog's price for a provider's model, or a one-line error saying to price it by hand."""
    preset = load_presets().get(provider.preset) if provider.preset else None
    found = catalog_provider(preset.catalog if preset else None, provider.base_url)
    if found is None:
        raise CliError(
            f"genai-prices {catalog_version()} does not know provider {provider.name!r} ({provider.base_url}): "
            "give --input-price and --output-price"
        )
    return list_price(found, upstream)


def tier_text(m: Model) -> str:
    return ", ".join(f">{t.above:,}: {format_price(t.input_price)} / {format_price(t.output_price)}" for t in m.tiers)


def hours_text(m: Model) -> str:
    return ", ".join(
        f"{clock(h.start)}-{clock(h.end)} UTC: {format_price(h.prices['input_price'])} / "
        f"{format_price(h.prices['output_price'])}"
        for h in m.hours
    )


@app.command("sync")
def sync(ctx: typer.Context, provider: str, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Add every model the provider lists at GET /models that is not served yet.

    Prices come from the genai-prices catalog, from the provider's own listing where the preset says
    it carries prices (OpenRouter, Together), or are 0 for local presets. Anything else is added
    unpriced and refused to clients until `hubproxy models add ID --replace` prices it: nothing is
    billed at a guessed price.
    """
    found = upstream_models(ctx, provider)
    config = load_config(ctx)
    preset_name = config.providers[provider].preset
    preset = load_presets().get(preset_name) if preset_name else None
    served = {(t.provider, t.upstream_model) for m in config.models.values() for t in m.targets}
    priced, unpriced = {}, []
    for item in found:
        upstream = item["id"]
        if (provider, upstream) in served or upstream in config.models:
            continue
        try:
            check_model_name(upstream)
        except ConfigError:
            continue
        found_price = preset.price_of(upstream, item) if preset else None
        if found_price is None:
            config.models[upstream] = Model(upstream, provider, upstream, None, None)
            unpriced.append(upstream)
        else:
            config.models[upstream] = found_price.model(upstream, provider, upstream)
            priced[upstream] = found_price.origin
    save_config(ctx, config, sources=priced)
    if json:
        print_json({"provider": provider, "listed": len(found), "priced": priced, "unpriced": unpriced})
        return
    console.print(f"{provider} lists {len(found)} models; added {len(priced)} priced, {len(unpriced)} unpriced")
    for upstream, origin in priced.items():
        console.print(f"  {upstream}: priced from {origin}")
    if unpriced:
        console.print(f"  unpriced (refused until priced): {', '.join(unpriced)}")
        console.print(
            "price each before use: hubproxy models add ID --provider P --input-price X --output-price Y --replace"
        )


@app.command("list")
def list_(ctx: typer.Context, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List models and prices."""
    config = load_config(ctx)
    if json:
        print_json([model_json(m) for m in config.models.values()])
        return
    table = WholeTable(
        "model",
        "provider",
        "upstream model",
        "input $/1M",
        "output $/1M",
        "other $/1M",
        "over a prompt size / by hour",
        whole=("model", "provider", "upstream model"),
    )
    for m in config.models.values():
        table.add_row(
            m.name,
            m.provider,
            m.upstream_model,
            price_text(m.input_price) or "unpriced",
            price_text(m.output_price) or "unpriced",
            other_prices(m),
            "; ".join(filter(None, (tier_text(m), hours_text(m)))),
        )
    console.print(table, crop=False)


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Stop serving a model."""
    config = load_config(ctx)
    if config.models.pop(name, None) is None:
        raise CliError(f"no model {name!r}; see `hubproxy models list`")
    save_config(ctx, config)
    console.print(f"removed model {name}")
