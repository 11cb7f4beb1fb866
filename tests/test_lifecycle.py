"""Crash safety, graceful shutdown, client hang-ups and upstream timeouts, on a real server process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
import tomllib

import openai
import orjson
import pytest
import tomli_w

from tests.conftest import BACKENDS, HELLO, wait_for


def count(gateway, sql: str) -> int:
    with gateway.db() as db:
        return db.execute(sql).fetchone()[0]


@BACKENDS
def test_kill_9_during_load_then_restart_settles_leftover_reservations(gateway):
    gateway.upstream.stream_delay = 0.5

    def stream() -> None:
        with contextlib.suppress(openai.APIError):
            list(gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO, stream=True))

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: gateway.upstream.open_streams == 8)
    wait_for(lambda: count(gateway, "SELECT count(*) FROM reservations") == 8)
    gateway.stop(signal.SIGKILL)
    for t in threads:
        t.join(10)
    with gateway.db() as db:
        reserved_prompt_cost = db.execute("SELECT sum(prompt_cost) FROM reservations").fetchone()[0]
        balance_before = db.execute("SELECT balance FROM users").fetchone()[0]
    assert reserved_prompt_cost > 0

    gateway.start()
    assert count(gateway, "SELECT count(*) FROM reservations") == 0
    with gateway.db() as db:
        rows = db.execute("SELECT status, estimated, cost FROM usage").fetchall()
        balance, ledger = db.execute("SELECT balance, (SELECT sum(amount) FROM ledger) FROM users").fetchone()
    assert len(rows) == 8 and all(r[0] == "interrupted" and r[1] == 1 for r in rows)
    assert balance == ledger == balance_before - reserved_prompt_cost
    assert "settled 8 call(s)" in gateway.log()


@BACKENDS
def test_kill_9_moments_after_calls_went_upstream_loses_none_of_them(gateway):
    """Calls open for less than the reservation sweep's 100 ms are on no table yet: the journal
    line each wrote before going upstream is what bills them after the restart."""
    gateway.upstream.delay = 5.0
    threads = [threading.Thread(target=lambda: _call_quietly(gateway), daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: len(gateway.upstream.requests) == 6, interval=0.005)
    killed = gateway.proc.pid
    gateway.stop(signal.SIGKILL)
    reached = len(gateway.upstream.requests)
    assert count(gateway, "SELECT count(*) FROM reservations") < reached, "some were on no table at all"
    assert list((gateway.home / "journal").glob("*.jsonl"))
    gateway.upstream.delay = 0
    gateway.start()
    with gateway.db() as db:
        rows = db.execute("SELECT status, estimated, cost > 0 FROM usage").fetchall()
        balance, ledger = db.execute("SELECT balance, (SELECT sum(amount) FROM ledger) FROM users").fetchone()
    assert rows == [("interrupted", 1, 1)] * reached
    assert balance == ledger
    assert not list((gateway.home / "journal").glob(f"{killed}-*.jsonl")), "settled segments are deleted"
    gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
    gateway.stop()
    assert not list((gateway.home / "journal").glob("*.jsonl")), "a clean stop leaves no journal"
    assert count(gateway, "SELECT count(*) FROM usage") == reached + 1


def _call_quietly(gateway) -> None:
    with contextlib.suppress(openai.APIError):
        gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO)


def test_sigterm_lets_an_inflight_stream_finish_and_flushes_billing(gateway):
    gateway.upstream.stream_delay = 0.25
    received: list[str] = []
    stream = gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO, stream=True)
    iterator = iter(stream)
    received.append(next(iterator).choices[0].delta.content or "")
    gateway.proc.send_signal(signal.SIGTERM)
    received.extend(c.choices[0].delta.content or "" for c in iterator if c.choices)
    assert "".join(received) == "hello from the fake upstream model "
    assert gateway.proc.wait(30) == 0
    with gateway.db() as db:
        assert db.execute("SELECT status, estimated, completion_tokens FROM usage").fetchall() == [("ok", 0, 7)]
        assert db.execute("SELECT count(*) FROM reservations").fetchone()[0] == 0
    assert "all writes flushed" in gateway.log()


def test_new_connections_are_refused_after_sigterm(gateway):
    gateway.upstream.stream_delay = 0.3
    stream = gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO, stream=True)
    next(iter(stream))
    gateway.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: not listening(gateway.port))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", gateway.port), timeout=1) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        if not sock.recv(100):
            raise ConnectionResetError
    stream.close()


async def _read_one_chunk_then_hang_up(url: str, key: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(url.split(":")[2].split("/")[0]))
    body = orjson.dumps({"model": "deepseek-chat", "messages": HELLO, "stream": True})
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    first = await reader.readuntil(b"\n\n")
    writer.transport.abort()
    return first


def test_client_hang_up_cancels_upstream_and_bills_what_was_produced(gateway):
    gateway.upstream.stream_delay = 0.3
    first = asyncio.run(_read_one_chunk_then_hang_up(gateway.base_url, gateway.key))
    assert b"200 OK" in first
    wait_for(lambda: gateway.upstream.cancelled_streams == 1, timeout=5)
    wait_for(lambda: count(gateway, "SELECT count(*) FROM usage") == 1)
    with gateway.db() as db:
        status, estimated, cost, completion = db.execute(
            "SELECT status, estimated, cost, completion_tokens FROM usage"
        ).fetchone()
        balance, ledger = db.execute("SELECT balance, (SELECT sum(amount) FROM ledger) FROM users").fetchone()
    assert status == "client_closed" and estimated == 1 and cost > 0 and completion < 7
    assert balance == ledger == 5 * 10**12 - cost


def _set_timeouts(gateway, **values: float) -> None:
    path = gateway.home / "config.toml"
    data = tomllib.loads(path.read_text())
    data["timeouts"].update(values)
    path.write_text(tomli_w.dumps(data))


def test_first_byte_timeout_is_502_and_not_billed(gateway):
    gateway.stop()
    _set_timeouts(gateway, first_byte=0.5)
    gateway.start()
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        gateway.client().chat.completions.create(model="hang", messages=HELLO)
    assert time.monotonic() - started < 3
    assert err.value.status_code == 502 and err.value.code == "upstream_unavailable"
    assert "did not answer within 0.5s" in err.value.message
    with gateway.db() as db:
        assert db.execute("SELECT status, cost FROM usage").fetchall() == [("upstream_unreachable", 0)]


def test_idle_stream_timeout_ends_the_stream_with_an_error_event(gateway):
    gateway.stop()
    _set_timeouts(gateway, idle=0.4)
    gateway.start()
    gateway.upstream.stream_delay = 1.0
    with pytest.raises(openai.APIError) as err:
        list(gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO, stream=True))
    assert "sent nothing for 0.4s" in str(err.value)
    with gateway.db() as db:
        assert db.execute("SELECT status, estimated FROM usage").fetchall() == [("upstream_broken", 1)]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
