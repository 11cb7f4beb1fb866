"""Server-sent events framing: where events end in a buffer, and an event's `data` (as a JSON object)."""

from __future__ import annotations

import orjson


def last_event_end(buffer: bytes) -> int:
    """Index just past the last complete event in `buffer`, or 0 if there is none yet."""
    lf = buffer.rfind(b"\n\n")
    crlf = buffer.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def split_events(data: bytes) -> list[bytes]:
    """Complete events, each with its trailing blank line."""
    events, start = [], 0
    while start < len(data):
        lf = data.find(b"\n\n", start)
        crlf = data.find(b"\r\n\r\n", start)
        candidates = [i + 2 for i in (lf,) if i >= 0] + [i + 4 for i in (crlf,) if i >= 0]
        end = min(candidates) if candidates else len(data)
        events.append(data[start:end])
        start = end
    return events


def event_data(event: bytes) -> bytes | None:
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def event_object(payload: bytes | None) -> dict | None:
    """An event's data as a JSON object; None where it has none, is not JSON or is not an object
    (`[DONE]`, a keep-alive, an upstream's odd event: nothing a stream watch reads)."""
    if payload is None:
        return None
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return data if data.__class__ is dict else None
