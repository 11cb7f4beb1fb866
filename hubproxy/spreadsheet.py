"""CSV cells a spreadsheet opens as data, never as formulas.

Emails, key names and model ids reach hubproxy's CSV exports from callers (a self-registered email
such as `=HYPERLINK(…)&"@x.io"` passes the email rule). A cell that starts with `=`, `+`, `-`, `@`, a
tab or a carriage return is run as a formula by Excel, LibreOffice and Google Sheets, so such text is
written behind a single quote, as OWASP's "CSV Injection" page advises
(https://owasp.org/www-community/attacks/CSV_Injection, read 2026-12-07). Numbers are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(values: Iterable[object]) -> list[object]:
    return [safe_cell(value) for value in values]
