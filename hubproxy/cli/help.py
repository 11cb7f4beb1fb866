"""How `--help` names values: `--user EMAIL`, `topup EMAIL AMOUNT`, and nothing after a flag.

Typer 0.2x writes a type after every option (`<str>`, `<bool>` even on `--help`) and braces around
required arguments (`{email}`). hubproxy's help uses the convention most CLIs follow instead: an
option that takes a value shows its metavar (given, or the option's name in capitals), a flag shows
none, and arguments appear in capitals. Installed once, when the CLI is built.
"""

from __future__ import annotations

from typer import core


def _metavar(param: core.TyperArgument | core.TyperOption) -> str:
    return param.metavar or (param.name or "value").upper()


def _option_type(self: core.TyperOption, ctx: object = None) -> str | None:
    if self.is_flag or self.count:
        return None
    described = getattr(self, "type_descriptor", None)
    if self.metavar is None and described is not None and described.is_choice:
        return "|".join(str(getattr(choice, "value", choice)) for choice in described.choices or ())
    return _metavar(self)


def _argument_type(self: core.TyperArgument, ctx: object = None) -> str | None:
    return None


def _argument_usage(self: core.TyperArgument) -> str:
    name = _metavar(self) if self.required else f"[{_metavar(self)}]"
    return name + ("..." if self.nargs != 1 else "")


def _argument_name(self: core.TyperArgument) -> str:
    return _metavar(self) + ("..." if self.nargs != 1 else "")


def use_plain_metavars() -> None:
    """Where this Typer has the methods that draw `<type>` and `{name}`, draw plain metavars instead."""
    patches = [
        (core.TyperOption, "display_type_rich", _option_type),
        (core.TyperOption, "display_type", _option_type),
        (core.TyperArgument, "display_type_rich", _argument_type),
        (core.TyperArgument, "_usage_display_name", _argument_usage),
        (core.TyperArgument, "_rich_display_name", _argument_name),
    ]
    for cls, name, replacement in patches:
        if hasattr(cls, name):
            setattr(cls, name, replacement)
